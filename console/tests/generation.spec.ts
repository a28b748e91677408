import { flushPromises, mount } from '@vue/test-utils'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import ChatView from '../src/components/ChatView.vue'
import { useConversation } from '../src/composables/useConversation'
import { tokens } from '../src/lib/auth'
import { BUS_KEY, createBus } from '../src/lib/bus'
import { followUpDelayMs } from '../src/lib/countdown'
import { botBadge, botStatusByMessage, waitingGroups } from '../src/lib/generation'
import { toChatItems } from '../src/lib/messages'
import type { Generation, Message } from '../src/lib/types'
import { deferred, isoOffset, jsonResponse, loadsOf, mockFetch, mountComposable, useFakeClock } from './helpers'

beforeEach(() => useFakeClock('2026-01-01T12:00:00.000Z'))
afterEach(() => {
  vi.useRealTimers()
  tokens.forget()
})

function generation(replyId: string, overrides: Partial<Generation> = {}): Generation {
  return {
    reply_id: replyId,
    conversation_id: 'c1',
    status: 'pending',
    source: null,
    message_ids: ['m1'],
    created_at: isoOffset(-3000),
    stored_at: null,
    attempts: 0,
    next_attempt_at: isoOffset(-3000),
    last_attempt_at: null,
    last_status: null,
    last_error: null,
    ...overrides,
  }
}

const inbound = (id: string): Message => ({ id, type: 'INBOUND', content: id, timestamp: isoOffset(-5000) })
const reply = (id: string): Message => ({ id, type: 'OUTBOUND', content: `reply ${id}`, timestamp: isoOffset(-4000) })

describe('groups waiting for the bot', () => {
  it('keeps pending and failed groups once each, oldest closure first', () => {
    const older = generation('g1', { status: 'failed', created_at: isoOffset(-60_000) })
    const newer = generation('g2', { created_at: isoOffset(-1000) })
    const stored = generation('g3', { status: 'stored', source: 'generator' })
    expect(waitingGroups([newer, stored, older, newer]).map((g) => g.reply_id)).toEqual(['g1', 'g2'])
  })

  it('says waiting, with the calls, the last error and the next call while retrying', () => {
    expect(botBadge(generation('g1'))).toEqual({
      key: 'pending',
      text: 'Waiting for your bot',
      detail: '',
      cls: 'badge--held',
      retryable: false,
    })
    // Claimed: the first call is on its way.
    expect(botBadge(generation('g1', { attempts: 1 })).detail).toBe('1 call')
    const retrying = botBadge(
      generation('g1', { attempts: 2, last_status: 503, last_error: 'HTTP 503', next_attempt_at: isoOffset(3000) }),
    )
    expect(retrying.detail).toMatch(/^2 calls · HTTP 503 · next at \d/)
    // Due again: no "next at" in the past.
    const due = botBadge(generation('g1', { attempts: 2, last_error: 'timeout after 10 s', next_attempt_at: isoOffset(-1) }))
    expect(due.detail).toBe('2 calls · timeout after 10 s')
  })

  it('marks failed groups as retryable, with why', () => {
    expect(botBadge(generation('g1', { status: 'failed', attempts: 3, last_error: 'HTTP 503', next_attempt_at: null }))).toEqual({
      key: 'failed',
      text: 'Your bot failed',
      detail: '3 calls · HTTP 503',
      cls: 'badge--expired',
      retryable: true,
    })
  })

  it('tags the inbound messages of those groups in the chat', () => {
    const groups = [generation('g1', { message_ids: ['m1', 'm2'] }), generation('g2', { status: 'failed', message_ids: ['m3'] })]
    const items = toChatItems([inbound('m1'), inbound('m2'), reply('r0'), inbound('m3'), inbound('m4')], null, botStatusByMessage(groups))
    expect(items.map((i) => [i.message.id, i.bot])).toEqual([
      ['m1', 'pending'],
      ['m2', 'pending'],
      ['r0', null],
      ['m3', 'failed'],
      ['m4', null],
    ])
    expect(toChatItems([inbound('m1')], null).map((i) => i.bot)).toEqual([null])
  })

  it('reloads by itself after the next call to the bot is due', () => {
    const activity = { conversation_id: 'c1', group: null, held: [] }
    const T0 = Date.now()
    expect(followUpDelayMs(activity, T0)).toBeNull()
    const retrying = generation('g1', { attempts: 1, last_error: 'HTTP 503', next_attempt_at: isoOffset(2000) })
    expect(followUpDelayMs(activity, T0, undefined, [retrying])).toBe(3500)
    expect(followUpDelayMs(null, T0, undefined, [retrying])).toBe(3500)
    const failed = generation('g2', { status: 'failed', next_attempt_at: isoOffset(2000) })
    expect(followUpDelayMs(activity, T0, undefined, [failed])).toBeNull()
  })
})

