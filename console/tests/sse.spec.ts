import { afterEach, describe, expect, it, vi } from 'vitest'
import type { FetchLike } from 'eventsource'
import { createTokenStore } from '../src/lib/auth'
import { createBus } from '../src/lib/bus'
import { connectEventStream, parseEventData, type EventSourceLike } from '../src/lib/sse'
import type { BusEvent } from '../src/lib/types'
import { useFakeClock } from './helpers'

class FakeEventSource implements EventSourceLike {
  static instances: FakeEventSource[] = []
  readyState = 0
  onopen: ((ev: Event) => void) | null = null
  onerror: ((ev: Event & { code?: number }) => void) | null = null
  listeners = new Map<string, ((ev: MessageEvent) => void)[]>()
  closed = false
  constructor(
    public url: string,
    public fetch?: FetchLike,
  ) {
    FakeEventSource.instances.push(this)
  }
  addEventListener(type: string, l: (ev: MessageEvent) => void) {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), l])
  }
  close() {
    this.closed = true
    this.readyState = 2
  }
  open() {
    this.readyState = 1
    this.onopen?.(new Event('open'))
  }
  fail(readyState: number, code?: number) {
    this.readyState = readyState
    this.onerror?.(Object.assign(new Event('error'), { code }))
  }
  dispatch(type: string, data: string) {
    for (const l of this.listeners.get(type) ?? []) l({ data } as MessageEvent)
  }
}

afterEach(() => {
  FakeEventSource.instances = []
  vi.useRealTimers()
})

