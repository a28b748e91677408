import { onScopeDispose, ref, shallowRef, watch } from 'vue'
import {
  changeReceiver,
  DEFAULT_RECEIVER_URL,
  getReceiverEvents,
  mergeEvents,
  normalizeReceiverUrl,
  ReceiverError,
  type ReceiverEvent,
  type ReceiverSettings,
  type ReceiverState,
} from '../lib/receiver'

export interface ReceiverOptions {
  /** Pause between two reads of the receiver's events while it answers, and while it does not. */
  intervalMs?: number
  failedIntervalMs?: number
}

export const URL_KEY = 'console.receiverUrl'
export const OPEN_KEY = 'console.receiverOpen'

/** localStorage, or null where it is disabled. The receiver's URL is no secret (unlike the API token). */
function localStore(): Storage | null {
  try {
    return typeof localStorage === 'undefined' ? null : localStorage
  } catch {
    return null
  }
}

function remember(key: string, value: string): void {
  try {
    localStore()?.setItem(key, value)
  } catch {
    // Storage full or refused: the setting lasts for this page only.
  }
}

/**
 * The reference receiver's control API, read while the panel is open: its latest events
 * (newest first) and state, polled every `intervalMs`, and `change` to make it fail, be slow
 * or go down. The URL and whether the panel is open are kept in localStorage, so a reload
 * keeps watching. Only the newest read may write the state: a new read, a URL change, closing
 * the panel or disposing the owner aborts the one in flight.
 */
export function useReceiver(options: ReceiverOptions = {}) {
  const intervalMs = options.intervalMs ?? 1000
  const failedIntervalMs = options.failedIntervalMs ?? 3000
  const url = ref(localStore()?.getItem(URL_KEY) || DEFAULT_RECEIVER_URL)
  const open = ref(localStore()?.getItem(OPEN_KEY) === '1')
  const state = shallowRef<ReceiverState | null>(null)
  const events = shallowRef<ReceiverEvent[]>([])
  /** Why the receiver cannot be read (then `state` is null). */
  const error = ref<string | null>(null)
  /** Why the last change was refused, until the next one. */
  const actionError = ref<string | null>(null)
  const busy = ref(false)

  let after = 0
  let timer: ReturnType<typeof setTimeout> | null = null
  let inFlight: AbortController | null = null

  function stop(): void {
    if (timer) clearTimeout(timer)
    timer = null
    inFlight?.abort()
    inFlight = null
  }

  function describe(e: unknown, base: string): string {
    if (e instanceof ReceiverError && e.status === 0) {
      return (
        `Receiver unreachable at ${base}: is it running (DEMO_RECEIVER=1 make run), ` +
        `and does it allow this page (--allow-origin ${window.location.origin})?`
      )
    }
    return e instanceof Error ? e.message : 'Unexpected error'
  }

  /** Reads the events newer than the ones shown, and the state; then waits and reads again. */
  async function poll(): Promise<void> {
    stop()
    if (!open.value) return
    const base = normalizeReceiverUrl(url.value)
    if (!base) {
      state.value = null
      error.value = "Enter the URL of the receiver's control API, e.g. " + DEFAULT_RECEIVER_URL
      return
    }
    const ctrl = (inFlight = new AbortController())
    let answered = false
    try {
      let page = await getReceiverEvents(base, after, ctrl.signal)
      if (!ctrl.signal.aborted && page.last < after) {
        // Restarted: its numbers start again, and what was shown is gone from it.
        after = 0
        events.value = []
        page = await getReceiverEvents(base, 0, ctrl.signal)
      }
      if (ctrl.signal.aborted) return
      events.value = mergeEvents(events.value, page.events)
      after = Math.max(after, page.last)
      state.value = page.state
      error.value = null
      answered = true
    } catch (e) {
      if (ctrl.signal.aborted) return
      state.value = null
      error.value = describe(e, base)
    }
    inFlight = null
    timer = setTimeout(() => void poll(), answered ? intervalMs : failedIntervalMs)
  }

  /** PATCH the receiver's settings (one change at a time), then read it again at once. */
  async function change(settings: ReceiverSettings): Promise<void> {
    const base = normalizeReceiverUrl(url.value)
    if (!base || busy.value) return
    busy.value = true
    actionError.value = null
    try {
      state.value = await changeReceiver(base, settings)
    } catch (e) {
      actionError.value = describe(e, base)
    } finally {
      busy.value = false
    }
    void poll()
  }

  watch(url, (value) => {
    remember(URL_KEY, value.trim())
    after = 0
    events.value = []
    state.value = null
    error.value = null
    actionError.value = null
    void poll()
  })
  watch(open, (value) => {
    remember(OPEN_KEY, value ? '1' : '0')
    if (value) void poll()
    else stop()
  })
  onScopeDispose(stop)

  if (open.value) void poll()

  return { url, open, state, events, error, actionError, busy, change, refresh: poll }
}
