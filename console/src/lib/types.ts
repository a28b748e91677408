// Shapes of the backend contract (see console/README.md).

export type ConversationStatus = 'OPEN' | 'CLOSED'

export interface ConversationSummary {
  id: string
  status: ConversationStatus
  created_at: string
  updated_at: string
  message_count: number
  last_message_at: string | null
}

export interface ConversationPage {
  items: ConversationSummary[]
  next_cursor: string | null
}

export type MessageType = 'INBOUND' | 'OUTBOUND'

export type DeliveryStatus = 'pending' | 'delivered' | 'dead'

/** Where a reply's delivery to the team's platform stands (GET /conversations/{id}/). */
export interface DeliveryState {
  status: DeliveryStatus
  attempts: number
  next_attempt_at: string | null
  last_attempt_at: string | null
  last_status: number | null
  last_error: string | null
  delivered_at: string | null
}

/** One delivery of GET /deliveries/{reply_id}/ and of POST /deliveries/{reply_id}/retry. */
export interface Delivery extends DeliveryState {
  reply_id: string
  conversation_id: string
  created_at: string
}

export type GenerationStatus = 'pending' | 'stored' | 'failed'

/** A group closed for the team's bot (REPLY_GENERATOR_URL): GET /generations/. */
export interface Generation {
  /** The reply's id (also the Idempotency-Key sent to the bot). */
  reply_id: string
  conversation_id: string
  status: GenerationStatus
  source: 'generator' | 'template' | null
  /** The group, in arrival order. */
  message_ids: string[]
  /** When the group closed. */
  created_at: string
  stored_at: string | null
  attempts: number
  next_attempt_at: string | null
  last_attempt_at: string | null
  last_status: number | null
  last_error: string | null
}

export interface GenerationPage {
  items: Generation[]
  next_cursor: string | null
}

export interface Message {
  id: string
  type: MessageType
  content: string
  timestamp: string
  /**
   * OUTBOUND only: absent while delivery was never configured, null for a reply stored
   * without a delivery.
   */
  delivery?: DeliveryState | null
}

export interface ConversationDetail {
  id: string
  status: ConversationStatus
  created_at: string
  updated_at: string
  messages: Message[]
}

export interface PendingGroup {
  message_ids: string[]
  last_arrival_at: string
  reply_due_at: string
}

export type HeldStatus = 'HELD' | 'EXPIRED'

export interface HeldMessage {
  id: string
  conversation_id: string
  content: string
  received_at: string
  expires_at: string
  status: HeldStatus
}

export interface Activity {
  conversation_id: string
  group: PendingGroup | null
  held: HeldMessage[]
}

export interface HeldPage {
  items: HeldMessage[]
}

export type WebhookEventType = 'NEW_CONVERSATION' | 'NEW_MESSAGE' | 'CLOSE_CONVERSATION'

export interface WebhookEvent {
  type: WebhookEventType
  timestamp: string
  data: Record<string, string>
}

/** Names sent by GET /events/stream. */
export const STREAM_EVENT_NAMES = [
  'conversation.created',
  'conversation.closed',
  'message.accepted',
  'message.held',
  'message.expired',
  'reply.created',
  'group.closed',
  'generation.failed',
  'generation.retried',
  'delivery.updated',
] as const

export type StreamEventName = (typeof STREAM_EVENT_NAMES)[number]

/** Local (in-page) events, emitted on the same bus as stream events. */
export type LocalEventName = 'stream.reconnected' | 'local.webhook' | 'auth.changed'

export interface StreamEventData {
  conversation_id?: string
  message_id?: string
  message_ids?: string[]
  reply_id?: string
  status?: string
  reply_due_at?: string
  at?: string
  [key: string]: unknown
}

export interface BusEvent {
  name: StreamEventName | LocalEventName | string
  data: StreamEventData
}
