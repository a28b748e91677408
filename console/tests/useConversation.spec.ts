import { flushPromises } from '@vue/test-utils'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { ref } from 'vue'
import { useConversation } from '../src/composables/useConversation'
import { BUS_KEY, createBus, type Bus } from '../src/lib/bus'
import { deferred, isoOffset, jsonResponse, loadsOf, mockFetch, mountComposable, useFakeClock } from './helpers'

beforeEach(() => useFakeClock())
afterEach(() => vi.useRealTimers())

const detail = (id: string, status = 'OPEN') => ({ id, status, created_at: '', updated_at: '', messages: [] })
const idle = (id: string) => ({ conversation_id: id, group: null, held: [] })

/** Fetch stub that holds every answer until the test releases it, keeping each request's signal. */
function heldFetch() {
  const calls: { url: string; signal: AbortSignal; release: (status: number, body: unknown) => void }[] = []
  const f = mockFetch({
    '/conversations/': (url, init) => {
      const d = deferred()
      calls.push({ url, signal: init!.signal!, release: (status, body) => d.resolve(jsonResponse(status, body)) })
      return d.promise
    },
  })
  const find = (url: string) => calls.filter((c) => c.url === url).at(-1)!
  /** Answers the latest request for a conversation (and its activity) with the given status. */
  const answer = (id: string, status = 'OPEN') => {
    find(`/conversations/${id}/`).release(200, detail(id, status))
    find(`/conversations/${id}/activity`).release(200, idle(id))
  }
  return { f, calls, answer }
}

function setup(id: string | (() => string), bus: Bus = createBus()) {
  return mountComposable(() => useConversation(id), { [BUS_KEY as symbol]: bus })
}

