import { formatTime } from './messages'
import type { Generation } from './types'

/** How a group closed for the team's bot shows while its reply is not written. */
export interface BotBadge {
  /** `data-status`: the generation's status. */
  key: 'pending' | 'failed'
  text: string
  /** Calls made, the last error and the next call, or ''. */
  detail: string
  cls: string
  /** A failed group can be sent to the bot again by an operator. */
  retryable: boolean
}

function calls(n: number): string {
  return n === 1 ? '1 call' : `${n} calls`
}

/**
 * The groups of a conversation still waiting for the bot (pending) or given up on (failed),
 * oldest closure first, once each: what GET /generations/ answered for both statuses.
 */
export function waitingGroups(items: readonly Generation[]): Generation[] {
  const byReply = new Map<string, Generation>()
  for (const g of items) if (g.status === 'pending' || g.status === 'failed') byReply.set(g.reply_id, g)
  return [...byReply.values()].sort(
    (a, b) => Date.parse(a.created_at) - Date.parse(b.created_at) || a.reply_id.localeCompare(b.reply_id),
  )
}

/** The badge of a group waiting for the bot, or given up on. */
export function botBadge(g: Generation, nowMs: number = Date.now()): BotBadge {
  if (g.status === 'failed') {
    return {
      key: 'failed',
      text: 'Your bot failed',
      detail: [g.attempts ? calls(g.attempts) : '', g.last_error ?? ''].filter(Boolean).join(' · '),
      cls: 'badge--expired',
      retryable: true,
    }
  }
  const next = g.next_attempt_at ? Date.parse(g.next_attempt_at) : NaN
  const retrying = !!g.last_error && next > nowMs
  return {
    key: 'pending',
    text: 'Waiting for your bot',
    detail: [
      g.attempts ? calls(g.attempts) : '',
      g.last_error ?? '',
      retrying ? `next at ${formatTime(g.next_attempt_at)}` : '',
    ]
      .filter(Boolean)
      .join(' · '),
    cls: 'badge--held',
    retryable: false,
  }
}

/** Inbound message id -> the status of the group it waits in (only messages of such groups). */
export function botStatusByMessage(groups: readonly Generation[]): Map<string, 'pending' | 'failed'> {
  const found = new Map<string, 'pending' | 'failed'>()
  for (const g of groups) {
    if (g.status !== 'pending' && g.status !== 'failed') continue
    for (const id of g.message_ids) found.set(id, g.status)
  }
  return found
}
