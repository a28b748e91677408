import type { Message, PendingGroup } from './types'

export interface ChatItem {
  message: Message
  /** Inbound message that belongs to the open group (its automatic reply is not sent yet). */
  pending: boolean
  /** Inbound message of a closed group whose reply the team's bot has not written yet. */
  bot: 'pending' | 'failed' | null
}

/**
 * Chat items in the order the service recorded the messages, which is the order
 * `GET /conversations/{id}/` lists them in (by arrival). Never by `timestamp`: a message's
 * timestamp is its sender's clock and a reply's is the server's, so sorting by it can put a
 * reply above the messages it answers. Marks the inbound ones waiting in the open group, and
 * those of closed groups waiting for the team's bot (`bot`: message id -> that group's status).
 */
export function toChatItems(
  messages: readonly Message[],
  group: PendingGroup | null | undefined,
  bot: ReadonlyMap<string, 'pending' | 'failed'> = new Map(),
): ChatItem[] {
  const pendingIds = new Set(group?.message_ids ?? [])
  return messages.map((message) => {
    const inbound = message.type === 'INBOUND'
    return {
      message,
      pending: inbound && pendingIds.has(message.id),
      bot: (inbound && bot.get(message.id)) || null,
    }
  })
}

/** Number of pending inbound messages. */
export function pendingCount(items: readonly ChatItem[]): number {
  return items.filter((i) => i.pending).length
}

/** Short local time for a bubble, e.g. "14:03:27". Falls back to the raw string. */
export function formatTime(iso: string | null | undefined): string {
  if (!iso) return ''
  const d = new Date(iso)
  if (Number.isNaN(d.getTime())) return iso
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' })
}

/** Short local date and time, e.g. for list rows. */
export function formatDateTime(iso: string | null | undefined): string {
  if (!iso) return ''
  const d = new Date(iso)
  if (Number.isNaN(d.getTime())) return iso
  return d.toLocaleString([], {
    month: 'short',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
  })
}
