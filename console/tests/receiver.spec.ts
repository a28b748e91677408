import { flushPromises, mount } from '@vue/test-utils'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import ReceiverPanel from '../src/components/ReceiverPanel.vue'
import SimulatorPanel from '../src/components/SimulatorPanel.vue'
import { OPEN_KEY, URL_KEY, useReceiver } from '../src/composables/useReceiver'
import {
  changeReceiver,
  describeEvent,
  describeState,
  getReceiverEvents,
  mergeEvents,
  normalizeReceiverUrl,
  ReceiverError,
  type ReceiverEvent,
  type ReceiverState,
} from '../src/lib/receiver'
import { deferred, jsonResponse, mockFetch, mountComposable, useFakeClock, type Route } from './helpers'

const BASE = 'http://127.0.0.1:9001/'

beforeEach(() => {
  useFakeClock()
  localStorage.clear()
})
afterEach(() => vi.useRealTimers())

function state(overrides: Partial<ReceiverState> = {}): ReceiverState {
  return {
    url: 'http://127.0.0.1:9000/',
    down: false,
    back_at: null,
    fail_next: 0,
    fail_status: 503,
    fail_rate: 0,
    retry_after: null,
    slow: 0,
    counts: { received: 0, duplicate: 0, failed: 0, rejected: 0 },
    last: 0,
    ...overrides,
  }
}

function event(n: number, kind: string, extra: Partial<ReceiverEvent> = {}): ReceiverEvent {
  return { n, at: '2026-01-01T12:00:00Z', event: kind, ...extra }
}

function delivery(n: number, kind: string, extra: Partial<ReceiverEvent> = {}): ReceiverEvent {
  return event(n, kind, {
    webhook_id: 'r1000000-0000',
    reply_id: 'r1000000-0000',
    conversation_id: 'c1000000-0000',
    content: 'Olá!',
    status: kind === 'failed' ? 503 : 200,
    verified: true,
    duplicate: kind === 'duplicate',
    ...extra,
  })
}

/** A fake receiver behind the mocked fetch: its events, its state, and the PATCHes it got. */
function fakeReceiver(base = BASE) {
  const fake = {
    events: [] as ReceiverEvent[],
    state: state(),
    patches: [] as unknown[],
    reads: [] as string[],
    up: true,
  }
  const page: Route = (url) => {
    if (!fake.up) throw new TypeError('Failed to fetch')
    fake.reads.push(url)
    const after = Number(new URL(url).searchParams.get('after'))
    const last = fake.events.at(-1)?.n ?? 0
    return jsonResponse(200, {
      events: fake.events.filter((e) => e.n > after),
      last,
      state: { ...fake.state, last },
    })
  }
  const patch: Route = (_url, init) => {
    if (!fake.up) throw new TypeError('Failed to fetch')
    const settings = JSON.parse(String(init!.body))
    fake.patches.push(settings)
    if (settings.fail_status === 200) {
      return jsonResponse(400, { error: 'bad_request', message: 'fail_status must be an integer in 300..599' })
    }
    fake.state = { ...fake.state, ...settings }
    return jsonResponse(200, fake.state)
  }
  const f = mockFetch({ [`GET ${base}events`]: page, [`PATCH ${base}state`]: patch })
  return { fake, f }
}

