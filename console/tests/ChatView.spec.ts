import { flushPromises, mount } from '@vue/test-utils'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import ChatView from '../src/components/ChatView.vue'
import { BUS_KEY, createBus } from '../src/lib/bus'
import { isoOffset, jsonResponse, loadsOf, mockFetch, useFakeClock } from './helpers'

beforeEach(() => useFakeClock('2026-01-01T12:00:00.000Z'))
afterEach(() => vi.useRealTimers())

function conversationWithGroup() {
  const conversation = {
    id: 'c1',
    status: 'OPEN',
    created_at: isoOffset(-60_000),
    updated_at: isoOffset(-1000),
    messages: [
      // In the order the service recorded them. The sender's clock runs ahead: m1's timestamp
      // is later than that of r1 (server clock), the reply that answers it.
      { id: 'm1', type: 'INBOUND', content: 'first', timestamp: isoOffset(-20_000) },
      { id: 'r1', type: 'OUTBOUND', content: 'Mensagens recebidas:\nm1\n', timestamp: isoOffset(-25_000) },
      { id: 'm2', type: 'INBOUND', content: 'second', timestamp: isoOffset(-2000) },
      { id: 'm3', type: 'INBOUND', content: 'third', timestamp: isoOffset(-1000) },
    ],
  }
  const activity = {
    conversation_id: 'c1',
    group: { message_ids: ['m2', 'm3'], last_arrival_at: isoOffset(-1000), reply_due_at: isoOffset(4000) },
    held: [],
  }
  return { conversation, activity }
}

