import { ref, type Ref } from 'vue'
import type { Bus } from './bus'
import { STREAM_EVENT_NAMES, type StreamEventData } from './types'

export type StreamStatus = 'connecting' | 'live' | 'reconnecting'

/** Minimal part of EventSource we use (lets tests pass a fake). */
export interface EventSourceLike {
  readonly readyState: number
  onopen: ((this: any, ev: Event) => any) | null
  onerror: ((this: any, ev: Event) => any) | null
  addEventListener(type: string, listener: (ev: MessageEvent) => void): void
  close(): void
}

export type EventSourceFactory = (url: string) => EventSourceLike

export interface EventStream {
  status: Ref<StreamStatus>
  close(): void
}

const CLOSED = 2

export function parseEventData(raw: unknown): StreamEventData {
  if (typeof raw !== 'string') return {}
  try {
    const v = JSON.parse(raw)
    return v && typeof v === 'object' ? (v as StreamEventData) : {}
  } catch {
    return {}
  }
}

/**
 * Connects to the server-sent events stream and forwards named events to the bus.
 * EventSource reconnects by itself after transient errors; if the browser gives up
 * (readyState CLOSED, e.g. the proxy answered with an error page) we reopen it ourselves.
 * After any reconnection a "stream.reconnected" event is emitted so views reload what they may have missed.
 */
export interface EventStreamOptions {
  url?: string
  factory?: EventSourceFactory
  /** Delay before reopening a stream the browser gave up on. */
  retryMs?: number
  /** Ref to write the connection status into (a new one is created otherwise). */
  status?: Ref<StreamStatus>
}

export function connectEventStream(bus: Bus, options: EventStreamOptions = {}): EventStream {
  const url = options.url ?? '/events/stream'
  const factory: EventSourceFactory = options.factory ?? ((u) => new EventSource(u))
  const retryMs = options.retryMs ?? 3000
  const status = options.status ?? ref<StreamStatus>('connecting')
  status.value = 'connecting'
  let source: EventSourceLike | null = null
  let retryTimer: ReturnType<typeof setTimeout> | null = null
  let hadError = false
  let closed = false

  const open = () => {
    if (closed) return
    const es = factory(url)
    source = es
    es.onopen = () => {
      status.value = 'live'
      if (hadError) {
        hadError = false
        bus.emit({ name: 'stream.reconnected', data: {} })
      }
    }
    es.onerror = () => {
      hadError = true
      status.value = 'reconnecting'
      if (es.readyState === CLOSED && !closed && !retryTimer) {
        es.close()
        retryTimer = setTimeout(() => {
          retryTimer = null
          open()
        }, retryMs)
      }
    }
    for (const name of STREAM_EVENT_NAMES) {
      es.addEventListener(name, (ev: MessageEvent) => {
        bus.emit({ name, data: parseEventData(ev.data) })
      })
    }
  }

  open()

  return {
    status,
    close() {
      closed = true
      if (retryTimer) clearTimeout(retryTimer)
      source?.close()
    },
  }
}
