import { mount } from '@vue/test-utils'
import { defineComponent } from 'vue'
import { vi, type Mock } from 'vitest'
import type { ConversationSummary } from '../src/lib/types'

export interface FakeResponse {
  ok: boolean
  status: number
  text: () => Promise<string>
}

/** Minimal Response stand-in: resolves in one microtask, no streams (deterministic with fake timers). */
export function jsonResponse(status: number, body: unknown): FakeResponse {
  return {
    ok: status >= 200 && status < 300,
    status,
    text: async () => (body === undefined ? '' : JSON.stringify(body)),
  }
}

export type Route = (url: string, init?: RequestInit) => FakeResponse | Promise<FakeResponse>

/**
 * Stubs global fetch. Routes are matched by "METHOD path" prefix (e.g. "GET /conversations/abc/")
 * or by path prefix alone; the longest matching key wins. Unmatched requests reject (network error).
 */
export function mockFetch(routes: Record<string, Route>): Mock {
  const fn = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = String(input)
    const method = (init?.method ?? 'GET').toUpperCase()
    const path = url.split('?')[0]
    const keys = Object.keys(routes)
      .filter((k) => {
        const [m, p] = k.includes(' ') ? k.split(' ') : [null, k]
        return (!m || m === method) && path.startsWith(p)
      })
      .sort((a, b) => b.length - a.length)
    if (!keys.length) throw new TypeError(`Failed to fetch ${method} ${url}`)
    return routes[keys[0]](url, init) as unknown as Response
  })
  vi.stubGlobal('fetch', fn)
  return fn
}

/** Parsed JSON bodies of the POSTs made through a mocked fetch. */
export function postedBodies(fetchMock: Mock): any[] {
  return fetchMock.mock.calls
    .filter(([, init]) => (init as RequestInit | undefined)?.method === 'POST')
    .map(([, init]) => JSON.parse(String((init as RequestInit).body)))
}

/** Fake timers that leave setImmediate real, so flushPromises() keeps working. */
export function useFakeClock(iso = '2026-01-01T12:00:00.000Z'): void {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] })
  vi.setSystemTime(new Date(iso))
}

export function isoOffset(ms: number): string {
  return new Date(Date.now() + ms).toISOString()
}

/** Runs a composable inside a mounted component (inject/provide and unmount work as in the app). */
export function mountComposable<T>(setup: () => T, provide: Record<symbol, unknown> = {}) {
  let result!: T
  const wrapper = mount(
    defineComponent({
      setup() {
        result = setup()
        return () => null
      },
    }),
    { global: { provide } },
  )
  return { result, wrapper }
}

/** A response the test releases by hand, to order answers of concurrent requests. */
export function deferred<T = FakeResponse>() {
  let resolve!: (value: T) => void
  const promise = new Promise<T>((r) => (resolve = r))
  return { promise, resolve }
}

/** A list row created `second` seconds after 2026-01-01T00:00:00Z (so rows sort by it). */
export function summary(id: string, second: number): ConversationSummary {
  const at = new Date(Date.UTC(2026, 0, 1, 0, 0, second)).toISOString()
  return { id, status: 'OPEN', created_at: at, updated_at: at, message_count: 0, last_message_at: null }
}

/** How many times a mocked fetch read conversation `id` (each load also reads its activity and generations). */
export function loadsOf(fetchMock: Mock, id: string): number {
  return fetchMock.mock.calls.filter(([url]) => url === `/conversations/${id}/`).length
}
