import { onScopeDispose, ref, shallowRef, toValue, watch, type MaybeRefOrGetter } from 'vue'
import { ApiError, describeError, getActivity, getConversation, listGenerations } from '../lib/api'
import { useBus } from '../lib/bus'
import { followUpDelayMs } from '../lib/countdown'
import { debounce } from '../lib/debounce'
import { decideRefresh } from '../lib/events'
import { waitingGroups } from '../lib/generation'
import type { Activity, ConversationDetail, Generation } from '../lib/types'

export interface ConversationOptions {
  /** Debounce of reloads triggered by live events (and their max wait during a steady stream). */
  refreshMs?: number
  refreshMaxWaitMs?: number
}

/**
 * One conversation and its activity, kept fresh: loaded at once, reloaded (debounced) on live
 * events about it, and once more after its next deadline. Only the newest load may write the state:
 * starting another load, switching to another id, or disposing the owner aborts the fetches in flight.
 * `generations` are its groups closed for the team's bot and not answered yet (pending or failed),
 * oldest first: two more reads per load (GET /generations/ by status), empty while the generator
 * was never on. Unlike the others they are not essential: when they fail, the last ones stay.
 */
export function useConversation(id: MaybeRefOrGetter<string>, options: ConversationOptions = {}) {
  const conversation = shallowRef<ConversationDetail | null>(null)
  const activity = shallowRef<Activity | null>(null)
  const generations = shallowRef<Generation[]>([])
  const notFound = ref(false)
  const error = ref<string | null>(null)
  const loading = ref(true)

  let inFlight: AbortController | null = null
  let followUp: ReturnType<typeof setTimeout> | null = null

  function abort(): void {
    inFlight?.abort()
    inFlight = null
  }

  async function load(): Promise<void> {
    abort()
    const ctrl = (inFlight = new AbortController())
    const convId = toValue(id)
    const [conv, act, pending, failed] = await Promise.allSettled([
      getConversation(convId, ctrl.signal),
      getActivity(convId, ctrl.signal),
      listGenerations(convId, 'pending', ctrl.signal),
      listGenerations(convId, 'failed', ctrl.signal),
    ])
    // A fetch that ignores the signal (or answers just before the abort) must still lose to newer loads.
    if (ctrl.signal.aborted) return
    inFlight = null
    let err: string | null = null
    if (conv.status === 'fulfilled') {
      conversation.value = conv.value
      notFound.value = false
    } else if (conv.reason instanceof ApiError && conv.reason.isNotFound) {
      conversation.value = null
      notFound.value = true
    } else {
      err = describeError(conv.reason)
    }
    if (act.status === 'fulfilled') {
      activity.value = act.value
    } else if (!err && !(act.reason instanceof ApiError && act.reason.isNotFound)) {
      err = describeError(act.reason)
    }
    if (pending.status === 'fulfilled' && failed.status === 'fulfilled') {
      generations.value = waitingGroups([...pending.value.items, ...failed.value.items])
    } else if (notFound.value) {
      generations.value = []
    }
    error.value = err
    loading.value = false
  }

  const refresh = debounce(() => void load(), options.refreshMs ?? 150, options.refreshMaxWaitMs ?? 600)
  const off = useBus().on((event) => {
    const d = decideRefresh(event, toValue(id))
    if (d.conversation || d.activity) refresh()
  })

  function clearFollowUp(): void {
    if (followUp) clearTimeout(followUp)
    followUp = null
  }
  // The live stream may be down: reload once a reply is due or a hold ends so the view still settles.
  watch([activity, generations], ([a, g]) => {
    clearFollowUp()
    const ms = followUpDelayMs(a, Date.now(), undefined, g)
    if (ms !== null) followUp = setTimeout(() => void load(), ms)
  })

  watch(
    () => toValue(id),
    () => {
      abort()
      refresh.cancel()
      clearFollowUp()
      conversation.value = null
      activity.value = null
      generations.value = []
      notFound.value = false
      error.value = null
      loading.value = true
      void load()
    },
  )

  onScopeDispose(() => {
    abort()
    off()
    refresh.cancel()
    clearFollowUp()
  })

  void load()

  return { conversation, activity, generations, notFound, error, loading, load, refresh }
}
