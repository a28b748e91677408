import { flushPromises, mount } from '@vue/test-utils'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import App from '../src/App.vue'
import { STORAGE_KEY, tokens } from '../src/lib/auth'
import { jsonResponse, mockFetch, useFakeClock } from './helpers'

// The stream is read with the `eventsource` package (it can send the token); a fake stands in.
const FakeEventSource = vi.hoisted(
  () =>
    class FakeEventSource {
      static last: FakeEventSource | null = null
      static count = 0
      readyState = 0
      onopen: ((ev: Event) => void) | null = null
      onerror: ((ev: Event & { code?: number }) => void) | null = null
      listeners = new Map<string, ((ev: MessageEvent) => void)[]>()
      constructor(
        public url: string,
        public init?: { fetch?: (url: string, init: object) => Promise<unknown> },
      ) {
        FakeEventSource.last = this
        FakeEventSource.count += 1
      }
      addEventListener(type: string, l: (ev: MessageEvent) => void) {
        this.listeners.set(type, [...(this.listeners.get(type) ?? []), l])
      }
      close() {
        this.readyState = 2
      }
      emit(type: string, data: unknown) {
        for (const l of this.listeners.get(type) ?? []) l({ data: JSON.stringify(data) } as MessageEvent)
      }
    },
)
vi.mock('eventsource', () => ({ EventSource: FakeEventSource }))

beforeEach(() => {
  FakeEventSource.last = null
  FakeEventSource.count = 0
  window.location.hash = ''
})
afterEach(() => {
  vi.useRealTimers()
  window.location.hash = ''
  tokens.forget()
  sessionStorage.clear()
})