describe('receiver lib', () => {
  it('normalizes the control URL the user typed', () => {
    expect(normalizeReceiverUrl(' http://127.0.0.1:9001 ')).toBe(BASE)
    expect(normalizeReceiverUrl('localhost:9001')).toBe('http://localhost:9001/')
    expect(normalizeReceiverUrl('https://box.example/receiver?x=1#y')).toBe('https://box.example/receiver/')
    expect(normalizeReceiverUrl('')).toBeNull()
    expect(normalizeReceiverUrl('ftp://box/')).toBeNull()
    expect(normalizeReceiverUrl('http://')).toBeNull()
  })

  it('reads events after a number and patches settings, without credentials', async () => {
    const { fake, f } = fakeReceiver()
    fake.events = [event(1, 'listening'), delivery(2, 'received')]
    const page = await getReceiverEvents(BASE, 1)
    expect(page.events.map((e) => e.n)).toEqual([2])
    expect(f.mock.calls[0][0]).toBe(`${BASE}events?after=1&limit=20`)
    expect(f.mock.calls[0][1]).toMatchObject({ credentials: 'omit' })

    const changed = await changeReceiver(BASE, { fail_next: 2 })
    expect(changed.fail_next).toBe(2)
    const [, init] = f.mock.calls[1]
    expect(init).toMatchObject({ method: 'PATCH', credentials: 'omit', headers: { 'Content-Type': 'application/json' } })
    // No API token goes to the receiver, whatever the console holds.
    expect(JSON.stringify(init.headers)).not.toContain('Authorization')
  })

  it('turns refusals and network failures into ReceiverErrors', async () => {
    const { fake } = fakeReceiver()
    await expect(changeReceiver(BASE, { fail_status: 200 })).rejects.toMatchObject({
      status: 400,
      message: 'fail_status must be an integer in 300..599',
    })
    fake.up = false
    const error = await getReceiverEvents(BASE, 0).catch((e) => e)
    expect(error).toBeInstanceOf(ReceiverError)
    expect(error.status).toBe(0)
  })

  it('merges events by number, newest first, keeping a few', () => {
    const merged = mergeEvents([event(2, 'received'), event(1, 'listening')], [event(2, 'received'), event(3, 'failed')])
    expect(merged.map((e) => e.n)).toEqual([3, 2, 1])
    const many = Array.from({ length: 30 }, (_, i) => event(i + 1, 'received'))
    expect(mergeEvents([], many, 20).map((e) => e.n)).toEqual(Array.from({ length: 20 }, (_, i) => 30 - i))
  })

  it('describes each kind of event in a line', () => {
    expect(describeEvent(delivery(1, 'received'))).toMatchObject({
      label: 'Received',
      cls: 'badge--delivered',
      text: 'reply r1000000 · verified',
      content: 'Olá!',
    })
    expect(describeEvent(delivery(2, 'duplicate', { times: 3 })).text).toBe(
      'reply r1000000 · received 3 times (same webhook-id)',
    )
    expect(describeEvent(delivery(3, 'failed', { retry_after: 10 }))).toMatchObject({
      label: 'Failed 503',
      text: 'reply r1000000 · on purpose · Retry-After 10 s',
    })
    expect(describeEvent(event(4, 'rejected', { status: 401, reason: 'No matching signature found' }))).toMatchObject({
      label: 'Rejected 401',
      text: 'No matching signature found',
    })
    expect(describeEvent(event(5, 'down', { seconds: null })).text).toBe('refusing connections')
    expect(describeEvent(event(6, 'down', { seconds: 60 })).text).toBe('refusing connections for 60 s')
    expect(describeEvent(event(7, 'listening')).label).toBe('Up')
    expect(describeEvent(event(8, 'control', { changes: { fail_next: 2, fail_status: 400, down: false } })).text).toBe(
      'fail the next 2, with HTTP 400, come back',
    )
  })

  it('says what the receiver does with the next delivery', () => {
    expect(describeState(state())).toBe('Up · accepting every delivery')
    expect(describeState(state({ fail_next: 2, slow: 8 }))).toBe(
      'Up · failing the next 2 with HTTP 503, answering after 8 s',
    )
    expect(describeState(state({ fail_rate: 0.3, fail_status: 429 }))).toBe('Up · failing 30 % with HTTP 429')
    expect(describeState(state({ down: true }))).toBe('Down · refusing connections')
    expect(describeState(state({ down: true, back_at: '2026-01-01T12:01:00Z' }))).toMatch(/^Down · back at \S+/)
  })
})

