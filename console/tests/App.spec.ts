import { flushPromises, mount } from '@vue/test-utils'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import App from '../src/App.vue'
import { jsonResponse, mockFetch } from './helpers'

class FakeEventSource {
  static last: FakeEventSource | null = null
  readyState = 0
  onopen: ((ev: Event) => void) | null = null
  onerror: ((ev: Event) => void) | null = null
  listeners = new Map<string, ((ev: MessageEvent) => void)[]>()
  constructor(public url: string) {
    FakeEventSource.last = this
  }
  addEventListener(type: string, l: (ev: MessageEvent) => void) {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), l])
  }
  close() {
    this.readyState = 2
  }
  emit(type: string, data: unknown) {
    for (const l of this.listeners.get(type) ?? []) l({ data: JSON.stringify(data) } as MessageEvent)
  }
}

beforeEach(() => {
  vi.stubGlobal('EventSource', FakeEventSource)
  window.location.hash = ''
})
afterEach(() => {
  window.location.hash = ''
})

describe('App', () => {
  it('wires the live indicator to the event stream and follows deep links', async () => {
    mockFetch({
      'GET /conversations/c1/activity': () => jsonResponse(200, { conversation_id: 'c1', group: null, held: [] }),
      'GET /conversations/c1/': () =>
        jsonResponse(200, { id: 'c1', status: 'CLOSED', created_at: '', updated_at: '', messages: [] }),
      'GET /conversations/': () => jsonResponse(200, { items: [], next_cursor: null }),
      'GET /held/': () => jsonResponse(200, { items: [] }),
    })
    const w = mount(App, { attachTo: document.body })
    await flushPromises()
    const indicator = () => w.find('[data-testid="live-indicator"]')
    expect(FakeEventSource.last?.url).toBe('/events/stream')
    expect(indicator().attributes('data-status')).toBe('connecting')
    FakeEventSource.last!.onopen!(new Event('open'))
    await flushPromises()
    expect(indicator().attributes('data-status')).toBe('live')
    expect(indicator().text()).toBe('Live')
    FakeEventSource.last!.onerror!(new Event('error'))
    await flushPromises()
    expect(indicator().text()).toBe('Reconnecting…')

    expect(w.find('[data-testid="chat-placeholder"]').exists()).toBe(true)
    window.location.hash = '#/conversations/c1'
    window.dispatchEvent(new HashChangeEvent('hashchange'))
    await flushPromises()
    expect(w.find('[data-testid="chat"]').attributes('data-conversation-id')).toBe('c1')
    expect(w.find('[data-testid="status-badge"]').text()).toBe('Closed')
    expect((w.find('[data-testid="sim-conversation-id"]').element as HTMLInputElement).value).toBe('c1')
    w.unmount()
  })
})