const CONVERSATION = {
  id: 'c1',
  status: 'OPEN',
  created_at: isoOffset(-60_000),
  updated_at: isoOffset(-1000),
  messages: [inbound('m1'), reply('r0'), inbound('m2'), inbound('m3')],
}
const IDLE = { conversation_id: 'c1', group: null, held: [] }

/** The service of a conversation whose groups wait for the bot: GET /generations/ by status. */
function service(groups: () => Generation[], extra = {}) {
  const page = (status: string) => () =>
    jsonResponse(200, { items: groups().filter((g) => g.status === status).reverse(), next_cursor: null })
  return mockFetch({
    'GET /conversations/c1/activity': () => jsonResponse(200, IDLE),
    'GET /conversations/c1/': () => jsonResponse(200, CONVERSATION),
    'GET /generations/': (url) => page(new URL(url, 'http://x').searchParams.get('status')!)(),
    ...extra,
  })
}

describe('useConversation and the bot', () => {
  it('reads the pending and failed groups of its conversation with every load', async () => {
    const f = service(() => [generation('g1', { message_ids: ['m2'] }), generation('g0', { status: 'failed', created_at: isoOffset(-50_000) })])
    const { result } = mountComposable(() => useConversation('c1'))
    await flushPromises()
    const urls = f.mock.calls.map(([url]) => String(url)).filter((url) => url.startsWith('/generations/'))
    expect(urls).toEqual([
      '/generations/?conversation_id=c1&status=pending&limit=20',
      '/generations/?conversation_id=c1&status=failed&limit=20',
    ])
    expect(result.generations.value.map((g) => g.reply_id)).toEqual(['g0', 'g1'])
    expect(result.error.value).toBeNull()
  })

  it('keeps the last groups when their read fails, without calling the service unreachable', async () => {
    let fail = false
    const groups = [generation('g1')]
    const f = service(() => groups, {
      'GET /generations/': (url: string) => {
        if (fail) return jsonResponse(500, { message: 'boom' })
        const status = new URL(url, 'http://x').searchParams.get('status')
        return jsonResponse(200, { items: groups.filter((g) => g.status === status), next_cursor: null })
      },
    })
    const bus = createBus()
    const { result } = mountComposable(() => useConversation('c1'), { [BUS_KEY as symbol]: bus })
    await flushPromises()
    expect(result.generations.value).toHaveLength(1)

    fail = true
    bus.emit({ name: 'generation.failed', data: { conversation_id: 'c1', reply_id: 'g1' } })
    vi.advanceTimersByTime(150)
    await flushPromises()
    expect(loadsOf(f, 'c1')).toBe(2)
    expect(result.generations.value).toHaveLength(1)
    expect(result.error.value).toBeNull()
  })

  it('has none for a conversation not created yet', async () => {
    mockFetch({
      'GET /conversations/c9/': () => jsonResponse(404, { message: 'not found' }),
      'GET /conversations/c9/activity': () => jsonResponse(200, { conversation_id: 'c9', group: null, held: [] }),
      'GET /generations/': () => jsonResponse(200, { items: [], next_cursor: null }),
    })
    const { result } = mountComposable(() => useConversation('c9'))
    await flushPromises()
    expect(result.notFound.value).toBe(true)
    expect(result.generations.value).toEqual([])
  })
})

