import { computed, ref } from 'vue'
import { postWebhook, type WebhookResult } from '../lib/api'
import { useBus } from '../lib/bus'
import type { WebhookEvent } from '../lib/types'

export interface LogEntry {
  n: number
  label: string
  status: number
  body: unknown
  at: string
}

/** Posts simulator events and keeps the most recent responses, newest first. */
export function useWebhookLog(keep = 8) {
  const bus = useBus()
  const log = ref<LogEntry[]>([])
  const last = computed(() => log.value[0] ?? null)
  let counter = 0

  async function send(event: WebhookEvent, conversationId: string): Promise<WebhookResult> {
    const result = await postWebhook(event)
    const label = `${event.type} ${event.type === 'NEW_MESSAGE' ? event.data.id.slice(0, 8) : conversationId.slice(0, 8)}`
    log.value = [
      { n: ++counter, label, status: result.status, body: result.body, at: new Date().toLocaleTimeString() },
      ...log.value,
    ].slice(0, keep)
    // Refresh views right away, even if the live stream is not connected.
    bus.emit({ name: 'local.webhook', data: { conversation_id: conversationId } })
    return result
  }

  return { log, last, send }
}
