export interface Debounced {
  (): void
  cancel(): void
  flush(): void
}

/** Trailing-edge debounce with a max wait so a steady stream of events still refreshes. */
export function debounce(fn: () => void, waitMs: number, maxWaitMs = waitMs * 4): Debounced {
  let timer: ReturnType<typeof setTimeout> | null = null
  let firstCall: number | null = null
  const run = () => {
    if (timer) clearTimeout(timer)
    timer = null
    firstCall = null
    fn()
  }
  const d = (() => {
    const now = Date.now()
    if (firstCall === null) firstCall = now
    if (timer) clearTimeout(timer)
    const wait = Math.min(waitMs, Math.max(0, firstCall + maxWaitMs - now))
    timer = setTimeout(run, wait)
  }) as Debounced
  d.cancel = () => {
    if (timer) clearTimeout(timer)
    timer = null
    firstCall = null
  }
  d.flush = () => {
    if (timer) run()
  }
  return d
}
