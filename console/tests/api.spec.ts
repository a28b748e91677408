import { describe, expect, it } from 'vitest'
import {
  ApiError,
  closeConversationEvent,
  conversationsUrl,
  describeError,
  getActivity,
  getConversation,
  isoNow,
  listConversations,
  listHeld,
  newConversationEvent,
  newMessageEvent,
  postWebhook,
} from '../src/lib/api'
import { jsonResponse, mockFetch } from './helpers'

describe('conversationsUrl', () => {
  it('always sends a limit and omits empty filters', () => {
    expect(conversationsUrl()).toBe('/conversations/?limit=20')
    expect(conversationsUrl({ status: '', q: '  ' })).toBe('/conversations/?limit=20')
  })
  it('encodes status, trimmed id prefix and the opaque cursor', () => {
    expect(conversationsUrl({ status: 'OPEN', q: ' ab12 ', limit: 5, cursor: 'a+b/c=' })).toBe(
      '/conversations/?status=OPEN&q=ab12&limit=5&cursor=a%2Bb%2Fc%3D',
    )
  })
})

describe('API client', () => {
  it('lists conversations', async () => {
    const page = { items: [{ id: 'c1', status: 'OPEN' }], next_cursor: 'n1' }
    const f = mockFetch({ 'GET /conversations/': () => jsonResponse(200, page) })
    await expect(listConversations({ status: 'CLOSED' })).resolves.toEqual(page)
    expect(f).toHaveBeenCalledWith('/conversations/?status=CLOSED&limit=20', expect.anything())
  })

  it('gets a conversation and its activity with encoded ids', async () => {
    const f = mockFetch({
      'GET /conversations/a%20b/activity': () => jsonResponse(200, { conversation_id: 'a b', group: null, held: [] }),
      'GET /conversations/a%20b/': () => jsonResponse(200, { id: 'a b', messages: [] }),
    })
    await expect(getConversation('a b')).resolves.toMatchObject({ id: 'a b' })
    await expect(getActivity('a b')).resolves.toMatchObject({ group: null })
    expect(f.mock.calls.map((c) => c[0])).toEqual(['/conversations/a%20b/', '/conversations/a%20b/activity'])
  })

  it('lists held messages by status', async () => {
    const f = mockFetch({ 'GET /held/': () => jsonResponse(200, { items: [] }) })
    await listHeld('EXPIRED')
    expect(f.mock.calls[0][0]).toBe('/held/?status=EXPIRED')
  })

  it('turns error envelopes into ApiError with code and message', async () => {
    mockFetch({
      'GET /conversations/': () =>
        jsonResponse(404, { code: 404, status: 'Not Found', message: 'Conversation not found', error: 'not_found' }),
    })
    const err = await getConversation('x').catch((e) => e)
    expect(err).toBeInstanceOf(ApiError)
    expect(err).toMatchObject({ status: 404, code: 'not_found', message: 'Conversation not found' })
    expect(err.isNotFound).toBe(true)
    expect(describeError(err, 'Conversation not found')).toBe('Conversation not found')
  })

  it('reports network failures and 5xx as unreachable', async () => {
    mockFetch({})
    const err = await listConversations().catch((e) => e)
    expect(err).toMatchObject({ status: 0 })
    expect(describeError(err)).toBe('Service unreachable')
    mockFetch({ '/conversations/': () => jsonResponse(503, { code: 503, message: 'down' }) })
    expect(describeError(await listConversations().catch((e) => e))).toBe('Service unreachable')
  })
})

describe('webhook events', () => {
  const now = new Date('2026-03-04T05:06:07.089Z')

  it('builds the three event shapes with ISO UTC offsets', () => {
    expect(isoNow(now)).toBe('2026-03-04T05:06:07.089+00:00')
    expect(newConversationEvent('c1', now)).toEqual({
      type: 'NEW_CONVERSATION',
      timestamp: '2026-03-04T05:06:07.089+00:00',
      data: { id: 'c1' },
    })
    expect(newMessageEvent('m1', 'c1', 'hi', now)).toEqual({
      type: 'NEW_MESSAGE',
      timestamp: '2026-03-04T05:06:07.089+00:00',
      data: { id: 'm1', conversation_id: 'c1', content: 'hi' },
    })
    expect(closeConversationEvent('c1', now).type).toBe('CLOSE_CONVERSATION')
  })

  it('posts JSON and returns status and body without throwing', async () => {
    const f = mockFetch({ 'POST /webhook/': () => jsonResponse(202, { status: 'held' }) })
    const res = await postWebhook(newMessageEvent('m1', 'c1', 'hi', now))
    expect(res).toEqual({ status: 202, ok: true, body: { status: 'held' } })
    const [url, init] = f.mock.calls[0]
    expect(url).toBe('/webhook/')
    expect(init.method).toBe('POST')
    expect(init.headers['Content-Type']).toBe('application/json')
    expect(JSON.parse(init.body).data.conversation_id).toBe('c1')
  })

  it('returns status 0 on network failure', async () => {
    mockFetch({})
    const res = await postWebhook(newConversationEvent('c1', now))
    expect(res.status).toBe(0)
    expect(res.ok).toBe(false)
  })
})

describe('cancellation', () => {
  it('lets an abort through instead of reporting the service as unreachable', async () => {
    const f = mockFetch({
      'GET /conversations/': (_url, init) =>
        new Promise((_resolve, reject) =>
          init!.signal!.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError'))),
        ),
    })
    const ctrl = new AbortController()
    const pending = getConversation('c1', ctrl.signal)
    expect(f.mock.calls[0][1].signal).toBe(ctrl.signal)
    ctrl.abort()
    const err = await pending.catch((e) => e)
    expect(err).not.toBeInstanceOf(ApiError)
    expect(err.name).toBe('AbortError')
  })

  it('passes the signal of every read', async () => {
    const f = mockFetch({
      'GET /conversations/': () => jsonResponse(200, { items: [], next_cursor: null }),
      'GET /held/': () => jsonResponse(200, { items: [] }),
    })
    const { signal } = new AbortController()
    await listConversations({}, signal)
    await getActivity('c1', signal)
    await listHeld('HELD', signal)
    expect(f.mock.calls.map(([, init]) => init.signal)).toEqual([signal, signal, signal])
  })
})
