import { describe, expect, it } from 'vitest'
import { countdownLabel, elapsedFraction, formatSeconds, remainingMs } from '../src/lib/countdown'

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
