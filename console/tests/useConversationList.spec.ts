import { flushPromises } from '@vue/test-utils'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { ref } from 'vue'
import { useConversationList, type ConversationFilters } from '../src/composables/useConversationList'
import { BUS_KEY, createBus, type Bus } from '../src/lib/bus'
import { deferred, jsonResponse, mockFetch, mountComposable, summary, useFakeClock } from './helpers'

beforeEach(() => useFakeClock())
afterEach(() => vi.useRealTimers())

const page = (items: ReturnType<typeof summary>[], next_cursor: string | null = null) => ({ items, next_cursor })

/** Fetch stub that holds every answer until the test releases it. */
function heldFetch() {
  const calls: { url: string; signal: AbortSignal; release: (body: unknown) => void }[] = []
  mockFetch({
    'GET /conversations/': (url, init) => {
      const d = deferred()
      calls.push({ url, signal: init!.signal!, release: (body) => d.resolve(jsonResponse(200, body)) })
      return d.promise
    },
  })
  return calls
}

function setup(filters = ref<ConversationFilters>({ status: '', q: '' }), bus: Bus = createBus()) {
  const { result, wrapper } = mountComposable(
    () => useConversationList({ filters: () => filters.value, pageSize: 2 }),
    { [BUS_KEY as symbol]: bus },
  )
  return { ...result, wrapper, filters, bus }
}

const ids = (items: { id: string }[]) => items.map((c) => c.id)

describe('useConversationList', () => {
  it('aborts the page of the old filter and ignores its late answer', async () => {
    const calls = heldFetch()
    const list = setup()
    list.filters.value = { status: 'OPEN', q: '' }
    await flushPromises()
    expect(calls.map((c) => [c.url, c.signal.aborted])).toEqual([
      ['/conversations/?limit=2', true],
      ['/conversations/?status=OPEN&limit=2', false],
    ])
    calls[1].release(page([summary('open', 2)]))
    await flushPromises()
    calls[0].release(page([summary('any', 1)], 'CUR'))
    await flushPromises()
    expect(ids(list.items.value)).toEqual(['open'])
    expect(list.nextCursor.value).toBeNull()
    expect(list.loading.value).toBe(false)
  })

  it('aborts a "load more" of the old filter', async () => {
    const calls = heldFetch()
    const list = setup()
    calls[0].release(page([summary('b', 2), summary('a', 1)], 'CUR'))
    await flushPromises()
    void list.loadMore()
    expect(list.loadingMore.value).toBe(true)
    list.filters.value = { status: '', q: 'x' }
    await flushPromises()
    expect(calls[1].url).toBe('/conversations/?limit=2&cursor=CUR')
    expect(calls[1].signal.aborted).toBe(true)
    expect(list.loadingMore.value).toBe(false)

    calls[2].release(page([summary('x1', 3)]))
    calls[1].release(page([summary('old', 0)]))
    await flushPromises()
    expect(ids(list.items.value)).toEqual(['x1'])
  })

  it('merges a live refresh of page one into the pages already loaded', async () => {
    const f = mockFetch({
      'GET /conversations/': (url) =>
        url.includes('cursor=')
          ? jsonResponse(200, page([summary('b', 2), summary('a', 1)]))
          : jsonResponse(200, page([summary('d', 4), summary('c', 3)], 'CUR')),
    })
    const list = setup()
    await flushPromises()
    await list.loadMore()
    expect(ids(list.items.value)).toEqual(['d', 'c', 'b', 'a'])

    f.mockImplementation(async () => jsonResponse(200, page([summary('e', 5), summary('d', 4)], 'CUR2')) as unknown as Response)
    list.bus.emit({ name: 'conversation.created', data: { conversation_id: 'e' } })
    vi.advanceTimersByTime(400)
    await flushPromises()
    expect(ids(list.items.value)).toEqual(['e', 'd', 'c', 'b', 'a'])
    // The cursor still points past the last page loaded, not past the fresh page one.
    expect(list.nextCursor.value).toBeNull()
  })

  it('starts over when a live refresh supersedes a filter reload', async () => {
    const calls = heldFetch()
    const list = setup()
    calls[0].release(page([summary('d', 4), summary('c', 3)], 'CUR'))
    await flushPromises()
    void list.loadMore()
    calls[1].release(page([summary('b', 2)]))
    await flushPromises()
    expect(ids(list.items.value)).toEqual(['d', 'c', 'b'])

    list.filters.value = { status: 'CLOSED', q: '' }
    await flushPromises()
    list.bus.emit({ name: 'reply.created', data: { conversation_id: 'z' } })
    vi.advanceTimersByTime(400)
    await flushPromises()
    expect(calls[2].signal.aborted).toBe(true)
    calls[3].release(page([summary('closed', 1)], 'NEXT'))
    await flushPromises()
    expect(ids(list.items.value)).toEqual(['closed'])
    expect(list.nextCursor.value).toBe('NEXT')
  })

  it('aborts on unmount and stops refreshing', async () => {
    const calls = heldFetch()
    const list = setup()
    list.bus.emit({ name: 'conversation.created', data: { conversation_id: 'e' } })
    list.wrapper.unmount()
    expect(calls[0].signal.aborted).toBe(true)
    vi.advanceTimersByTime(5000)
    list.bus.emit({ name: 'conversation.created', data: { conversation_id: 'e' } })
    vi.advanceTimersByTime(5000)
    expect(calls).toHaveLength(1)
  })

  it('shows an error for a failed page but not for an aborted one', async () => {
    const open = deferred()
    mockFetch({
      'GET /conversations/': (url, init) =>
        url.includes('status=')
          ? open.promise
          : new Promise((_resolve, reject) =>
              init!.signal!.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError'))),
            ),
    })
    const list = setup()
    list.filters.value = { status: 'OPEN', q: '' }
    await flushPromises()
    expect(list.error.value).toBeNull()
    expect(list.loading.value).toBe(true)
    open.resolve(jsonResponse(200, page([])))
    await flushPromises()
    expect(list.loading.value).toBe(false)

    mockFetch({})
    void list.reload()
    await flushPromises()
    expect(list.error.value).toBe('Service unreachable')
  })
})