describe('useConversation', () => {
  it('loads the conversation, its activity and its groups waiting for the bot, passing an AbortSignal to every fetch', async () => {
    const f = mockFetch({
      'GET /conversations/c1/activity': () => jsonResponse(200, idle('c1')),
      'GET /conversations/c1/': () => jsonResponse(200, detail('c1', 'CLOSED')),
    })
    const { result } = setup('c1')
    expect(result.loading.value).toBe(true)
    await flushPromises()
    expect(f.mock.calls.map(([url]) => url)).toEqual([
      '/conversations/c1/',
      '/conversations/c1/activity',
      '/generations/?conversation_id=c1&status=pending&limit=20',
      '/generations/?conversation_id=c1&status=failed&limit=20',
    ])
    expect(f.mock.calls.every(([, init]) => init.signal instanceof AbortSignal)).toBe(true)
    expect(result.conversation.value?.status).toBe('CLOSED')
    expect(result.activity.value).toEqual(idle('c1'))
    expect(result.loading.value).toBe(false)
    expect(result.error.value).toBeNull()
  })

  it('aborts the fetches of the previous id when the id changes, and ignores their late answers', async () => {
    const { calls, answer } = heldFetch()
    const id = ref('a')
    const { result } = setup(() => id.value)
    expect(calls).toHaveLength(2)

    id.value = 'b'
    await flushPromises()
    expect(calls.map((c) => [c.url, c.signal.aborted])).toEqual([
      ['/conversations/a/', true],
      ['/conversations/a/activity', true],
      ['/conversations/b/', false],
      ['/conversations/b/activity', false],
    ])
    expect(result.loading.value).toBe(true)

    answer('b', 'CLOSED')
    await flushPromises()
    answer('a', 'OPEN') // too late: must not overwrite b
    await flushPromises()
    expect(result.conversation.value).toMatchObject({ id: 'b', status: 'CLOSED' })
    expect(result.activity.value?.conversation_id).toBe('b')
  })

  it('aborts the fetches in flight on unmount and leaves the state alone', async () => {
    const { calls, answer } = heldFetch()
    const { result, wrapper } = setup('c1')
    wrapper.unmount()
    expect(calls.map((c) => c.signal.aborted)).toEqual([true, true])
    answer('c1')
    await flushPromises()
    expect(result.conversation.value).toBeNull()
    expect(result.loading.value).toBe(true)
  })

  it('never lets an older answer overwrite a newer one', async () => {
    const { calls } = heldFetch()
    const { result } = setup('c1')
    void result.load() // e.g. Retry while the first load is still out
    expect(calls).toHaveLength(4)
    expect(calls.slice(0, 2).every((c) => c.signal.aborted)).toBe(true)

    calls[2].release(200, detail('c1', 'CLOSED'))
    calls[3].release(200, idle('c1'))
    await flushPromises()
    calls[0].release(200, detail('c1', 'OPEN'))
    calls[1].release(200, idle('c1'))
    await flushPromises()
    expect(result.conversation.value?.status).toBe('CLOSED')
  })

  it('does not report an aborted fetch as an outage', async () => {
    mockFetch({
      '/conversations/': (_url, init) =>
        new Promise((_resolve, reject) =>
          init!.signal!.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError'))),
        ),
    })
    const { result } = setup('c1')
    void result.load()
    await flushPromises()
    expect(result.error.value).toBeNull()
  })

  it('treats a 404 as "not created yet" and keeps the held messages', async () => {
    const held = [
      { id: 'h1', conversation_id: 'g', content: 'x', received_at: isoOffset(-1000), expires_at: isoOffset(5000), status: 'HELD' },
    ]
    mockFetch({
      'GET /conversations/g/activity': () => jsonResponse(200, { conversation_id: 'g', group: null, held }),
      'GET /conversations/g/': () => jsonResponse(404, { message: 'Conversation not found' }),
    })
    const { result } = setup('g')
    await flushPromises()
    expect(result.notFound.value).toBe(true)
    expect(result.error.value).toBeNull()
    expect(result.activity.value?.held).toHaveLength(1)
  })

  it('reloads (debounced) on live events about its conversation only, not after unmount', async () => {
    const f = mockFetch({
      'GET /conversations/c1/activity': () => jsonResponse(200, idle('c1')),
      'GET /conversations/c1/': () => jsonResponse(200, detail('c1')),
    })
    const bus = createBus()
    const { wrapper } = setup('c1', bus)
    await flushPromises()
    expect(loadsOf(f, 'c1')).toBe(1)

    bus.emit({ name: 'message.accepted', data: { conversation_id: 'other' } })
    bus.emit({ name: 'message.accepted', data: { conversation_id: 'c1' } })
    bus.emit({ name: 'reply.created', data: { conversation_id: 'c1' } })
    vi.advanceTimersByTime(149)
    expect(loadsOf(f, 'c1')).toBe(1)
    vi.advanceTimersByTime(1)
    await flushPromises()
    expect(loadsOf(f, 'c1')).toBe(2)

    bus.emit({ name: 'reply.created', data: { conversation_id: 'c1' } })
    wrapper.unmount()
    vi.advanceTimersByTime(1000)
    bus.emit({ name: 'reply.created', data: { conversation_id: 'c1' } })
    vi.advanceTimersByTime(1000)
    expect(loadsOf(f, 'c1')).toBe(2)
  })

  it('reloads by itself 1.5 s after the reply is due', async () => {
    const group = { message_ids: ['m1'], last_arrival_at: isoOffset(-1000), reply_due_at: isoOffset(4000) }
    const f = mockFetch({
      'GET /conversations/c1/activity': () => jsonResponse(200, { conversation_id: 'c1', group, held: [] }),
      'GET /conversations/c1/': () => jsonResponse(200, detail('c1')),
    })
    setup('c1')
    await flushPromises()
    vi.advanceTimersByTime(5499)
    expect(loadsOf(f, 'c1')).toBe(1)
    vi.advanceTimersByTime(1)
    await flushPromises()
    expect(loadsOf(f, 'c1')).toBe(2)
    // Same group again, now past due: nothing left to wait for.
    vi.advanceTimersByTime(60_000)
    await flushPromises()
    expect(loadsOf(f, 'c1')).toBe(2)
  })

  it("drops the previous conversation's follow-up when the id changes", async () => {
    const group = { message_ids: ['m1'], last_arrival_at: isoOffset(-1000), reply_due_at: isoOffset(4000) }
    const f = mockFetch({
      'GET /conversations/c1/activity': () => jsonResponse(200, { conversation_id: 'c1', group, held: [] }),
      'GET /conversations/c1/': () => jsonResponse(200, detail('c1')),
      'GET /conversations/c2/activity': () => jsonResponse(200, idle('c2')),
      'GET /conversations/c2/': () => jsonResponse(200, detail('c2')),
    })
    const id = ref('c1')
    setup(() => id.value)
    await flushPromises()
    id.value = 'c2'
    await flushPromises()
    vi.advanceTimersByTime(60_000)
    await flushPromises()
    expect(f.mock.calls.map(([url]) => url).filter((url) => url.startsWith('/conversations/'))).toEqual([
      '/conversations/c1/',
      '/conversations/c1/activity',
      '/conversations/c2/',
      '/conversations/c2/activity',
    ])
  })
})
