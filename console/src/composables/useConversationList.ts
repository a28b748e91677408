import { onScopeDispose, ref, shallowRef, toValue, watch, type MaybeRefOrGetter } from 'vue'
import { describeError, listConversations } from '../lib/api'
import { useBus } from '../lib/bus'
import { debounce } from '../lib/debounce'
import { decideRefresh } from '../lib/events'
import { appendPage, mergeFirstPage } from '../lib/list'
import type { ConversationStatus, ConversationSummary } from '../lib/types'

export interface ConversationFilters {
  status: ConversationStatus | ''
  /** Id prefix, already debounced by the caller. */
  q: string
}

export interface ConversationListOptions {
  filters: MaybeRefOrGetter<ConversationFilters>
  pageSize?: MaybeRefOrGetter<number>
  /** Open conversation, passed to the live refresh rules. */
  selectedId?: MaybeRefOrGetter<string | null | undefined>
  /** Debounce of live refreshes (and their max wait during a steady stream). */
  liveMs?: number
  liveMaxWaitMs?: number
}

/**
 * The paged conversation list: first page at once and on every filter change, "load more" with the
 * cursor, and a debounced live refresh of the first page that keeps the older pages already loaded.
 * A newer load aborts an older one, and a filter change also aborts a "load more" of the old filter.
 */
export function useConversationList(options: ConversationListOptions) {
  const items = shallowRef<ConversationSummary[]>([])
  const nextCursor = ref<string | null>(null)
  const loading = ref(true)
  const loadingMore = ref(false)
  const error = ref<string | null>(null)
  let pages = 0

  let listCtrl: AbortController | null = null
  let moreCtrl: AbortController | null = null
  // Set while a full reload (page one from scratch) is in flight: a live refresh that supersedes it
  // must start over too, not merge the new first page into pages of the previous filter.
  let restarting = false

  const query = (cursor?: string | null) => {
    const f = toValue(options.filters)
    return { status: f.status, q: f.q, limit: toValue(options.pageSize) ?? 20, cursor }
  }

  function cancelMore(): void {
    moreCtrl?.abort()
    moreCtrl = null
    loadingMore.value = false
  }

  async function reload(live = false): Promise<void> {
    listCtrl?.abort()
    const ctrl = (listCtrl = new AbortController())
    const fresh = !live || restarting
    if (fresh) {
      restarting = true
      cancelMore()
    }
    if (!live) loading.value = true
    try {
      const page = await listConversations(query(), ctrl.signal)
      if (ctrl.signal.aborted) return
      if (!fresh && pages > 1) {
        items.value = mergeFirstPage(items.value, page.items, pages)
      } else {
        items.value = page.items
        nextCursor.value = page.next_cursor
        pages = 1
      }
      restarting = false
      error.value = null
    } catch (e) {
      if (ctrl.signal.aborted) return
      error.value = describeError(e)
    } finally {
      if (listCtrl === ctrl) {
        listCtrl = null
        loading.value = false
      }
    }
  }

  async function loadMore(): Promise<void> {
    if (!nextCursor.value || moreCtrl) return
    const ctrl = (moreCtrl = new AbortController())
    loadingMore.value = true
    try {
      const page = await listConversations(query(nextCursor.value), ctrl.signal)
      if (ctrl.signal.aborted) return
      items.value = appendPage(items.value, page.items)
      nextCursor.value = page.next_cursor
      pages += 1
      error.value = null
    } catch (e) {
      if (ctrl.signal.aborted) return
      error.value = describeError(e)
    } finally {
      if (moreCtrl === ctrl) {
        moreCtrl = null
        loadingMore.value = false
      }
    }
  }

  const filterKey = () => {
    const f = toValue(options.filters)
    return `${f.status}|${f.q}`
  }
  watch(filterKey, () => void reload())

  const liveRefresh = debounce(() => void reload(true), options.liveMs ?? 400, options.liveMaxWaitMs ?? 1600)
  const off = useBus().on((event) => {
    if (decideRefresh(event, toValue(options.selectedId)).list) liveRefresh()
  })

  onScopeDispose(() => {
    off()
    liveRefresh.cancel()
    listCtrl?.abort()
    moreCtrl?.abort()
  })

  void reload()

  return { items, nextCursor, loading, loadingMore, error, reload, loadMore }
}