describe('event stream', () => {
  it('parses JSON payloads defensively', () => {
    expect(parseEventData('{"conversation_id":"c1"}')).toEqual({ conversation_id: 'c1' })
    expect(parseEventData('nope')).toEqual({})
    expect(parseEventData(undefined)).toEqual({})
  })

  it('tracks status and forwards named events to the bus', () => {
    const bus = createBus()
    const seen: BusEvent[] = []
    bus.on((e) => seen.push(e))
    const stream = connectEventStream(bus, { factory: (u) => new FakeEventSource(u) })
    const es = FakeEventSource.instances[0]
    expect(es.url).toBe('/events/stream')
    expect(stream.status.value).toBe('connecting')
    es.open()
    expect(stream.status.value).toBe('live')
    es.dispatch('reply.created', '{"conversation_id":"c1","message_ids":["m1"]}')
    expect(seen).toEqual([{ name: 'reply.created', data: { conversation_id: 'c1', message_ids: ['m1'] } }])
  })

  it('shows reconnecting and announces the reconnection', () => {
    const bus = createBus()
    const seen: string[] = []
    bus.on((e) => seen.push(e.name))
    const stream = connectEventStream(bus, { factory: (u) => new FakeEventSource(u) })
    const es = FakeEventSource.instances[0]
    es.open()
    es.fail(0) // browser is reconnecting by itself
    expect(stream.status.value).toBe('reconnecting')
    expect(FakeEventSource.instances).toHaveLength(1)
    es.open()
    expect(stream.status.value).toBe('live')
    expect(seen).toEqual(['stream.reconnected'])
  })

  it('reopens the stream itself when the browser gives up', () => {
    useFakeClock()
    const bus = createBus()
    const stream = connectEventStream(bus, { factory: (u) => new FakeEventSource(u), retryMs: 1000 })
    FakeEventSource.instances[0].fail(2)
    expect(FakeEventSource.instances[0].closed).toBe(true)
    vi.advanceTimersByTime(999)
    expect(FakeEventSource.instances).toHaveLength(1)
    vi.advanceTimersByTime(1)
    expect(FakeEventSource.instances).toHaveLength(2)
    stream.close()
    expect(FakeEventSource.instances[1].closed).toBe(true)
  })

  it('sends the current token on every (re)connection', async () => {
    const f = vi.fn(async () => new Response(''))
    vi.stubGlobal('fetch', f)
    const store = createTokenStore(null)
    connectEventStream(createBus(), { factory: (u, fetch) => new FakeEventSource(u, fetch), tokens: store })
    const es = FakeEventSource.instances[0]
    const init = { headers: { Accept: 'text/event-stream' as const }, signal: null, mode: 'cors' as const, cache: 'no-store' as const, redirect: 'follow' as const }
    await es.fetch!('/events/stream', init)
    store.provide('s3cret')
    await es.fetch!('/events/stream', init)
    expect(f.mock.calls.map((c: unknown[]) => (c[1] as RequestInit).headers)).toEqual([
      { Accept: 'text/event-stream' },
      { Accept: 'text/event-stream', Authorization: 'Bearer s3cret' },
    ])
  })

  it('after a 401 waits for a token instead of retrying, then reopens with it', async () => {
    useFakeClock()
    vi.stubGlobal('fetch', vi.fn(async () => new Response('')))
    const store = createTokenStore(null)
    const bus = createBus()
    const seen: string[] = []
    bus.on((e) => seen.push(e.name))
    const stream = connectEventStream(bus, {
      factory: (u, fetch) => new FakeEventSource(u, fetch),
      tokens: store,
      retryMs: 1000,
    })
    const first = FakeEventSource.instances[0]
    await first.fetch!('/events/stream', {} as never)
    first.fail(2, 401)
    expect(first.closed).toBe(true)
    expect(store.required.value).toBe(true)
    expect(stream.status.value).toBe('reconnecting')
    vi.advanceTimersByTime(10_000)
    expect(FakeEventSource.instances).toHaveLength(1)

    store.provide('s3cret')
    expect(FakeEventSource.instances).toHaveLength(2)
    FakeEventSource.instances[1].open()
    expect(stream.status.value).toBe('live')
    expect(seen).toEqual(['stream.reconnected'])
    stream.close()
  })

  it('reports a refused token, so the console asks again', async () => {
    vi.stubGlobal('fetch', vi.fn(async () => new Response('')))
    const store = createTokenStore(null)
    store.provide('old')
    connectEventStream(createBus(), { factory: (u, fetch) => new FakeEventSource(u, fetch), tokens: store })
    const es = FakeEventSource.instances[0]
    await es.fetch!('/events/stream', {} as never)
    es.fail(2, 401)
    expect(store.refused.value).toBe(true)
    expect(store.current()).toBeNull()
  })

  it('reads the stream over fetch with the token (the eventsource package)', async () => {
    const body = 'retry: 2000\n: connected\n\nevent: reply.created\ndata: {"conversation_id":"c1"}\n\n'
    const f = vi.fn(
      async (_url: string | URL | Request, _init?: RequestInit) =>
        new Response(body, { status: 200, headers: { 'Content-Type': 'text/event-stream' } }),
    )
    vi.stubGlobal('fetch', f)
    const store = createTokenStore(null)
    store.provide('s3cret')
    const bus = createBus()
    const got = new Promise((resolve) => bus.on((e) => e.name === 'reply.created' && resolve(e.data)))
    const stream = connectEventStream(bus, { tokens: store })
    await expect(got).resolves.toEqual({ conversation_id: 'c1' })
    expect(String(f.mock.calls[0][0])).toMatch(/\/events\/stream$/)
    expect(new Headers(f.mock.calls[0][1]!.headers).get('Authorization')).toBe('Bearer s3cret')
    stream.close()
  })

  it('asks for a token when the real stream is answered 401', async () => {
    vi.stubGlobal('fetch', vi.fn(async () => new Response('{"error":"unauthorized"}', { status: 401 })))
    const store = createTokenStore(null)
    const stream = connectEventStream(createBus(), { tokens: store })
    await vi.waitFor(() => expect(store.required.value).toBe(true))
    expect(stream.status.value).toBe('reconnecting')
    stream.close()
  })
})

