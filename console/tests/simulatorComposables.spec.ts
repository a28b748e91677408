import { flushPromises } from '@vue/test-utils'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { useLater } from '../src/composables/useLater'
import { useWebhookLog } from '../src/composables/useWebhookLog'
import { newConversationEvent, newMessageEvent } from '../src/lib/api'
import { BUS_KEY, createBus } from '../src/lib/bus'
import { jsonResponse, mockFetch, mountComposable, useFakeClock } from './helpers'

beforeEach(() => useFakeClock())
afterEach(() => vi.useRealTimers())

describe('useLater', () => {
  it('resolves after the delay', async () => {
    const { result } = mountComposable(() => useLater())
    const done = vi.fn()
    void result.later(1000).then(done)
    vi.advanceTimersByTime(999)
    await flushPromises()
    expect(done).not.toHaveBeenCalled()
    vi.advanceTimersByTime(1)
    await flushPromises()
    expect(done).toHaveBeenCalled()
    expect(vi.getTimerCount()).toBe(0)
  })

  it('clears pending delays on unmount, and later ones never start', async () => {
    const { result, wrapper } = mountComposable(() => useLater())
    const done = vi.fn()
    void result.later(1000).then(done)
    void result.later(3000).then(done)
    expect(result.disposed()).toBe(false)
    wrapper.unmount()
    expect(result.disposed()).toBe(true)
    expect(vi.getTimerCount()).toBe(0)
    void result.later(10).then(done)
    expect(vi.getTimerCount()).toBe(0)
    vi.advanceTimersByTime(5000)
    await flushPromises()
    expect(done).not.toHaveBeenCalled()
  })
})

describe('useWebhookLog', () => {
  it('logs each response newest first, keeps the last few, and tells the bus', async () => {
    let status = 200
    mockFetch({ 'POST /webhook/': () => jsonResponse(status++, {}) })
    const bus = createBus()
    const seen: unknown[] = []
    bus.on((e) => seen.push(e))
    const { result } = mountComposable(() => useWebhookLog(3), { [BUS_KEY as symbol]: bus })
    expect(result.last.value).toBeNull()

    for (let i = 0; i < 4; i++) await result.send(newConversationEvent(`conv-${i}-abcdefgh`), `conv-${i}-abcdefgh`)
    const res = await result.send(newMessageEvent('msg-12345678-x', 'c9', 'hi'), 'c9')
    expect(res.status).toBe(204)
    expect(result.log.value.map((e) => [e.n, e.status, e.label])).toEqual([
      [5, 204, 'NEW_MESSAGE msg-1234'],
      [4, 203, 'NEW_CONVERSATION conv-3-a'],
      [3, 202, 'NEW_CONVERSATION conv-2-a'],
    ])
    expect(result.last.value?.n).toBe(5)
    expect(seen.at(-1)).toEqual({ name: 'local.webhook', data: { conversation_id: 'c9' } })
    expect(seen).toHaveLength(5)
  })
})
