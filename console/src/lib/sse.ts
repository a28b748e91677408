import { EventSource, type FetchLike } from 'eventsource'
import { ref, type Ref } from 'vue'
import { authorization, tokens, type TokenStore } from './auth'
import type { Bus } from './bus'
import { STREAM_EVENT_NAMES, type StreamEventData } from './types'

export type StreamStatus = 'connecting' | 'live' | 'reconnecting'

/** Minimal part of EventSource we use (lets tests pass a fake). */
export interface EventSourceLike {
  readonly readyState: number
  onopen: ((this: any, ev: Event) => any) | null
  /** `ev.code` is the HTTP status when the server answered with an error (the `eventsource` package). */
  onerror: ((this: any, ev: Event & { code?: number }) => any) | null
  addEventListener(type: string, listener: (ev: MessageEvent) => void): void
  close(): void
}

/** Opens a stream on `url` whose requests go through `fetch` (which adds the API token). */
export type EventSourceFactory = (url: string, fetch: FetchLike) => EventSourceLike

export interface EventStream {
  status: Ref<StreamStatus>
  close(): void
}

const CLOSED = 2
const UNAUTHORIZED = 401

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
 * The stream is read with the `eventsource` package rather than the browser's EventSource:
 * the same WHATWG behaviour (reconnects after `retry`, fails on a non-200 answer), but over
 * fetch, so it can send `Authorization: Bearer <token>`, which the browser's cannot. The token
 * is read at each (re)connection, so a newly given token is used from the next one on.
 */
const defaultFactory: EventSourceFactory = (url, fetch) => new EventSource(url, { fetch })

export interface EventStreamOptions {
  url?: string
  factory?: EventSourceFactory
  /** Delay before reopening a stream the browser gave up on. */
  retryMs?: number
  /** Ref to write the connection status into (a new one is created otherwise). */
  status?: Ref<StreamStatus>
  /** Where the API token comes from and a 401 is reported (the page's store by default). */
  tokens?: TokenStore
}

/**
 * Connects to the server-sent events stream and forwards named events to the bus.
 * The stream reconnects by itself after transient errors; if it gives up (readyState CLOSED,
 * e.g. the proxy answered with an error page) we reopen it ourselves after `retryMs`, except
 * after a 401: then the token store asks for a token and the stream reopens once one is given.
 * After any reconnection a "stream.reconnected" event is emitted so views reload what they may have missed.
 */
export function connectEventStream(bus: Bus, options: EventStreamOptions = {}): EventStream {
  const url = options.url ?? '/events/stream'
  const factory = options.factory ?? defaultFactory
  const store = options.tokens ?? tokens
  const retryMs = options.retryMs ?? 3000
  const status = options.status ?? ref<StreamStatus>('connecting')
  status.value = 'connecting'
  let source: EventSourceLike | null = null
  let retryTimer: ReturnType<typeof setTimeout> | null = null
  let hadError = false
  let closed = false
  let waitingForToken = false
  // The token of the latest request: a 401 is reported for it, not for a newer one.
  let sent: string | null = null

  const authorizedFetch: FetchLike = (input, init) => {
    sent = store.current()
    return fetch(input, { ...init, headers: { ...init.headers, ...authorization(sent) } })
  }

  const open = () => {
    if (closed) return
    waitingForToken = false
    const es = factory(url, authorizedFetch)
    source = es
    es.onopen = () => {
      status.value = 'live'
      if (hadError) {
        hadError = false
        bus.emit({ name: 'stream.reconnected', data: {} })
      }
    }
    es.onerror = (ev) => {
      hadError = true
      status.value = 'reconnecting'
      if (es.readyState !== CLOSED || closed || retryTimer || waitingForToken) return
      es.close()
      if (ev?.code === UNAUTHORIZED) {
        const refused = sent
        store.refuse(refused)
        // A token given while this request was out is tried at once; otherwise wait for one.
        if (store.current() !== null && store.current() !== refused) open()
        else waitingForToken = true
        return
      }
      retryTimer = setTimeout(() => {
        retryTimer = null
        open()
      }, retryMs)
    }
    for (const name of STREAM_EVENT_NAMES) {
      es.addEventListener(name, (ev: MessageEvent) => {
        bus.emit({ name, data: parseEventData(ev.data) })
      })
    }
  }

  const offProvide = store.onProvide(() => {
    if (waitingForToken) open()
  })

  open()

  return {
    status,
    close() {
      closed = true
      offProvide()
      if (retryTimer) clearTimeout(retryTimer)
      source?.close()
    },
  }
}
