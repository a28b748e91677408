import { reactive } from 'vue'
import { describeError } from '../lib/api'

/**
 * Retry buttons (a dead reply's delivery, a group the team's bot failed): `send(id)` (e.g.
 * POST /deliveries/{id}/retry, with the API token), then `reload` so the view shows the new
 * state. One request at a time per id; a refusal (e.g. 409 when it was no longer dead) is kept
 * per id until its next try; the reload happens either way.
 */
export function useRetry(send: (id: string) => Promise<unknown>, reload: () => Promise<void> | void) {
  const busy = reactive(new Set<string>())
  const errors = reactive(new Map<string, string>())

  async function retry(id: string): Promise<void> {
    if (busy.has(id)) return
    busy.add(id)
    errors.delete(id)
    try {
      await send(id)
    } catch (e) {
      errors.set(id, describeError(e))
    } finally {
      busy.delete(id)
    }
    await reload()
  }

  function reset(): void {
    errors.clear()
  }

  return { busy, errors, retry, reset }
}
