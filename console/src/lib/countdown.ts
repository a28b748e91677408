import type { Activity, Generation } from './types'

/** Milliseconds left until `dueIso` (never negative; 0 for an unparsable date). */
export function remainingMs(dueIso: string | null | undefined, nowMs: number): number {
  if (!dueIso) return 0
  const due = Date.parse(dueIso)
  if (Number.isNaN(due)) return 0
  return Math.max(0, due - nowMs)
}

/** Fraction (0..1) of the wait between `startIso` and `dueIso` that has elapsed. */
export function elapsedFraction(startIso: string, dueIso: string, nowMs: number): number {
  const start = Date.parse(startIso)
  const due = Date.parse(dueIso)
  if (Number.isNaN(start) || Number.isNaN(due) || due <= start) return 1
  return Math.min(1, Math.max(0, (nowMs - start) / (due - start)))
}

/** "3.4 s" — one decimal, rounded up so it only shows "0.0 s" at the very end. */
export function formatSeconds(ms: number): string {
  const tenths = Math.ceil(Math.max(0, ms) / 100)
  return `${(tenths / 10).toFixed(1)} s`
}

/** Label of the reply countdown: "Reply in 3.4 s" or "Reply due". */
export function countdownLabel(ms: number): string {
  return ms > 0 ? `Reply in ${formatSeconds(ms)}` : 'Reply due'
}

/**
 * Milliseconds until the chat view should reload by itself: shortly after the open group's reply is
 * due, a held message's hold ends, or a group waiting for the team's bot is due to be asked again,
 * whichever comes first (so the view settles even without the live stream). Null when nothing is
 * pending. Capped so a far-off or skewed deadline is re-checked.
 */
export function followUpDelayMs(
  activity: Activity | null | undefined,
  nowMs: number,
  capMs = 60_000,
  generations: readonly Generation[] = [],
): number | null {
  const deadlines: number[] = []
  if (activity?.group) deadlines.push(Date.parse(activity.group.reply_due_at) + 1500)
  for (const h of activity?.held ?? []) if (h.status === 'HELD') deadlines.push(Date.parse(h.expires_at) + 1000)
  for (const g of generations) {
    if (g.status === 'pending' && g.next_attempt_at) deadlines.push(Date.parse(g.next_attempt_at) + 1500)
  }
  const next = deadlines.filter((d) => !Number.isNaN(d) && d > nowMs).sort((x, y) => x - y)[0]
  return next === undefined ? null : Math.min(next - nowMs, capMs)
}