describe('ChatView and the bot', () => {
  it('shows the groups waiting for the bot, and tags their messages', async () => {
    service(() => [
      generation('g0', { status: 'failed', message_ids: ['m1'], attempts: 3, last_error: 'HTTP 503', created_at: isoOffset(-50_000) }),
      generation('g1', { message_ids: ['m2', 'm3'] }),
    ])
    const w = mount(ChatView, { props: { conversationId: 'c1' } })
    await flushPromises()

    const groups = w.findAll('[data-testid="bot-group"]')
    expect(groups.map((g) => [g.attributes('data-reply-id'), g.attributes('data-status')])).toEqual([
      ['g0', 'failed'],
      ['g1', 'pending'],
    ])
    expect(groups[0].find('[data-testid="bot-badge"]').text()).toBe('Your bot failed')
    expect(groups[0].find('[data-testid="bot-detail"]').text()).toBe('3 calls · HTTP 503')
    expect(groups[0].find('[data-testid="bot-retry"]').exists()).toBe(true)
    expect(groups[1].find('[data-testid="bot-badge"]').text()).toBe('Waiting for your bot')
    expect(groups[1].text()).toContain('2 messages')
    expect(groups[1].find('[data-testid="bot-retry"]').exists()).toBe(false)
    const tags = w.findAll('[data-testid="message-inbound"]').map((m) => m.find('[data-testid="bot-tag"]'))
    expect(tags.map((t) => (t.exists() ? t.attributes('data-status') : null))).toEqual(['failed', 'pending', 'pending'])
    expect(tags[1].text()).toBe('waiting for your bot')
    expect(w.find('[data-testid="countdown-idle"]').text()).toBe('Reply being written by your bot')
  })

  it('shows nothing of the kind while no group waits for the bot', async () => {
    service(() => [])
    const w = mount(ChatView, { props: { conversationId: 'c1' } })
    await flushPromises()
    expect(w.find('[data-testid="bot-groups"]').exists()).toBe(false)
    expect(w.find('[data-testid="bot-tag"]').exists()).toBe(false)
    expect(w.find('[data-testid="countdown-idle"]').text()).toBe('No reply pending')
  })

  it('retries a failed group with the token, then reloads to show it waiting again', async () => {
    tokens.provide('s3cret')
    let groups = [generation('g0', { status: 'failed', attempts: 3, last_error: 'HTTP 503', next_attempt_at: null })]
    const answer = deferred()
    const f = service(() => groups, { 'POST /generations/g0/retry': () => answer.promise })
    const w = mount(ChatView, { props: { conversationId: 'c1' } })
    await flushPromises()

    await w.find('[data-testid="bot-retry"]').trigger('click')
    expect(w.find('[data-testid="bot-retry"]').attributes('disabled')).toBeDefined()
    const posts = f.mock.calls.filter(([, init]) => init?.method === 'POST')
    expect(posts.map(([url]) => url)).toEqual(['/generations/g0/retry'])
    expect((posts[0][1] as RequestInit).headers).toMatchObject({ Authorization: 'Bearer s3cret' })

    groups = [generation('g0', { next_attempt_at: isoOffset(0) })]
    answer.resolve(jsonResponse(200, groups[0]))
    await flushPromises()
    expect(w.find('[data-testid="bot-group"]').attributes('data-status')).toBe('pending')
    expect(w.find('[data-testid="bot-retry"]').exists()).toBe(false)
  })

  it('says why a retry was refused and shows the state the group is in now', async () => {
    let groups = [generation('g0', { status: 'failed', attempts: 3, last_error: 'HTTP 503' })]
    service(() => groups, {
      'POST /generations/g0/retry': () => {
        groups = [generation('g0', { attempts: 0 })] // another operator was first
        return jsonResponse(409, {
          error: 'not_failed',
          message: 'Only a failed group can be retried; this one is pending.',
        })
      },
    })
    const w = mount(ChatView, { props: { conversationId: 'c1' } })
    await flushPromises()
    await w.find('[data-testid="bot-retry"]').trigger('click')
    await flushPromises()
    expect(w.find('[data-testid="bot-group"]').attributes('data-status')).toBe('pending')
    expect(w.find('[data-testid="bot-retry-error"]').text()).toBe(
      'Only a failed group can be retried; this one is pending.',
    )
  })

  it('reloads on group.closed, generation.failed and generation.retried for its conversation', async () => {
    let groups: Generation[] = []
    const f = service(() => groups)
    const bus = createBus()
    const w = mount(ChatView, { props: { conversationId: 'c1' }, global: { provide: { [BUS_KEY as symbol]: bus } } })
    await flushPromises()
    expect(w.find('[data-testid="bot-groups"]').exists()).toBe(false)

    groups = [generation('g1', { message_ids: ['m3'] })]
    bus.emit({ name: 'group.closed', data: { conversation_id: 'c1', message_id: 'g1', message_ids: ['m3'] } })
    vi.advanceTimersByTime(150)
    await flushPromises()
    expect(w.find('[data-testid="bot-group"]').attributes('data-status')).toBe('pending')

    groups = [generation('g1', { status: 'failed', attempts: 3, last_error: 'HTTP 503', message_ids: ['m3'] })]
    bus.emit({ name: 'generation.failed', data: { conversation_id: 'c1', reply_id: 'g1' } })
    vi.advanceTimersByTime(150)
    await flushPromises()
    expect(w.find('[data-testid="bot-group"]').attributes('data-status')).toBe('failed')

    groups = [generation('g1', { message_ids: ['m3'] })]
    bus.emit({ name: 'generation.retried', data: { conversation_id: 'c1', reply_id: 'g1' } })
    vi.advanceTimersByTime(150)
    await flushPromises()
    expect(w.find('[data-testid="bot-group"]').attributes('data-status')).toBe('pending')
    expect(loadsOf(f, 'c1')).toBe(4)
  })
})
