import { reactive } from 'vue'
import { describeError, retryDelivery } from '../lib/api'

/**
 * The Retry button of dead replies: POST /deliveries/{id}/retry (with the API token), then
 * `reload` so the badge shows the delivery's new state. A refusal (e.g. 409 when it was no
 * longer dead) is kept per reply until its next try; the reload happens either way.
 */
export function useDeliveryRetry(reload: () => Promise<void> | void) {
  const busy = reactive(new Set<string>())
  const errors = reactive(new Map<string, string>())

  async function retry(replyId: string): Promise<void> {
    if (busy.has(replyId)) return
    busy.add(replyId)
    errors.delete(replyId)
    try {
      await retryDelivery(replyId)
    } catch (e) {
      errors.set(replyId, describeError(e))
    } finally {
      busy.delete(replyId)
    }
    await reload()
  }

  function reset(): void {
    errors.clear()
  }

  return { busy, errors, retry, reset }
}
