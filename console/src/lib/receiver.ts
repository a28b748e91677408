// The reference receiver's control API (scripts/receiver.py, --control-port): what it got and
// what it is told to do. It runs beside the service, on another origin, so every call is a
// CORS request; the receiver allows the origins of its --allow-origin (by default the console
// of `make run`).
import { formatTime } from './messages'

/** Where `DEMO_RECEIVER=1 make run` serves the control API. */
export const DEFAULT_RECEIVER_URL = 'http://127.0.0.1:9001/'

/** The events kept on screen (the receiver keeps the newest 200). */
export const KEPT_EVENTS = 20

export interface ReceiverCounts {
  received: number
  duplicate: number
  failed: number
  rejected: number
}

/** GET /state of the control API. */
export interface ReceiverState {
  /** Where the service delivers (REPLY_WEBHOOK_URL). */
  url: string | null
  down: boolean
  /** When a `down_for` ends; null while up or down until told. */
  back_at: string | null
  fail_next: number
  fail_status: number
  fail_rate: number
  retry_after: number | null
  slow: number
  counts: ReceiverCounts
  /** Number of the newest event. */
  last: number
}

export type ReceiverEventKind =
  | 'received'
  | 'duplicate'
  | 'failed'
  | 'rejected'
  | 'down'
  | 'listening'
  | 'control'

/** One event of GET /events: the receiver's printed line, numbered, with flags for deliveries. */
export interface ReceiverEvent {
  n: number
  at: string
  event: ReceiverEventKind | string
  status?: number
  verified?: boolean
  duplicate?: boolean
  webhook_id?: string
  reply_id?: string | null
  conversation_id?: string | null
  content?: unknown
  times?: number
  reason?: string
  seconds?: number | null
  retry_after?: number | null
  changes?: Record<string, unknown>
  [key: string]: unknown
}

export interface ReceiverPage {
  events: ReceiverEvent[]
  last: number
  state: ReceiverState
}

/** The settings PATCH /state takes; every one is optional. */
export interface ReceiverSettings {
  fail_next?: number
  fail_status?: number
  fail_rate?: number
  retry_after?: number | null
  slow?: number
  down?: boolean
  down_for?: number
}

/** A failed call to the control API; status 0 when no answer came (down, or CORS refused). */
export class ReceiverError extends Error {
  readonly status: number

  constructor(status: number, message: string) {
    super(message)
    this.name = 'ReceiverError'
    this.status = status
  }
}

/**
 * The control API's base URL from what the user typed: http(s) only, a scheme added when
 * missing, always ending in "/". Null when it is not a URL.
 */
