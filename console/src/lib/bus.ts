import { inject, onBeforeUnmount, type InjectionKey } from 'vue'
import type { BusEvent } from './types'

export type BusHandler = (event: BusEvent) => void

export interface Bus {
  on(handler: BusHandler): () => void
  emit(event: BusEvent): void
}

export function createBus(): Bus {
  const handlers = new Set<BusHandler>()
  return {
    on(handler) {
      handlers.add(handler)
      return () => {
        handlers.delete(handler)
      }
    },
    emit(event) {
      for (const h of [...handlers]) h(event)
    },
  }
}

export const BUS_KEY: InjectionKey<Bus> = Symbol('event-bus')

const fallback = createBus()

export function useBus(): Bus {
  return inject(BUS_KEY, fallback)
}

/** Subscribes for the lifetime of the calling component. */
export function useBusListener(handler: BusHandler): void {
  const off = useBus().on(handler)
  onBeforeUnmount(off)
}
