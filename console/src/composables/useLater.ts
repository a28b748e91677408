import { onScopeDispose } from 'vue'

/**
 * Promise-based delays owned by a component. When it unmounts, pending delays are cleared and
 * never resolve, so a scripted sequence (burst, delayed NEW_CONVERSATION) stops where it was
 * instead of posting from a panel that is gone; `disposed()` covers awaits other than `later`.
 */
export function useLater() {
  const timers = new Set<ReturnType<typeof setTimeout>>()
  let isDisposed = false

  function later(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (isDisposed) return
      const t = setTimeout(() => {
        timers.delete(t)
        resolve()
      }, ms)
      timers.add(t)
    })
  }

  onScopeDispose(() => {
    isDisposed = true
    for (const t of timers) clearTimeout(t)
    timers.clear()
  })

  return { later, disposed: () => isDisposed }
}