describe('useReceiver', () => {
  it('reads nothing while the panel is closed, then polls the new events once it is opened', async () => {
    const { fake, f } = fakeReceiver()
    fake.events = [event(1, 'listening')]
    const { result } = mountComposable(() => useReceiver({ intervalMs: 1000 }))
    await flushPromises()
    vi.advanceTimersByTime(5000)
    expect(f).not.toHaveBeenCalled()

    result.open.value = true
    await flushPromises()
    expect(fake.reads).toEqual([`${BASE}events?after=0&limit=20`])
    expect(result.state.value?.url).toBe('http://127.0.0.1:9000/')
    expect(result.events.value.map((e) => e.n)).toEqual([1])
    expect(localStorage.getItem(OPEN_KEY)).toBe('1')

    fake.events.push(delivery(2, 'received'))
    vi.advanceTimersByTime(1000)
    await flushPromises()
    expect(fake.reads.at(-1)).toBe(`${BASE}events?after=1&limit=20`)
    expect(result.events.value.map((e) => e.n)).toEqual([2, 1])

    result.open.value = false
    await flushPromises()
    vi.advanceTimersByTime(10_000)
    expect(fake.reads).toHaveLength(2)
    expect(vi.getTimerCount()).toBe(0)
  })

  it('says how to start it when unreachable, retries more slowly, and recovers', async () => {
    localStorage.setItem(OPEN_KEY, '1')
    const { fake } = fakeReceiver()
    fake.up = false
    const { result } = mountComposable(() => useReceiver({ intervalMs: 1000, failedIntervalMs: 3000 }))
    await flushPromises()
    expect(result.state.value).toBeNull()
    expect(result.error.value).toContain('Receiver unreachable at http://127.0.0.1:9001/')
    expect(result.error.value).toContain('DEMO_RECEIVER=1 make run')
    expect(result.error.value).toContain(`--allow-origin ${window.location.origin}`)

    fake.up = true
    vi.advanceTimersByTime(2999)
    await flushPromises()
    expect(fake.reads).toHaveLength(0)
    vi.advanceTimersByTime(1)
    await flushPromises()
    expect(result.error.value).toBeNull()
    expect(result.state.value).not.toBeNull()
  })

  it('starts over when the receiver was restarted (its numbers went back)', async () => {
    localStorage.setItem(OPEN_KEY, '1')
    const { fake } = fakeReceiver()
    fake.events = [event(1, 'listening'), delivery(2, 'received'), delivery(3, 'received')]
    const { result } = mountComposable(() => useReceiver())
    await flushPromises()
    expect(result.events.value.map((e) => e.n)).toEqual([3, 2, 1])

    fake.events = [event(1, 'listening', { at: '2026-01-01T12:05:00Z' })]
    vi.advanceTimersByTime(1000)
    await flushPromises()
    expect(fake.reads.slice(-2)).toEqual([`${BASE}events?after=3&limit=20`, `${BASE}events?after=0&limit=20`])
    expect(result.events.value.map((e) => [e.n, e.at])).toEqual([[1, '2026-01-01T12:05:00Z']])
  })

  it('changes settings one at a time, shows the new state and reads the events at once', async () => {
    localStorage.setItem(OPEN_KEY, '1')
    const { fake } = fakeReceiver()
    const { result } = mountComposable(() => useReceiver())
    await flushPromises()
    const reads = fake.reads.length

    const first = result.change({ fail_next: 2, fail_status: 503 })
    void result.change({ down: true }) // ignored: the first is still running
    expect(result.busy.value).toBe(true)
    await first
    await flushPromises()
    expect(fake.patches).toEqual([{ fail_next: 2, fail_status: 503 }])
    expect(result.state.value?.fail_next).toBe(2)
    expect(result.busy.value).toBe(false)
    expect(fake.reads.length).toBe(reads + 1)

    await result.change({ fail_status: 200 })
    expect(result.actionError.value).toBe('fail_status must be an integer in 300..599')
    await result.change({ down: true })
    expect(result.actionError.value).toBeNull()
    expect(result.state.value?.down).toBe(true)
  })

  it('keeps the URL, and a new one starts over', async () => {
    localStorage.setItem(OPEN_KEY, '1')
    const other = 'http://127.0.0.1:19401/'
    const { fake } = fakeReceiver()
    fake.events = [event(1, 'listening')]
    const { result } = mountComposable(() => useReceiver())
    await flushPromises()
    expect(result.events.value).toHaveLength(1)

    const { fake: second } = fakeReceiver(other)
    result.url.value = '127.0.0.1:19401'
    await flushPromises()
    expect(localStorage.getItem(URL_KEY)).toBe('127.0.0.1:19401')
    expect(second.reads).toEqual([`${other}events?after=0&limit=20`])
    expect(result.events.value).toEqual([])

    result.url.value = 'ftp://nope'
    await flushPromises()
    expect(result.error.value).toContain("Enter the URL of the receiver's control API")
  })

  it('aborts the read in flight on unmount and reads no more', async () => {
    localStorage.setItem(OPEN_KEY, '1')
    let signal: AbortSignal | undefined
    const answer = deferred()
    const f = mockFetch({
      [`GET ${BASE}events`]: (_url, init) => {
        signal = init?.signal ?? undefined
        return answer.promise
      },
    })
    const { result, wrapper } = mountComposable(() => useReceiver())
    wrapper.unmount()
    expect(signal?.aborted).toBe(true)
    answer.resolve(jsonResponse(200, { events: [event(1, 'listening')], last: 1, state: state() }))
    await flushPromises()
    expect(result.events.value).toEqual([])
    vi.advanceTimersByTime(10_000)
    await flushPromises()
    expect(f).toHaveBeenCalledTimes(1)
  })
})

