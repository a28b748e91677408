import type { Message, PendingGroup } from './types'

export interface ChatItem {
  message: Message
  /** Inbound message that belongs to the open group (its automatic reply is not sent yet). */
  pending: boolean
}

/** Messages in chronological order (stable for equal/unparsable timestamps). */
export function sortMessages(messages: readonly Message[]): Message[] {
  return messages
    .map((m, i) => ({ m, i, t: Date.parse(m.timestamp) }))
    .sort((a, b) => {
      const ta = Number.isNaN(a.t) ? Infinity : a.t
      const tb = Number.isNaN(b.t) ? Infinity : b.t
      if (ta !== tb) return ta < tb ? -1 : 1
      return a.i - b.i
    })
    .map((x) => x.m)
}

/** Sorts messages and marks the inbound ones that are waiting in the open group. */
export function toChatItems(messages: readonly Message[], group: PendingGroup | null | undefined): ChatItem[] {
  const pendingIds = new Set(group?.message_ids ?? [])
  return sortMessages(messages).map((message) => ({
    message,
    pending: message.type === 'INBOUND' && pendingIds.has(message.id),
  }))
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
