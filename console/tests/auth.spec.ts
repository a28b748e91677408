import { afterEach, describe, expect, it } from 'vitest'
import { describeError, getConversation, listConversations, newConversationEvent, postWebhook } from '../src/lib/api'
import { STORAGE_KEY, authorization, createTokenStore, tokens } from '../src/lib/auth'
import { jsonResponse, mockFetch } from './helpers'

afterEach(() => {
  tokens.forget()
  sessionStorage.clear()
})

const unauthorized = () =>
  jsonResponse(401, { code: 401, status: 'Unauthorized', error: 'unauthorized', message: 'Missing or wrong bearer token.' })

describe('token store', () => {
  it('keeps a trimmed token in sessionStorage and ignores an empty one', () => {
    const store = createTokenStore(sessionStorage)
    expect(store.current()).toBeNull()
    store.provide('   ')
    expect(store.current()).toBeNull()
    store.provide('  s3cret ')
    expect(store.current()).toBe('s3cret')
    expect(sessionStorage.getItem(STORAGE_KEY)).toBe('s3cret')
    // Another store on the same tab's storage (a reload) finds it.
    expect(createTokenStore(sessionStorage).current()).toBe('s3cret')
  })

  it('asks for a token when a call without one is refused', () => {
    const store = createTokenStore(sessionStorage)
    const given: string[] = []
    store.onProvide((t) => given.push(t))
    store.refuse(null)
    expect(store.required.value).toBe(true)
    expect(store.refused.value).toBe(false)
    store.provide('s3cret')
    expect(store.required.value).toBe(false)
    expect(given).toEqual(['s3cret'])
  })

  it('forgets a refused token and says it was refused', () => {
    const store = createTokenStore(sessionStorage)
    store.provide('old')
    store.refuse('old')
    expect(store.current()).toBeNull()
    expect(sessionStorage.getItem(STORAGE_KEY)).toBeNull()
    expect(store.required.value).toBe(true)
    expect(store.refused.value).toBe(true)
    store.provide('new')
    expect(store.refused.value).toBe(false)
  })

  it('ignores the refusal of a call made before a newer token was given', () => {
    const store = createTokenStore(sessionStorage)
    store.provide('new')
    store.refuse(null)
    store.refuse('old')
    expect(store.current()).toBe('new')
    expect(store.required.value).toBe(false)
  })

  it('works in memory where sessionStorage is unavailable', () => {
    const broken = {
      getItem: () => {
        throw new Error('denied')
      },
      setItem: () => {
        throw new Error('denied')
      },
      removeItem: () => {
        throw new Error('denied')
      },
    } as unknown as Storage
    for (const store of [createTokenStore(null), createTokenStore(broken)]) {
      store.provide('s3cret')
      expect(store.current()).toBe('s3cret')
      store.refuse('s3cret')
      expect(store.current()).toBeNull()
    }
  })

  it('builds the Authorization header', () => {
    expect(authorization('abc')).toEqual({ Authorization: 'Bearer abc' })
    expect(authorization(null)).toEqual({})
  })
})

describe('API client with a token', () => {
  it('sends no Authorization header until it has a token, then on every data call', async () => {
    const f = mockFetch({
      'GET /conversations/': () => jsonResponse(200, { items: [], next_cursor: null }),
    })
    await listConversations()
    expect(f.mock.calls[0][1].headers).toEqual({ Accept: 'application/json' })
    tokens.provide('s3cret')
    await listConversations()
    await getConversation('c1')
    for (const [, init] of f.mock.calls.slice(1)) {
      expect(init.headers).toEqual({ Accept: 'application/json', Authorization: 'Bearer s3cret' })
    }
  })

  it('reports a 401 to the store and describes it', async () => {
    mockFetch({ 'GET /conversations/': unauthorized })
    const err = await listConversations().catch((e) => e)
    expect(err.status).toBe(401)
    expect(err.isUnauthorized).toBe(true)
    expect(err.isUnreachable).toBe(false)
    expect(tokens.required.value).toBe(true)
    expect(describeError(err)).toBe('Access token required')
  })

  it('re-asks when the token in use is refused (rotation)', async () => {
    tokens.provide('old')
    mockFetch({ 'GET /conversations/': unauthorized })
    await listConversations().catch(() => null)
    expect(tokens.refused.value).toBe(true)
    expect(tokens.current()).toBeNull()
  })

  it('never sends the token to the webhook', async () => {
    tokens.provide('s3cret')
    const f = mockFetch({ 'POST /webhook/': () => jsonResponse(201, {}) })
    await postWebhook(newConversationEvent('c1'))
    expect(f.mock.calls[0][1].headers).not.toHaveProperty('Authorization')
  })
})