describe('ReceiverPanel', () => {
  async function openPanel() {
    localStorage.setItem(OPEN_KEY, '1')
    const receiver = fakeReceiver()
    const w = mount(ReceiverPanel)
    await flushPromises()
    return { w, ...receiver }
  }

  it('shows the state, the counts and the latest events, newest first', async () => {
    localStorage.setItem(OPEN_KEY, '1')
    const { fake } = fakeReceiver()
    fake.events = [event(1, 'listening'), delivery(2, 'failed'), delivery(3, 'received')]
    fake.state = state({ counts: { received: 1, duplicate: 0, failed: 1, rejected: 0 } })
    const w = mount(ReceiverPanel)
    await flushPromises()

    expect(w.find('[data-testid="receiver"]').attributes('open')).toBeDefined()
    expect(w.find('[data-testid="receiver-status"]').attributes('data-state')).toBe('up')
    expect(w.find('[data-testid="receiver-summary"]').text()).toBe('Up · accepting every delivery')
    expect(w.find('[data-testid="receiver-counts"]').text()).toBe('1 received · 0 duplicate · 1 failed · 0 rejected')
    const rows = w.findAll('[data-testid="receiver-event"]')
    expect(rows.map((r) => r.attributes('data-event'))).toEqual(['received', 'failed', 'listening'])
    expect(rows[0].attributes('data-reply-id')).toBe('r1000000-0000')
    expect(rows[0].text()).toContain('Olá!')
  })

  it('drives the receiver: fail the next N, reject one, go down and back, slow, normal', async () => {
    const { w, fake } = await openPanel()

    await w.find('[data-testid="receiver-fail-count"]').setValue('3')
    await w.find('[data-testid="receiver-fail"]').trigger('click')
    await flushPromises()
    await w.find('[data-testid="receiver-reject"]').trigger('click')
    await flushPromises()
    const down = w.find('[data-testid="receiver-down"]')
    expect(down.text()).toBe('Go down')
    await down.trigger('click')
    await flushPromises()
    expect(w.find('[data-testid="receiver-status"]').attributes('data-state')).toBe('down')
    expect(w.find('[data-testid="receiver-down"]').text()).toBe('Come back')
    await w.find('[data-testid="receiver-down"]').trigger('click')
    await flushPromises()
    await w.find('[data-testid="receiver-slow"]').trigger('click')
    await flushPromises()
    expect(w.find('[data-testid="receiver-slow"]').text()).toBe('Answer at once')
    await w.find('[data-testid="receiver-normal"]').trigger('click')
    await flushPromises()

    expect(fake.patches).toEqual([
      { fail_next: 3, fail_status: 503 },
      { fail_next: 1, fail_status: 400 },
      { down: true },
      { down: false },
      { slow: 8 },
      { fail_next: 0, fail_rate: 0, slow: 0, retry_after: null, down: false },
    ])
  })

  it('shows why it cannot reach the receiver and disables the buttons', async () => {
    localStorage.setItem(OPEN_KEY, '1')
    const { fake } = fakeReceiver()
    fake.up = false
    const w = mount(ReceiverPanel)
    await flushPromises()
    expect(w.find('[data-testid="receiver-status"]').attributes('data-state')).toBe('unreachable')
    expect(w.find('[data-testid="receiver-error"]').text()).toContain('Receiver unreachable')
    expect(w.find('[data-testid="receiver-fail"]').attributes('disabled')).toBeDefined()
  })

  it('opens the conversation of an event', async () => {
    localStorage.setItem(OPEN_KEY, '1')
    const { fake } = fakeReceiver()
    fake.events = [delivery(1, 'received')]
    const w = mount(ReceiverPanel)
    await flushPromises()
    await w.find('[data-testid="receiver-event"] button').trigger('click')
    expect(w.emitted('select')).toEqual([['c1000000-0000']])
  })

  it('is part of the simulator, closed until asked for, and its events open conversations there', async () => {
    const { f } = fakeReceiver()
    const w = mount(SimulatorPanel)
    await flushPromises()
    const panel = w.find('[data-testid="receiver"]')
    expect(panel.exists()).toBe(true)
    expect(panel.attributes('open')).toBeUndefined()
    expect(f).not.toHaveBeenCalled()
    const details = panel.element as HTMLDetailsElement
    details.open = true
    await panel.trigger('toggle')
    await flushPromises()
    expect(f).toHaveBeenCalled()
  })
})
