import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { effectScope, nextTick, ref, type EffectScope } from 'vue'
import { useClock, type ClockOptions } from '../src/composables/useClock'
import { useFakeClock } from './helpers'

const T0 = Date.parse('2026-01-01T12:00:00.000Z')
let scopes: EffectScope[] = []

function subscribe(options?: ClockOptions) {
  const scope = effectScope()
  scopes.push(scope)
  const clock = scope.run(() => useClock(options))!
  return { ...clock, stop: () => scope.stop() }
}

beforeEach(() => useFakeClock())
afterEach(() => {
  for (const s of scopes) s.stop()
  scopes = []
  vi.useRealTimers()
})

describe('useClock', () => {
  it('shares one interval and one `now` between subscribers', () => {
    const a = subscribe()
    const b = subscribe()
    expect(vi.getTimerCount()).toBe(1)
    expect(a.now).toBe(b.now)
    vi.advanceTimersByTime(600)
    expect(a.now.value).toBe(T0 + 600)
    expect(b.now.value).toBe(T0 + 600)
  })

  it('starts with the first subscriber and stops when the last one leaves', () => {
    expect(vi.getTimerCount()).toBe(0)
    const a = subscribe()
    const b = subscribe()
    a.stop()
    expect(vi.getTimerCount()).toBe(1)
    vi.advanceTimersByTime(200)
    expect(b.now.value).toBe(T0 + 200)
    b.stop()
    expect(vi.getTimerCount()).toBe(0)
    vi.advanceTimersByTime(1000)
    expect(b.now.value).toBe(T0 + 200)
  })

  it('ticks only while some subscriber is active', async () => {
    const needsA = ref(false)
    const needsB = ref(false)
    const a = subscribe({ active: needsA })
    subscribe({ active: () => needsB.value })
    expect(vi.getTimerCount()).toBe(0)

    needsA.value = true
    await nextTick()
    expect(vi.getTimerCount()).toBe(1)
    needsB.value = true
    await nextTick()
    expect(vi.getTimerCount()).toBe(1)

    needsA.value = false
    await nextTick()
    expect(vi.getTimerCount()).toBe(1)
    needsB.value = false
    await nextTick()
    expect(vi.getTimerCount()).toBe(0)
    const frozen = a.now.value
    vi.advanceTimersByTime(1000)
    expect(a.now.value).toBe(frozen)
  })

  it('brings a stale `now` up to date when ticking resumes, and on sync()', async () => {
    const active = ref(false)
    const a = subscribe({ active })
    vi.advanceTimersByTime(5000)
    active.value = true
    await nextTick()
    expect(a.now.value).toBe(T0 + 5000)

    vi.advanceTimersByTime(50) // between two ticks
    expect(a.now.value).toBe(T0 + 5000)
    a.sync()
    expect(a.now.value).toBe(T0 + 5050)
  })

  it('runs at the shortest period asked for, and slows down when that subscriber leaves', () => {
    const slow = subscribe({ intervalMs: 1000 })
    const fast = subscribe({ intervalMs: 100 })
    vi.advanceTimersByTime(100)
    expect(slow.now.value).toBe(T0 + 100)
    fast.stop()
    expect(vi.getTimerCount()).toBe(1)
    vi.advanceTimersByTime(900)
    expect(slow.now.value).toBe(T0 + 100)
    vi.advanceTimersByTime(100)
    expect(slow.now.value).toBe(T0 + 1100)
  })

  it('ignores an unusable period instead of spinning', () => {
    const a = subscribe({ intervalMs: 0 })
    vi.advanceTimersByTime(10)
    expect(a.now.value).toBe(T0)
    vi.advanceTimersByTime(6)
    expect(a.now.value).toBe(T0 + 16)
  })
})
