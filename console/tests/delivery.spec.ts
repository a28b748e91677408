import { flushPromises, mount } from '@vue/test-utils'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import ChatView from '../src/components/ChatView.vue'
import { tokens } from '../src/lib/auth'
import { BUS_KEY, createBus } from '../src/lib/bus'
import { deliveryBadge } from '../src/lib/delivery'
import { decideRefresh } from '../src/lib/events'
import type { DeliveryState } from '../src/lib/types'
import { deferred, isoOffset, jsonResponse, mockFetch, useFakeClock } from './helpers'

beforeEach(() => useFakeClock('2026-01-01T12:00:00.000Z'))
afterEach(() => {
  vi.useRealTimers()
  tokens.forget()
})

function state(overrides: Partial<DeliveryState> = {}): DeliveryState {
  return {
    status: 'pending',
    attempts: 0,
    next_attempt_at: null,
    last_attempt_at: null,
    last_status: null,
    last_error: null,
    delivered_at: null,
    ...overrides,
  }
}

describe('deliveryBadge', () => {
  it('shows nothing without a delivery (off, or a reply stored without one)', () => {
    expect(deliveryBadge(undefined)).toBeNull()
    expect(deliveryBadge(null)).toBeNull()
  })

  it('says sending, then retrying with the attempts, the last error and the next attempt', () => {
    expect(deliveryBadge(state({ next_attempt_at: isoOffset(0) }))).toMatchObject({
      key: 'pending',
      text: 'Sending…',
      detail: '',
      retryable: false,
    })
    const retrying = deliveryBadge(
      state({ attempts: 3, last_status: 503, last_error: 'HTTP 503', next_attempt_at: isoOffset(8000) }),
    )!
    expect(retrying.text).toBe('Retrying · 3 attempts')
    expect(retrying.detail).toMatch(/^HTTP 503 · next at \S+/)
    expect(retrying.retryable).toBe(false)
  })

  it('marks delivered ones, and dead ones with their error as retryable', () => {
    expect(deliveryBadge(state({ status: 'delivered', attempts: 1, delivered_at: isoOffset(0) }))).toMatchObject({
      key: 'delivered',
      text: 'Delivered',
      retryable: false,
    })
    expect(
      deliveryBadge(state({ status: 'dead', attempts: 1, last_status: 400, last_error: 'HTTP 400: not retried' })),
    ).toEqual({
      key: 'dead',
      text: 'Not delivered · 1 attempt',
      detail: 'HTTP 400: not retried',
      cls: 'badge--expired',
      retryable: true,
    })
  })
})

describe('delivery.updated', () => {
  it('reloads the open conversation it is about, and nothing else', () => {
    const ev = (id: string) => ({ name: 'delivery.updated', data: { conversation_id: id, reply_id: 'r1', status: 'dead' } })
    expect(decideRefresh(ev('c1'), 'c1')).toEqual({ list: false, conversation: true, activity: false, held: false })
    expect(decideRefresh(ev('c2'), 'c1')).toEqual({ list: false, conversation: false, activity: false, held: false })
  })
})

describe('the team\'s bot', () => {
  it('a group closed for the bot leaves the activity panel and touches the list', () => {
    const ev = { name: 'group.closed', data: { conversation_id: 'c1', message_id: 'r1' } }
    expect(decideRefresh(ev, 'c1')).toEqual({ list: true, conversation: true, activity: true, held: false })
    expect(decideRefresh(ev, 'c2')).toEqual({ list: true, conversation: false, activity: false, held: false })
  })

  it('a failed or retried generation reloads the open conversation only', () => {
    for (const name of ['generation.failed', 'generation.retried']) {
      const ev = { name, data: { conversation_id: 'c1', reply_id: 'r1' } }
      expect(decideRefresh(ev, 'c1')).toEqual({ list: false, conversation: true, activity: true, held: false })
      expect(decideRefresh(ev, 'c2')).toEqual({ list: false, conversation: false, activity: false, held: false })
    }
  })
})

const ACTIVITY = { conversation_id: 'c1', group: null, held: [] }

function conversation(delivery: Record<string, DeliveryState | null | undefined>) {
  const reply = (id: string) => {
    const message: Record<string, unknown> = { id, type: 'OUTBOUND', content: `reply ${id}`, timestamp: isoOffset(-1000) }
    if (delivery[id] !== undefined) message.delivery = delivery[id]
    return message
  }
  return {
    id: 'c1',
    status: 'OPEN',
    created_at: isoOffset(-60_000),
    updated_at: isoOffset(-1000),
    messages: [
      { id: 'm1', type: 'INBOUND', content: 'hi', timestamp: isoOffset(-5000) },
      reply('r1'),
      reply('r2'),
      reply('r3'),
    ],
  }
}

