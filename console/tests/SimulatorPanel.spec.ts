import { flushPromises, mount } from '@vue/test-utils'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import SimulatorPanel from '../src/components/SimulatorPanel.vue'
import { BUS_KEY, createBus } from '../src/lib/bus'
import { jsonResponse, mockFetch, postedBodies, useFakeClock } from './helpers'

let n = 0
beforeEach(() => {
  n = 0
  useFakeClock('2026-01-01T12:00:00.000Z')
  vi.stubGlobal('crypto', { randomUUID: () => `uuid-${++n}` })
})
afterEach(() => vi.useRealTimers())

const webhook = () =>
  mockFetch({
    'POST /webhook/': (_url, init) => {
      const type = JSON.parse(String(init?.body)).type
      if (type === 'NEW_CONVERSATION') return jsonResponse(201, { id: 'x', status: 'OPEN' })
      if (type === 'CLOSE_CONVERSATION') return jsonResponse(200, { id: 'x', status: 'CLOSED' })
      return jsonResponse(202, { status: 'accepted' })
    },
  })

describe('SimulatorPanel', () => {
  it('creates a conversation with a random id, selects it and shows the response', async () => {
    const f = webhook()
    const w = mount(SimulatorPanel)
    await w.find('[data-testid="sim-new-conversation"]').trigger('click')
    await flushPromises()
    expect(f.mock.calls[0][0]).toBe('/webhook/')
    expect(postedBodies(f)).toEqual([
      { type: 'NEW_CONVERSATION', timestamp: '2026-01-01T12:00:00.000+00:00', data: { id: 'uuid-1' } },
    ])
    expect(w.emitted('select')).toEqual([['uuid-1']])
    const response = w.find('[data-testid="sim-response"]')
    expect(response.attributes('data-status')).toBe('201')
    expect(response.text()).toContain('"status": "OPEN"')
  })

  it('sends a customer message to the selected conversation', async () => {
    const f = webhook()
    const w = mount(SimulatorPanel, { props: { conversationId: 'conv-7' } })
    const send = w.find('[data-testid="sim-send-message"]')
    expect(send.attributes('disabled')).toBeDefined()
    await w.find('[data-testid="sim-message-input"]').setValue('Olá, preciso de ajuda')
    await send.trigger('submit')
    await flushPromises()
    expect(postedBodies(f)).toEqual([
      {
        type: 'NEW_MESSAGE',
        timestamp: '2026-01-01T12:00:00.000+00:00',
        data: { id: 'uuid-1', conversation_id: 'conv-7', content: 'Olá, preciso de ajuda' },
      },
    ])
    expect(w.find('[data-testid="sim-response"]').attributes('data-status')).toBe('202')
    expect((w.find('[data-testid="sim-message-input"]').element as HTMLInputElement).value).toBe('')
  })

  it('sends a burst of 3 messages 1 s apart and notifies the bus', async () => {
    const f = webhook()
    const bus = createBus()
    const seen: string[] = []
    bus.on((e) => seen.push(`${e.name}:${e.data.conversation_id}`))
    const w = mount(SimulatorPanel, {
      props: { conversationId: 'conv-7' },
      global: { provide: { [BUS_KEY as symbol]: bus } },
    })
    await w.find('[data-testid="sim-burst"]').trigger('click')
    await flushPromises()
    expect(postedBodies(f)).toHaveLength(1)
    vi.advanceTimersByTime(1000)
    await flushPromises()
    expect(postedBodies(f)).toHaveLength(2)
    vi.advanceTimersByTime(1000)
    await flushPromises()
    const bodies = postedBodies(f)
    expect(bodies.map((b) => b.data.content)).toEqual(['Burst message 1/3', 'Burst message 2/3', 'Burst message 3/3'])
    expect(bodies.every((b) => b.type === 'NEW_MESSAGE' && b.data.conversation_id === 'conv-7')).toBe(true)
    expect(new Set(bodies.map((b) => b.data.id)).size).toBe(3)
    expect(bodies[2].timestamp).toBe('2026-01-01T12:00:02.000+00:00')
    expect(seen).toEqual(['local.webhook:conv-7', 'local.webhook:conv-7', 'local.webhook:conv-7'])
  })

  it('sends an out-of-order message, then NEW_CONVERSATION after the configured delay', async () => {
    const f = webhook()
    const w = mount(SimulatorPanel)
    await w.find('[data-testid="sim-delay"]').setValue('3')
    await w.find('[data-testid="sim-out-of-order"]').trigger('click')
    await flushPromises()
    expect(w.emitted('select')).toEqual([['uuid-1']])
    expect(postedBodies(f).map((b) => b.type)).toEqual(['NEW_MESSAGE'])
    expect(postedBodies(f)[0].data.conversation_id).toBe('uuid-1')
    vi.advanceTimersByTime(2999)
    await flushPromises()
    expect(postedBodies(f)).toHaveLength(1)
    vi.advanceTimersByTime(1)
    await flushPromises()
    expect(postedBodies(f)[1]).toEqual({
      type: 'NEW_CONVERSATION',
      timestamp: '2026-01-01T12:00:03.000+00:00',
      data: { id: 'uuid-1' },
    })
  })

  it('uses a 2 s default delay for out-of-order', async () => {
    const f = webhook()
    const w = mount(SimulatorPanel)
    await w.find('[data-testid="sim-out-of-order"]').trigger('click')
    await flushPromises()
    vi.advanceTimersByTime(2000)
    await flushPromises()
    expect(postedBodies(f).map((b) => b.type)).toEqual(['NEW_MESSAGE', 'NEW_CONVERSATION'])
  })

  it('closes the target conversation and shows error responses', async () => {
    const f = mockFetch({
      'POST /webhook/': () =>
        jsonResponse(404, { code: 404, status: 'Not Found', message: 'Unknown conversation', error: 'not_found' }),
    })
    const w = mount(SimulatorPanel, { props: { conversationId: 'conv-7' } })
    await w.find('[data-testid="sim-close"]').trigger('click')
    await flushPromises()
    expect(postedBodies(f)).toEqual([
      { type: 'CLOSE_CONVERSATION', timestamp: '2026-01-01T12:00:00.000+00:00', data: { id: 'conv-7' } },
    ])
    const response = w.find('[data-testid="sim-response"]')
    expect(response.attributes('data-status')).toBe('404')
    expect(response.text()).toContain('not_found')
  })

  it('reports a network error as status 0', async () => {
    mockFetch({})
    const w = mount(SimulatorPanel, { props: { conversationId: 'conv-7' } })
    await w.find('[data-testid="sim-close"]').trigger('click')
    await flushPromises()
    expect(w.find('[data-testid="sim-status"]').text()).toBe('network error')
  })
})
