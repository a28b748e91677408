import { formatTime } from './messages'
import type { DeliveryState } from './types'

export interface DeliveryBadge {
  /** `data-status` of the badge: the delivery's status. */
  key: DeliveryState['status']
  /** Short text in the badge. */
  text: string
  /** One line under it: why the last attempt failed and when the next one is, or ''. */
  detail: string
  cls: string
  /** A dead delivery can be sent again by an operator. */
  retryable: boolean
}

function attempts(n: number): string {
  return n === 1 ? '1 attempt' : `${n} attempts`
}

/**
 * The badge of a reply's delivery (`message.delivery` of GET /conversations/{id}/), or null
 * when there is none to show: delivery off, or a reply stored without one.
 */
export function deliveryBadge(state: DeliveryState | null | undefined): DeliveryBadge | null {
  if (!state) return null
  const error = state.last_error ?? ''
  switch (state.status) {
    case 'delivered':
      return {
        key: 'delivered',
        text: 'Delivered',
        detail: state.delivered_at ? `at ${formatTime(state.delivered_at)}` : '',
        cls: 'badge--delivered',
        retryable: false,
      }
    case 'dead':
      return {
        key: 'dead',
        text: `Not delivered · ${attempts(state.attempts)}`,
        detail: error,
        cls: 'badge--expired',
        retryable: true,
      }
    default: {
      const next = state.next_attempt_at ? `next at ${formatTime(state.next_attempt_at)}` : ''
      return {
        key: 'pending',
        text: state.attempts === 0 ? 'Sending…' : `Retrying · ${attempts(state.attempts)}`,
        detail: [error, state.attempts > 0 ? next : ''].filter(Boolean).join(' · '),
        cls: 'badge--held',
        retryable: false,
      }
    }
  }
}