describe('ChatView delivery badges', () => {
  it('shows each reply delivery state and a Retry button on dead ones only', async () => {
    mockFetch({
      'GET /conversations/c1/activity': () => jsonResponse(200, ACTIVITY),
      'GET /conversations/c1/': () =>
        jsonResponse(
          200,
          conversation({
            r1: state({ status: 'delivered', attempts: 1, delivered_at: isoOffset(-500) }),
            r2: state({ status: 'dead', attempts: 4, last_status: 410, last_error: 'HTTP 410: not retried' }),
            r3: null,
          }),
        ),
    })
    const w = mount(ChatView, { props: { conversationId: 'c1' } })
    await flushPromises()

    const replies = w.findAll('[data-testid="message-outbound"]')
    expect(replies.map((r) => r.find('[data-testid="delivery"]').exists())).toEqual([true, true, false])
    expect(replies[0].find('[data-testid="delivery"]').attributes('data-status')).toBe('delivered')
    expect(replies[0].find('[data-testid="delivery-badge"]').text()).toBe('Delivered')
    expect(replies[0].find('[data-testid="delivery-retry"]').exists()).toBe(false)
    expect(replies[1].find('[data-testid="delivery"]').attributes('data-status')).toBe('dead')
    expect(replies[1].find('[data-testid="delivery-badge"]').text()).toBe('Not delivered · 4 attempts')
    expect(replies[1].find('[data-testid="delivery-detail"]').text()).toBe('HTTP 410: not retried')
    expect(replies[1].find('[data-testid="delivery-retry"]').exists()).toBe(true)
    expect(w.findAll('[data-testid="message-inbound"] [data-testid="delivery"]')).toHaveLength(0)
  })

  it('shows no badge while delivery was never configured', async () => {
    mockFetch({
      'GET /conversations/c1/activity': () => jsonResponse(200, ACTIVITY),
      'GET /conversations/c1/': () => jsonResponse(200, conversation({})),
    })
    const w = mount(ChatView, { props: { conversationId: 'c1' } })
    await flushPromises()
    expect(w.findAll('[data-testid="message-outbound"]')).toHaveLength(3)
    expect(w.find('[data-testid="delivery"]').exists()).toBe(false)
  })

  it('retries a dead reply with the token, then reloads to show it pending', async () => {
    tokens.provide('s3cret')
    let r2 = state({ status: 'dead', attempts: 4, last_error: 'gave up after 24 h' })
    const answer = deferred()
    const f = mockFetch({
      'GET /conversations/c1/activity': () => jsonResponse(200, ACTIVITY),
      'GET /conversations/c1/': () => jsonResponse(200, conversation({ r2 })),
      'POST /deliveries/r2/retry': () => answer.promise,
    })
    const w = mount(ChatView, { props: { conversationId: 'c1' } })
    await flushPromises()
    const reply = () => w.findAll('[data-testid="message-outbound"]')[1]

    await reply().find('[data-testid="delivery-retry"]').trigger('click')
    // One retry at a time per reply.
    expect(reply().find('[data-testid="delivery-retry"]').attributes('disabled')).toBeDefined()
    const posts = f.mock.calls.filter(([, init]) => init?.method === 'POST')
    expect(posts.map(([url]) => url)).toEqual(['/deliveries/r2/retry'])
    expect((posts[0][1] as RequestInit).headers).toMatchObject({ Authorization: 'Bearer s3cret' })

    r2 = state({ attempts: 4, last_error: 'gave up after 24 h', next_attempt_at: isoOffset(0) })
    answer.resolve(jsonResponse(200, { reply_id: 'r2', conversation_id: 'c1', created_at: isoOffset(-1000), ...r2 }))
    await flushPromises()

    expect(reply().find('[data-testid="delivery"]').attributes('data-status')).toBe('pending')
    expect(reply().find('[data-testid="delivery-retry"]').exists()).toBe(false)
    expect(w.find('[data-testid="delivery-retry-error"]').exists()).toBe(false)
  })

  it('says why a retry was refused and shows the state it is in now', async () => {
    let r2 = state({ status: 'dead', attempts: 1, last_error: 'HTTP 400: not retried' })
    mockFetch({
      'GET /conversations/c1/activity': () => jsonResponse(200, ACTIVITY),
      'GET /conversations/c1/': () => jsonResponse(200, conversation({ r2 })),
      'POST /deliveries/r2/retry': () => {
        // Another operator was first.
        r2 = state({ status: 'delivered', attempts: 2, delivered_at: isoOffset(0) })
        return jsonResponse(409, {
          code: 409,
          status: 'Conflict',
          error: 'not_dead',
          message: 'Only a dead delivery can be retried; this one is delivered.',
        })
      },
    })
    const w = mount(ChatView, { props: { conversationId: 'c1' } })
    await flushPromises()

    await w.find('[data-testid="delivery-retry"]').trigger('click')
    await flushPromises()

    expect(w.find('[data-testid="delivery"]').attributes('data-status')).toBe('delivered')
    // The refusal stays next to the reply until its next try.
    expect(w.find('[data-testid="delivery-retry-error"]').text()).toBe(
      'Only a dead delivery can be retried; this one is delivered.',
    )
  })

  it('reloads on delivery.updated for this conversation', async () => {
    let r1 = state({ attempts: 1, last_error: 'HTTP 503', next_attempt_at: isoOffset(2000) })
    const f = mockFetch({
      'GET /conversations/c1/activity': () => jsonResponse(200, ACTIVITY),
      'GET /conversations/c1/': () => jsonResponse(200, conversation({ r1 })),
    })
    const bus = createBus()
    const w = mount(ChatView, {
      props: { conversationId: 'c1' },
      global: { provide: { [BUS_KEY as symbol]: bus } },
    })
    await flushPromises()
    expect(w.find('[data-testid="delivery"]').attributes('data-status')).toBe('pending')
    const reads = () => f.mock.calls.filter(([url]) => url === '/conversations/c1/').length
    expect(reads()).toBe(1)

    bus.emit({ name: 'delivery.updated', data: { conversation_id: 'other', reply_id: 'x', status: 'delivered' } })
    vi.advanceTimersByTime(200)
    await flushPromises()
    expect(reads()).toBe(1)

    r1 = state({ status: 'delivered', attempts: 2, delivered_at: isoOffset(0) })
    bus.emit({ name: 'delivery.updated', data: { conversation_id: 'c1', reply_id: 'r1', status: 'delivered' } })
    vi.advanceTimersByTime(150)
    await flushPromises()
    expect(reads()).toBe(2)
    expect(w.find('[data-testid="delivery"]').attributes('data-status')).toBe('delivered')
  })
})
