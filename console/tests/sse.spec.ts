import { afterEach, describe, expect, it, vi } from 'vitest'
import { createBus } from '../src/lib/bus'
import { connectEventStream, parseEventData, type EventSourceLike } from '../src/lib/sse'
import type { BusEvent } from '../src/lib/types'
import { useFakeClock } from './helpers'

class FakeEventSource implements EventSourceLike {
  static instances: FakeEventSource[] = []
  readyState = 0
  onopen: ((ev: Event) => void) | null = null
  onerror: ((ev: Event) => void) | null = null
  listeners = new Map<string, ((ev: MessageEvent) => void)[]>()
  closed = false
  constructor(public url: string) {
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
  fail(readyState: number) {
    this.readyState = readyState
    this.onerror?.(new Event('error'))
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
})
