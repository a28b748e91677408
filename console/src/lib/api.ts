import { authorization, tokens } from './auth'
import type {
  Activity,
  ConversationDetail,
  ConversationPage,
  ConversationStatus,
  Delivery,
  Generation,
  GenerationPage,
  GenerationStatus,
  HeldPage,
  HeldStatus,
  WebhookEvent,
} from './types'

/** Error raised by the API client. status 0 means the request never got a response. */
export class ApiError extends Error {
  readonly status: number
  readonly body: unknown
  readonly code: string | undefined

  constructor(status: number, body: unknown, message: string, code?: string) {
    super(message)
    this.name = 'ApiError'
    this.status = status
    this.body = body
    this.code = code
  }

  get isNotFound(): boolean {
    return this.status === 404
  }

  /** The service wants a (valid) API token: the console asks for one (lib/auth.ts). */
  get isUnauthorized(): boolean {
    return this.status === 401
  }

  /** Network failure, or a gateway/proxy/server error: the service is not usable right now. */
  get isUnreachable(): boolean {
    return this.status === 0 || this.status >= 500
  }
}

async function readBody(res: Response): Promise<unknown> {
  const text = await res.text()
  if (!text) return null
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

function errorMessage(body: unknown, status: number): string {
  if (body && typeof body === 'object' && 'message' in body) {
    const m = (body as { message: unknown }).message
    if (typeof m === 'string' && m) return m
  }
  return `HTTP ${status}`
}

function errorCode(body: unknown): string | undefined {
  if (body && typeof body === 'object' && 'error' in body) {
    const e = (body as { error: unknown }).error
    if (typeof e === 'string') return e
  }
  return undefined
}

/** A data call: sends the tab's API token when it has one, and reports a 401 for it. */
async function request<T>(path: string, init: RequestInit = {}): Promise<T> {
  const token = tokens.current()
  let res: Response
  try {
    res = await fetch(path, {
      ...init,
      headers: { Accept: 'application/json', ...authorization(token), ...(init.headers ?? {}) },
    })
  } catch (e) {
    // A request we cancelled ourselves is not an outage: callers drop it instead of showing an error.
    if (init.signal?.aborted) throw e
    throw new ApiError(0, null, 'Service unreachable', 'network_error')
  }
  const body = await readBody(res)
  if (res.status === 401) tokens.refuse(token)
  if (!res.ok) {
    throw new ApiError(res.status, body, errorMessage(body, res.status), errorCode(body))
  }
  return body as T
}

export interface ListQuery {
  status?: ConversationStatus | ''
  q?: string
  limit?: number
  cursor?: string | null
}

/** Builds the query string for GET /conversations/ (empty values are omitted). */
export function conversationsUrl(query: ListQuery = {}): string {
  const params = new URLSearchParams()
  if (query.status) params.set('status', query.status)
  const q = query.q?.trim()
  if (q) params.set('q', q)
  params.set('limit', String(query.limit ?? 20))
  if (query.cursor) params.set('cursor', query.cursor)
  return `/conversations/?${params.toString()}`
}

export function listConversations(query: ListQuery = {}, signal?: AbortSignal): Promise<ConversationPage> {
  return request<ConversationPage>(conversationsUrl(query), { signal })
}

export function getConversation(id: string, signal?: AbortSignal): Promise<ConversationDetail> {
  return request<ConversationDetail>(`/conversations/${encodeURIComponent(id)}/`, { signal })
}

export function getActivity(id: string, signal?: AbortSignal): Promise<Activity> {
  return request<Activity>(`/conversations/${encodeURIComponent(id)}/activity`, { signal })
}

export function listHeld(status?: HeldStatus, signal?: AbortSignal): Promise<HeldPage> {
  const qs = status ? `?status=${status}` : ''
  return request<HeldPage>(`/held/${qs}`, { signal })
}

/** Sends a dead reply again (POST /deliveries/{id}/retry, with the API token); 409 when it is not dead. */
export function retryDelivery(replyId: string): Promise<Delivery> {
  return request<Delivery>(`/deliveries/${encodeURIComponent(replyId)}/retry`, { method: 'POST' })
}

/**
 * A conversation's groups closed for the team's bot with this status (GET /generations/, newest
 * first, with the API token). Empty while the generator is off and was never on.
 */
export function listGenerations(
  conversationId: string,
  status: GenerationStatus,
  signal?: AbortSignal,
  limit = 20,
): Promise<GenerationPage> {
  const params = new URLSearchParams({ conversation_id: conversationId, status, limit: String(limit) })
  return request<GenerationPage>(`/generations/?${params.toString()}`, { signal })
}

/** Asks the bot again for a failed group (POST /generations/{id}/retry); 409 when it has not failed. */
export function retryGeneration(replyId: string): Promise<Generation> {
  return request<Generation>(`/generations/${encodeURIComponent(replyId)}/retry`, { method: 'POST' })
}

export interface WebhookResult {
  /** HTTP status, or 0 when the request failed before any response. */
  status: number
  ok: boolean
  body: unknown
}

/**
 * POSTs a webhook event; never throws (the simulator shows whatever came back). The webhook
 * takes no API token (it has its own signature), so none is sent.
 */
export async function postWebhook(event: WebhookEvent): Promise<WebhookResult> {
  try {
    const res = await fetch('/webhook/', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify(event),
    })
    return { status: res.status, ok: res.ok, body: await readBody(res) }
  } catch (e) {
    return { status: 0, ok: false, body: { error: 'network_error', message: String(e) } }
  }
}

/** Current time as ISO-8601 UTC with an explicit "+00:00" offset. */
export function isoNow(now: Date = new Date()): string {
  return now.toISOString().replace('Z', '+00:00')
}

export function newConversationEvent(id: string, now?: Date): WebhookEvent {
  return { type: 'NEW_CONVERSATION', timestamp: isoNow(now), data: { id } }
}

export function newMessageEvent(id: string, conversationId: string, content: string, now?: Date): WebhookEvent {
  return {
    type: 'NEW_MESSAGE',
    timestamp: isoNow(now),
    data: { id, conversation_id: conversationId, content },
  }
}

export function closeConversationEvent(id: string, now?: Date): WebhookEvent {
  return { type: 'CLOSE_CONVERSATION', timestamp: isoNow(now), data: { id } }
}

/** Human text for an error shown in the UI. */
export function describeError(err: unknown, notFoundText = 'Not found'): string {
  if (err instanceof ApiError) {
    if (err.isUnreachable) return 'Service unreachable'
    if (err.isNotFound) return notFoundText
    if (err.isUnauthorized) return 'Access token required'
    return err.message
  }
  return 'Unexpected error'
}