describe('App', () => {
  it('wires the live indicator to the event stream and follows deep links', async () => {
    mockFetch({
      'GET /conversations/c1/activity': () => jsonResponse(200, { conversation_id: 'c1', group: null, held: [] }),
      'GET /conversations/c1/': () =>
        jsonResponse(200, { id: 'c1', status: 'CLOSED', created_at: '', updated_at: '', messages: [] }),
      'GET /conversations/': () => jsonResponse(200, { items: [], next_cursor: null }),
      'GET /held/': () => jsonResponse(200, { items: [] }),
    })
    const w = mount(App, { attachTo: document.body })
    await flushPromises()
    const indicator = () => w.find('[data-testid="live-indicator"]')
    expect(FakeEventSource.last?.url).toBe('/events/stream')
    expect(indicator().attributes('data-status')).toBe('connecting')
    FakeEventSource.last!.onopen!(new Event('open'))
    await flushPromises()
    expect(indicator().attributes('data-status')).toBe('live')
    expect(indicator().text()).toBe('Live')
    FakeEventSource.last!.onerror!(new Event('error'))
    await flushPromises()
    expect(indicator().text()).toBe('Reconnecting…')

    expect(w.find('[data-testid="chat-placeholder"]').exists()).toBe(true)
    window.location.hash = '#/conversations/c1'
    window.dispatchEvent(new HashChangeEvent('hashchange'))
    await flushPromises()
    expect(w.find('[data-testid="chat"]').attributes('data-conversation-id')).toBe('c1')
    expect(w.find('[data-testid="status-badge"]').text()).toBe('Closed')
    expect((w.find('[data-testid="sim-conversation-id"]').element as HTMLInputElement).value).toBe('c1')
    w.unmount()
  })

  it('asks for the token on a 401, then shows the data with it and keeps it for the tab', async () => {
    useFakeClock()
    const f = guardedServer(['Bearer s3cret'])
    const w = mount(App, { attachTo: document.body })
    await flushPromises()
    expect(w.find('[data-testid="token-prompt"]').exists()).toBe(true)
    expect(w.find('[data-testid="token-refused"]').exists()).toBe(false)
    expect(w.find('[data-testid="list-error"]').text()).toContain('Access token required')
    const first = FakeEventSource.last!
    first.readyState = 2
    first.onerror!(Object.assign(new Event('error'), { code: 401 }))
    expect(FakeEventSource.count).toBe(1) // no retry loop while there is no token

    await w.find('[data-testid="token-input"]').setValue('  s3cret ')
    await w.find('[data-testid="token-prompt"]').trigger('submit')
    await settle()
    expect(w.find('[data-testid="token-prompt"]').exists()).toBe(false)
    expect(w.findAll('[data-testid="conversation-item"]').map((e) => e.attributes('data-conversation-id'))).toEqual([
      'c1',
    ])
    expect(w.find('[data-testid="held-overview"]').text()).not.toContain('Access token required')
    expect(sessionStorage.getItem(STORAGE_KEY)).toBe('s3cret')
    // The stream reopens at once with the token.
    expect(FakeEventSource.count).toBe(2)
    await FakeEventSource.last!.init!.fetch!('/events/stream', { headers: { Accept: 'text/event-stream' } })
    expect(f.mock.calls.at(-1)![1].headers).toEqual({ Accept: 'text/event-stream', Authorization: 'Bearer s3cret' })
    w.unmount()

    // A reload of the tab: the token is still there, sent from the first call on.
    f.mockClear()
    const again = mount(App, { attachTo: document.body })
    await flushPromises()
    expect(again.find('[data-testid="token-prompt"]').exists()).toBe(false)
    expect(again.findAll('[data-testid="conversation-item"]')).toHaveLength(1)
    expect(f.mock.calls.length).toBeGreaterThan(0)
    for (const [, init] of f.mock.calls) expect(init.headers.Authorization).toBe('Bearer s3cret')
    again.unmount()
  })

  it('asks again when the token in use is rotated out', async () => {
    useFakeClock()
    sessionStorage.setItem(STORAGE_KEY, 'old')
    const accepted = ['Bearer old']
    guardedServer(accepted)
    const w = mount(App, { attachTo: document.body })
    await flushPromises()
    expect(w.find('[data-testid="token-prompt"]').exists()).toBe(false)
    expect(w.findAll('[data-testid="conversation-item"]')).toHaveLength(1)

    accepted.splice(0, 1, 'Bearer new')
    window.location.hash = '#/conversations/c1'
    window.dispatchEvent(new HashChangeEvent('hashchange'))
    await flushPromises()
    expect(w.find('[data-testid="token-refused"]').exists()).toBe(true)
    expect(sessionStorage.getItem(STORAGE_KEY)).toBeNull()

    await w.find('[data-testid="token-input"]').setValue('new')
    await w.find('[data-testid="token-prompt"]').trigger('submit')
    await settle()
    expect(w.find('[data-testid="token-prompt"]').exists()).toBe(false)
    expect(w.find('[data-testid="status-badge"]').text()).toBe('Open')
    expect(sessionStorage.getItem(STORAGE_KEY)).toBe('new')
    w.unmount()
  })
})

/** Lets the debounced reloads (at most 400 ms) run and answer. */
async function settle() {
  await flushPromises()
  vi.advanceTimersByTime(1000)
  await flushPromises()
}

/** A service whose reads need one of `accepted` as Authorization (the array may change). */
function guardedServer(accepted: string[]) {
  const guard =
    (answer: () => ReturnType<typeof jsonResponse>) => (_url: string, init?: RequestInit) => {
      const given = (init?.headers as Record<string, string> | undefined)?.Authorization ?? ''
      return accepted.includes(given)
        ? answer()
        : jsonResponse(401, { code: 401, status: 'Unauthorized', error: 'unauthorized', message: 'Missing or wrong bearer token.' })
    }
  const now = '2026-01-01T00:00:00Z'
  return mockFetch({
    'GET /conversations/c1/activity': guard(() => jsonResponse(200, { conversation_id: 'c1', group: null, held: [] })),
    'GET /conversations/c1/': guard(() =>
      jsonResponse(200, { id: 'c1', status: 'OPEN', created_at: now, updated_at: now, messages: [] }),
    ),
    'GET /conversations/': guard(() =>
      jsonResponse(200, {
        items: [{ id: 'c1', status: 'OPEN', created_at: now, updated_at: now, message_count: 0, last_message_at: null }],
        next_cursor: null,
      }),
    ),
    'GET /held/': guard(() => jsonResponse(200, { items: [] })),
    'GET /events/stream': guard(() => jsonResponse(200, undefined)),
  })
}

