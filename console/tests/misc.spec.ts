import { afterEach, describe, expect, it, vi } from 'vitest'
import { createBus } from '../src/lib/bus'
import { debounce } from '../src/lib/debounce'
import { appendPage, mergeFirstPage } from '../src/lib/list'
import { conversationHash, parseHash } from '../src/lib/router'
import { randomId } from '../src/lib/uuid'
import { summary, useFakeClock } from './helpers'


describe('router', () => {
  it('parses deep links', () => {
    expect(parseHash('#/conversations/abc-123')).toEqual({ conversationId: 'abc-123' })
    expect(parseHash('#/conversations/abc-123/')).toEqual({ conversationId: 'abc-123' })
    expect(parseHash('#/conversations/a%20b')).toEqual({ conversationId: 'a b' })
    expect(parseHash('')).toEqual({ conversationId: null })
    expect(parseHash('#/other')).toEqual({ conversationId: null })
  })
  it('round-trips ids', () => {
    expect(parseHash(conversationHash('x/y z')).conversationId).toBe('x/y z')
  })
})

describe('list paging', () => {
  it('replaces everything when only one page is loaded', () => {
    expect(mergeFirstPage([summary('a', 1)], [summary('b', 2)], 1).map((c) => c.id)).toEqual(['b'])
  })
  it('keeps older loaded pages after a live refresh of page one', () => {
    const existing = [summary('d', 4), summary('c', 3), summary('b', 2), summary('a', 1)]
    const fresh = [summary('e', 5), summary('d', 4)]
    expect(mergeFirstPage(existing, fresh, 2).map((c) => c.id)).toEqual(['e', 'd', 'c', 'b', 'a'])
  })
  it('appends pages without duplicates', () => {
    expect(appendPage([summary('b', 2), summary('a', 1)], [summary('a', 1), summary('z', 0)]).map((c) => c.id)).toEqual([
      'b',
      'a',
      'z',
    ])
  })
})

describe('uuid', () => {
  afterEach(() => vi.unstubAllGlobals())
  const re = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/
  it('uses crypto.randomUUID when available', () => {
    vi.stubGlobal('crypto', { randomUUID: () => 'fixed' })
    expect(randomId()).toBe('fixed')
  })
  it('falls back to getRandomValues outside secure contexts', () => {
    vi.stubGlobal('crypto', { getRandomValues: (a: Uint8Array) => a.fill(0xff) })
    const id = randomId()
    expect(id).toMatch(re)
  })
})

describe('bus and debounce', () => {
  afterEach(() => vi.useRealTimers())
  it('delivers events until unsubscribed', () => {
    const bus = createBus()
    const seen: string[] = []
    const off = bus.on((e) => seen.push(e.name))
    bus.emit({ name: 'a', data: {} })
    off()
    bus.emit({ name: 'b', data: {} })
    expect(seen).toEqual(['a'])
  })
  it('debounces with a max wait', () => {
    useFakeClock()
    const fn = vi.fn()
    const d = debounce(fn, 100, 250)
    d()
    vi.advanceTimersByTime(90)
    d()
    vi.advanceTimersByTime(90)
    d()
    expect(fn).not.toHaveBeenCalled()
    vi.advanceTimersByTime(80) // 260 ms after the first call: max wait reached
    expect(fn).toHaveBeenCalledTimes(1)
    d()
    d.cancel()
    vi.advanceTimersByTime(500)
    expect(fn).toHaveBeenCalledTimes(1)
  })
})
