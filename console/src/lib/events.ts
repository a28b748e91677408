import type { BusEvent } from './types'

export interface RefreshDecision {
  /** Reload the conversation list. */
  list: boolean
  /** Reload the open conversation (messages, status). */
  conversation: boolean
  /** Reload the open conversation's activity (pending group, held messages). */
  activity: boolean
  /** Reload the global held-messages overview. */
  held: boolean
}

const NONE: RefreshDecision = { list: false, conversation: false, activity: false, held: false }
const ALL: RefreshDecision = { list: true, conversation: true, activity: true, held: true }

/** All conversation ids an event refers to. */
export function eventConversationIds(event: BusEvent): string[] {
  const id = event.data?.conversation_id
  return typeof id === 'string' && id ? [id] : []
}

/**
 * What to reload after an event, given the conversation currently open (or null).
 * Unknown events do nothing; a reconnection reloads everything (events may have been missed),
 * and so does a newly given API token.
 */
export function decideRefresh(event: BusEvent, selectedId: string | null | undefined): RefreshDecision {
  const ids = eventConversationIds(event)
  const isSelected = !!selectedId && ids.includes(selectedId)

  switch (event.name) {
    case 'stream.reconnected':
    case 'auth.changed': // a token was given: what was refused can now be read
      return { ...ALL, conversation: !!selectedId, activity: !!selectedId }
    case 'conversation.created':
      // A conversation appeared; if it is the one open it now exists and held messages were released.
      return { list: true, conversation: isSelected, activity: isSelected, held: true }
    case 'conversation.closed':
      return { list: true, conversation: isSelected, activity: isSelected, held: false }
    case 'message.accepted':
      // message_count / last_message_at change; a group opened or was extended.
      return { list: true, conversation: isSelected, activity: isSelected, held: true }
    case 'message.held':
    case 'message.expired':
      return { list: false, conversation: false, activity: isSelected, held: true }
    case 'reply.created':
    case 'group.closed': // closed for the team's bot: the group leaves the activity panel
      return { list: true, conversation: isSelected, activity: isSelected, held: false }
    case 'generation.failed':
    case 'generation.retried':
      return { list: false, conversation: isSelected, activity: isSelected, held: false }
    case 'delivery.updated':
      // A reply of this conversation was delivered, retried or given up: its badge changes.
      return { list: false, conversation: isSelected, activity: false, held: false }
    case 'local.webhook':
      // Our own simulator posted something: refresh even if the stream is down.
      return { list: true, conversation: isSelected, activity: isSelected, held: true }
    default:
      return { ...NONE }
  }
}

/** Merges decisions (logical OR), used while debouncing a burst of events. */
export function mergeDecisions(a: RefreshDecision, b: RefreshDecision): RefreshDecision {
  return {
    list: a.list || b.list,
    conversation: a.conversation || b.conversation,
    activity: a.activity || b.activity,
    held: a.held || b.held,
  }
}

export function isEmptyDecision(d: RefreshDecision): boolean {
  return !d.list && !d.conversation && !d.activity && !d.held
}

export function emptyDecision(): RefreshDecision {
  return { ...NONE }
}