export function normalizeReceiverUrl(text: string): string | null {
  const trimmed = text.trim()
  if (!trimmed) return null
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(trimmed) ? trimmed : `http://${trimmed}`
  let url: URL
  try {
    url = new URL(withScheme)
  } catch {
    return null
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return null
  url.search = ''
  url.hash = ''
  return url.href.endsWith('/') ? url.href : `${url.href}/`
}

async function call<T>(url: string, init: RequestInit = {}): Promise<T> {
  let res: Response
  try {
    // No credentials and no API token: the receiver is not the service.
    res = await fetch(url, { ...init, credentials: 'omit', headers: { Accept: 'application/json', ...(init.headers ?? {}) } })
  } catch (e) {
    if (init.signal?.aborted) throw e
    throw new ReceiverError(0, 'Receiver unreachable')
  }
  const text = await res.text()
  let body: unknown = null
  try {
    body = text ? JSON.parse(text) : null
  } catch {
    body = text
  }
  if (!res.ok) {
    const message =
      body && typeof body === 'object' && typeof (body as { message?: unknown }).message === 'string'
        ? (body as { message: string }).message
        : `HTTP ${res.status}`
    throw new ReceiverError(res.status, message)
  }
  return body as T
}

/** GET /events?after=N: the events numbered above `after`, with the receiver's state. */
export function getReceiverEvents(base: string, after: number, signal?: AbortSignal): Promise<ReceiverPage> {
  return call<ReceiverPage>(`${base}events?after=${after}&limit=${KEPT_EVENTS}`, { signal })
}

/** PATCH /state: change what the receiver does; answers its new state once it holds. */
export function changeReceiver(base: string, settings: ReceiverSettings): Promise<ReceiverState> {
  return call<ReceiverState>(`${base}state`, {
    method: 'PATCH',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(settings),
  })
}

/** The settings of "Back to normal": every answer 200, at once, port up. */
export const NORMAL: ReceiverSettings = { fail_next: 0, fail_rate: 0, slow: 0, retry_after: null, down: false }

/**
 * `current` with the `incoming` events added: one per number, newest first, at most `keep`.
 */
export function mergeEvents(current: readonly ReceiverEvent[], incoming: readonly ReceiverEvent[], keep = KEPT_EVENTS): ReceiverEvent[] {
  const byNumber = new Map<number, ReceiverEvent>()
  for (const e of [...current, ...incoming]) byNumber.set(e.n, e)
  return [...byNumber.values()].sort((a, b) => b.n - a.n).slice(0, keep)
}

export interface EventLine {
  /** Short label in the badge. */
  label: string
  cls: string
  /** The rest of the line: ids, reason, what it was told. */
  text: string
  /** The reply's content, for deliveries. */
  content: string
  time: string
}

function short(id: unknown): string {
  return typeof id === 'string' ? id.slice(0, 8) : '?'
}

function describeChanges(changes: Record<string, unknown> | undefined): string {
  const entries = Object.entries(changes ?? {})
  if (!entries.length) return 'nothing'
  return entries
    .map(([name, value]) => {
      switch (name) {
        case 'fail_next':
          return `fail the next ${value}`
        case 'fail_status':
          return `with HTTP ${value}`
        case 'fail_rate':
          return `fail ${Math.round(Number(value) * 100)} %`
        case 'retry_after':
          return value === null ? 'no Retry-After' : `Retry-After ${value} s`
        case 'slow':
          return Number(value) > 0 ? `answer after ${value} s` : 'answer at once'
        case 'down':
          return value ? 'go down' : 'come back'
        case 'down_for':
          return `go down for ${value} s`
        default:
          return `${name}=${JSON.stringify(value)}`
      }
    })
    .join(', ')
}

/** One receiver event as a line of the panel. */
export function describeEvent(e: ReceiverEvent): EventLine {
  const time = formatTime(e.at)
  const reply = `reply ${short(e.reply_id ?? e.webhook_id)}`
  const content = typeof e.content === 'string' ? e.content : ''
  switch (e.event) {
    case 'received':
      return { label: 'Received', cls: 'badge--delivered', text: `${reply} · verified`, content, time }
    case 'duplicate':
      return {
        label: 'Duplicate',
        cls: 'badge--held',
        text: `${reply} · received ${e.times ?? 2} times (same webhook-id)`,
        content,
        time,
      }
    case 'failed': {
      const after = e.retry_after === null || e.retry_after === undefined ? '' : ` · Retry-After ${e.retry_after} s`
      return { label: `Failed ${e.status}`, cls: 'badge--expired', text: `${reply} · on purpose${after}`, content, time }
    }
    case 'rejected':
      return { label: `Rejected ${e.status}`, cls: 'badge--expired', text: e.reason ?? '', content: '', time }
    case 'down':
      return {
        label: 'Down',
        cls: 'badge--expired',
        text: e.seconds ? `refusing connections for ${e.seconds} s` : 'refusing connections',
        content: '',
        time,
      }
    case 'listening':
      return { label: 'Up', cls: 'badge--open', text: 'accepting connections', content: '', time }
    case 'control':
      return { label: 'Told', cls: 'badge--muted', text: describeChanges(e.changes), content: '', time }
    default:
      return { label: String(e.event), cls: 'badge--muted', text: '', content: '', time }
  }
}

/** What the receiver does with the next delivery, in a few words. */
export function describeState(s: ReceiverState): string {
  if (s.down) return s.back_at ? `Down · back at ${formatTime(s.back_at)}` : 'Down · refusing connections'
  const parts: string[] = []
  if (s.fail_next > 0) parts.push(`failing the next ${s.fail_next} with HTTP ${s.fail_status}`)
  if (s.fail_rate > 0) parts.push(`failing ${Math.round(s.fail_rate * 100)} % with HTTP ${s.fail_status}`)
  if (s.slow > 0) parts.push(`answering after ${s.slow} s`)
  return parts.length ? `Up · ${parts.join(', ')}` : 'Up · accepting every delivery'
}
