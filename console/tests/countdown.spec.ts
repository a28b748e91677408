import { describe, expect, it } from 'vitest'
import { countdownLabel, elapsedFraction, followUpDelayMs, formatSeconds, remainingMs } from '../src/lib/countdown'
import type { Activity, HeldMessage } from '../src/lib/types'

const T0 = Date.parse('2026-01-01T00:00:00Z')

describe('countdown', () => {
  it('computes the remaining time, clamped at zero', () => {
    expect(remainingMs('2026-01-01T00:00:05+00:00', T0)).toBe(5000)
    expect(remainingMs('2026-01-01T00:00:05+00:00', T0 + 4750)).toBe(250)
    expect(remainingMs('2026-01-01T00:00:05+00:00', T0 + 9000)).toBe(0)
    expect(remainingMs('not a date', T0)).toBe(0)
    expect(remainingMs(null, T0)).toBe(0)
  })

  it('honours offsets other than UTC', () => {
    expect(remainingMs('2026-01-01T01:00:03+01:00', T0)).toBe(3000)
  })

  it('formats seconds rounding up to tenths', () => {
    expect(formatSeconds(5000)).toBe('5.0 s')
    expect(formatSeconds(4901)).toBe('5.0 s')
    expect(formatSeconds(4900)).toBe('4.9 s')
    expect(formatSeconds(1)).toBe('0.1 s')
    expect(formatSeconds(0)).toBe('0.0 s')
    expect(formatSeconds(-50)).toBe('0.0 s')
  })

  it('labels the countdown and says "Reply due" at zero', () => {
    expect(countdownLabel(3400)).toBe('Reply in 3.4 s')
    expect(countdownLabel(0)).toBe('Reply due')
  })

  it('computes the elapsed fraction of the wait', () => {
    const start = '2026-01-01T00:00:00Z'
    const due = '2026-01-01T00:00:05Z'
    expect(elapsedFraction(start, due, T0)).toBe(0)
    expect(elapsedFraction(start, due, T0 + 2500)).toBe(0.5)
    expect(elapsedFraction(start, due, T0 + 9000)).toBe(1)
    expect(elapsedFraction(start, due, T0 - 1000)).toBe(0)
    expect(elapsedFraction(due, start, T0)).toBe(1)
  })
})

describe('followUpDelayMs', () => {
  const at = (ms: number) => new Date(T0 + ms).toISOString()
  const held = (expiresIn: number, status: HeldMessage['status'] = 'HELD'): HeldMessage => ({
    id: `h${expiresIn}`,
    conversation_id: 'c1',
    content: '',
    received_at: at(-1000),
    expires_at: at(expiresIn),
    status,
  })
  const activity = (group: Activity['group'], h: HeldMessage[] = []): Activity => ({ conversation_id: 'c1', group, held: h })

  it('is null when nothing is pending', () => {
    expect(followUpDelayMs(null, T0)).toBeNull()
    expect(followUpDelayMs(activity(null, [held(5000, 'EXPIRED')]), T0)).toBeNull()
  })

  it('picks the earliest of reply due (+1.5 s) and hold end (+1 s)', () => {
    const group = { message_ids: ['m1'], last_arrival_at: at(-1000), reply_due_at: at(4000) }
    expect(followUpDelayMs(activity(group), T0)).toBe(5500)
    expect(followUpDelayMs(activity(group, [held(3000)]), T0)).toBe(4000)
    expect(followUpDelayMs(activity(group, [held(6000)]), T0)).toBe(5500)
  })

  it('skips deadlines already passed and caps far ones', () => {
    const due = { message_ids: ['m1'], last_arrival_at: at(-9000), reply_due_at: at(-4000) }
    expect(followUpDelayMs(activity(due), T0)).toBeNull()
    expect(followUpDelayMs(activity(null, [held(600_000)]), T0)).toBe(60_000)
  })
})
