import { flushPromises, mount } from '@vue/test-utils'
import { afterEach, describe, expect, it, vi } from 'vitest'
import ConversationList from '../src/components/ConversationList.vue'
import { BUS_KEY, createBus } from '../src/lib/bus'
import { jsonResponse, mockFetch, useFakeClock } from './helpers'

const item = (id: string, status = 'OPEN', count = 1) => ({
  id,
  status,
  created_at: '2026-01-01T10:00:00+00:00',
  updated_at: '2026-01-01T10:00:00+00:00',
  message_count: count,
  last_message_at: '2026-01-01T10:00:05+00:00',
})

afterEach(() => vi.useRealTimers())

describe('ConversationList', () => {
  it('renders items newest first as links, marking the selected one', async () => {
    mockFetch({
      'GET /conversations/': () => jsonResponse(200, { items: [item('c2', 'CLOSED', 3), item('c1')], next_cursor: null }),
    })
    const w = mount(ConversationList, { props: { selectedId: 'c1' } })
    await flushPromises()
    const rows = w.findAll('[data-testid="conversation-item"]')
    expect(rows.map((r) => r.attributes('data-conversation-id'))).toEqual(['c2', 'c1'])
    expect(rows[0].element.tagName).toBe('A')
    expect(rows[0].attributes('href')).toBe('#/conversations/c2')
    expect(rows[0].text()).toContain('Closed')
    expect(rows[0].text()).toContain('3 messages')
    expect(rows[1].attributes('aria-current')).toBe('page')
    expect(w.find('[data-testid="list-empty"]').exists()).toBe(false)
    expect(w.find('[data-testid="load-more"]').exists()).toBe(false)
  })

  it('shows the empty state', async () => {
    mockFetch({ 'GET /conversations/': () => jsonResponse(200, { items: [], next_cursor: null }) })
    const w = mount(ConversationList)
    await flushPromises()
    expect(w.find('[data-testid="list-empty"]').text()).toBe('No conversations yet')
    expect(w.find('[data-testid="conversation-list"]').exists()).toBe(true)
  })

  it('shows "Service unreachable" when the API is down', async () => {
    mockFetch({})
    const w = mount(ConversationList)
    await flushPromises()
    expect(w.find('[data-testid="list-error"]').text()).toContain('Service unreachable')
  })

  it('filters by status and debounced id search', async () => {
    useFakeClock()
    const f = mockFetch({ 'GET /conversations/': () => jsonResponse(200, { items: [], next_cursor: null }) })
    const w = mount(ConversationList)
    await flushPromises()
    await w.find('[data-testid="status-filter"]').setValue('OPEN')
    await flushPromises()
    expect(f.mock.calls.at(-1)![0]).toBe('/conversations/?status=OPEN&limit=20')
    await w.find('[data-testid="search-input"]').setValue('ab')
    expect(f).toHaveBeenCalledTimes(2)
    vi.advanceTimersByTime(300)
    await flushPromises()
    expect(f.mock.calls.at(-1)![0]).toBe('/conversations/?status=OPEN&q=ab&limit=20')
    expect(w.find('[data-testid="list-empty"]').text()).toBe('No conversations match these filters')
  })

  it('loads more pages with the cursor', async () => {
    const f = mockFetch({
      'GET /conversations/': (url) =>
        url.includes('cursor=')
          ? jsonResponse(200, { items: [item('c1')], next_cursor: null })
          : jsonResponse(200, { items: [item('c2')], next_cursor: 'CUR' }),
    })
    const w = mount(ConversationList)
    await flushPromises()
    await w.find('[data-testid="load-more"]').trigger('click')
    await flushPromises()
    expect(f.mock.calls.at(-1)![0]).toBe('/conversations/?limit=20&cursor=CUR')
    expect(w.findAll('[data-testid="conversation-item"]')).toHaveLength(2)
    expect(w.find('[data-testid="load-more"]').exists()).toBe(false)
  })

  it('refreshes (debounced) on live events', async () => {
    useFakeClock()
    let items = [item('c1')]
    const f = mockFetch({ 'GET /conversations/': () => jsonResponse(200, { items, next_cursor: null }) })
    const bus = createBus()
    const w = mount(ConversationList, { global: { provide: { [BUS_KEY as symbol]: bus } } })
    await flushPromises()
    items = [item('c2'), item('c1')]
    bus.emit({ name: 'conversation.created', data: { conversation_id: 'c2' } })
    bus.emit({ name: 'message.accepted', data: { conversation_id: 'c2' } })
    bus.emit({ name: 'message.held', data: { conversation_id: 'c9' } })
    expect(f).toHaveBeenCalledTimes(1)
    vi.advanceTimersByTime(400)
    await flushPromises()
    expect(f).toHaveBeenCalledTimes(2)
    expect(w.findAll('[data-testid="conversation-item"]')).toHaveLength(2)
  })
})