describe('ChatView', () => {
  it('renders inbound left / outbound right in order and marks pending messages', async () => {
    const { conversation, activity } = conversationWithGroup()
    mockFetch({
      'GET /conversations/c1/activity': () => jsonResponse(200, activity),
      'GET /conversations/c1/': () => jsonResponse(200, conversation),
    })
    const w = mount(ChatView, { props: { conversationId: 'c1' } })
    await flushPromises()

    const all = w.findAll('[data-testid^="message-"]')
    expect(all.map((m) => m.attributes('data-message-id'))).toEqual(['m1', 'r1', 'm2', 'm3'])
    expect(w.findAll('[data-testid="message-inbound"]')).toHaveLength(3)
    const out = w.find('[data-testid="message-outbound"]')
    expect(out.classes()).toContain('msg--out')
    expect(out.text()).toContain('Mensagens recebidas:')
    expect(all.map((m) => m.attributes('data-pending'))).toEqual(['false', 'false', 'true', 'true'])
    expect(w.findAll('[data-testid="pending-tag"]')).toHaveLength(2)
    expect(w.find('[data-testid="status-badge"]').text()).toBe('Open')
    expect(w.find('[data-testid="messages"]').attributes('aria-live')).toBe('polite')
  })

  it('counts down to reply_due_at and shows "Reply due" at zero', async () => {
    const { conversation, activity } = conversationWithGroup()
    mockFetch({
      'GET /conversations/c1/activity': () => jsonResponse(200, activity),
      'GET /conversations/c1/': () => jsonResponse(200, conversation),
    })
    const w = mount(ChatView, { props: { conversationId: 'c1' } })
    await flushPromises()
    const countdown = () => w.find('[data-testid="pending-countdown"]')
    expect(countdown().text()).toContain('Reply in 4.0 s')
    expect(countdown().text()).toContain('2 messages awaiting reply')
    vi.advanceTimersByTime(1600)
    await flushPromises()
    expect(countdown().text()).toContain('Reply in 2.4 s')
    vi.advanceTimersByTime(2400)
    await flushPromises()
    expect(countdown().text()).toContain('Reply due')
    expect(countdown().attributes('data-remaining-ms')).toBe('0')
  })

  it('reloads on its own live events and clears the group after the reply', async () => {
    const { conversation, activity } = conversationWithGroup()
    let act: typeof activity | { conversation_id: string; group: null; held: [] } = activity
    const f = mockFetch({
      'GET /conversations/c1/activity': () => jsonResponse(200, act),
      'GET /conversations/c1/': () => jsonResponse(200, conversation),
    })
    const bus = createBus()
    const w = mount(ChatView, {
      props: { conversationId: 'c1' },
      global: { provide: { [BUS_KEY as symbol]: bus } },
    })
    await flushPromises()
    expect(loadsOf(f, 'c1')).toBe(1)

    bus.emit({ name: 'reply.created', data: { conversation_id: 'other' } })
    vi.advanceTimersByTime(200)
    await flushPromises()
    expect(loadsOf(f, 'c1')).toBe(1)

    act = { conversation_id: 'c1', group: null, held: [] }
    bus.emit({ name: 'reply.created', data: { conversation_id: 'c1', message_ids: ['m2', 'm3'] } })
    vi.advanceTimersByTime(150)
    await flushPromises()
    expect(loadsOf(f, 'c1')).toBe(2)
    expect(w.find('[data-testid="pending-countdown"]').exists()).toBe(false)
    expect(w.find('.countdown--idle').text()).toBe('No reply pending')
    expect(w.findAll('[data-pending="true"]')).toHaveLength(0)
  })

  it('shows "not created yet" and the held messages for an unknown id', async () => {
    mockFetch({
      'GET /conversations/ghost/activity': () =>
        jsonResponse(200, {
          conversation_id: 'ghost',
          group: null,
          held: [
            {
              id: 'h1',
              conversation_id: 'ghost',
              content: 'early bird',
              received_at: isoOffset(-1000),
              expires_at: isoOffset(5000),
              status: 'HELD',
            },
            {
              id: 'h0',
              conversation_id: 'ghost',
              content: 'too early',
              received_at: isoOffset(-20_000),
              expires_at: isoOffset(-14_000),
              status: 'EXPIRED',
            },
          ],
        }),
      'GET /conversations/ghost/': () =>
        jsonResponse(404, { code: 404, status: 'Not Found', message: 'Conversation not found', error: 'not_found' }),
    })
    const w = mount(ChatView, { props: { conversationId: 'ghost' } })
    await flushPromises()
    expect(w.find('[data-testid="chat-not-found"]').text()).toContain('not created yet')
    expect(w.find('[data-testid="status-badge"]').attributes('data-status')).toBe('MISSING')
    expect(w.find('[data-testid="chat-error"]').exists()).toBe(false)
    const held = w.findAll('[data-testid="held-item"]')
    expect(held.map((h) => h.attributes('data-status'))).toEqual(['HELD', 'EXPIRED'])
    expect(held[0].text()).toContain('expires in 5.0 s')
    vi.advanceTimersByTime(2000)
    await flushPromises()
    expect(held[0].text()).toContain('expires in 3.0 s')
  })

  it('shares one clock between open chats and leaves no timer behind', async () => {
    const { conversation, activity } = conversationWithGroup()
    mockFetch({
      'GET /conversations/c1/activity': () => jsonResponse(200, activity),
      'GET /conversations/c1/': () => jsonResponse(200, conversation),
    })
    const a = mount(ChatView, { props: { conversationId: 'c1' } })
    const b = mount(ChatView, { props: { conversationId: 'c1' } })
    await flushPromises()
    expect(vi.getTimerCount()).toBe(3) // one shared interval + each chat's follow-up reload
    a.unmount()
    expect(vi.getTimerCount()).toBe(2)
    vi.advanceTimersByTime(1000)
    await flushPromises()
    expect(b.find('[data-testid="pending-countdown"]').text()).toContain('Reply in 3.0 s')
    b.unmount()
    expect(vi.getTimerCount()).toBe(0)
  })

  it('shows "Service unreachable" when the API is down', async () => {
    mockFetch({})
    const w = mount(ChatView, { props: { conversationId: 'c1' } })
    await flushPromises()
    expect(w.find('[data-testid="chat-error"]').text()).toContain('Service unreachable')
  })
})
