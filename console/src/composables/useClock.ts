import { onScopeDispose, ref, toValue, watch, type MaybeRefOrGetter, type Ref } from 'vue'

// One clock for the whole page: every countdown on screen reads the same `now`, so they stay in
// step, and an idle page (nothing counting down) runs no interval at all.
const now = ref(Date.now())
/** Subscribers that currently need ticking, with the period each asks for. */
const ticking = new Map<symbol, number>()
let timer: ReturnType<typeof setInterval> | null = null
let period = 0

const DEFAULT_INTERVAL_MS = 200
// Guards against a 0/negative/NaN period turning into a busy loop.
const MIN_INTERVAL_MS = 16

function tick(): void {
  now.value = Date.now()
}

/** Runs the interval at the shortest period asked for, or not at all when nobody needs it. */
function reschedule(): void {
  const wanted = ticking.size ? Math.min(...ticking.values()) : 0
  if (wanted === period) return
  if (timer) clearInterval(timer)
  timer = null
  period = wanted
  if (wanted > 0) timer = setInterval(tick, wanted)
}

export interface ClockOptions {
  /** Whether this subscriber needs `now` to advance (e.g. only while a countdown is shown). Default true. */
  active?: MaybeRefOrGetter<boolean>
  /** Tick period this subscriber wants; the shared interval uses the shortest one. Default 200 ms. */
  intervalMs?: MaybeRefOrGetter<number>
}

export interface Clock {
  /** Shared current time in ms; only advances while at least one subscriber is active. */
  now: Readonly<Ref<number>>
  /** Sets `now` to the current time at once (e.g. when fresh data arrives between ticks). */
  sync: () => void
}

/** Subscribes the calling component (or effect scope) to the shared clock until it is disposed. */
export function useClock(options: ClockOptions = {}): Clock {
  const key = Symbol('clock')
  watch(
    [() => toValue(options.active ?? true), () => toValue(options.intervalMs ?? DEFAULT_INTERVAL_MS)],
    ([on, ms]) => {
      if (on) {
        // While nobody ticked, `now` went stale: a new subscriber must not start from an old time.
        if (!ticking.has(key)) tick()
        ticking.set(key, Math.max(MIN_INTERVAL_MS, Number.isFinite(ms) ? ms : DEFAULT_INTERVAL_MS))
      } else {
        ticking.delete(key)
      }
      reschedule()
    },
    { immediate: true },
  )
  onScopeDispose(() => {
    ticking.delete(key)
    reschedule()
  })
  return { now, sync: tick }
}
