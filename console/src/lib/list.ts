import type { ConversationSummary } from './types'

/**
 * Merges a freshly loaded first page into the items already shown.
 * - If only the first page was loaded, the fresh page replaces everything.
 * - If more pages were loaded, the fresh first page replaces its own range; later items
 *   the user already loaded are kept (minus duplicates), so "Load more" state survives live refreshes.
 */
export function mergeFirstPage(
  existing: readonly ConversationSummary[],
  firstPage: readonly ConversationSummary[],
  pagesLoaded: number,
): ConversationSummary[] {
  if (pagesLoaded <= 1) return [...firstPage]
  const fresh = new Set(firstPage.map((c) => c.id))
  const oldest = firstPage[firstPage.length - 1]
  // Items older than the last item of the fresh page keep their place after it.
  const tail = existing.filter((c) => {
    if (fresh.has(c.id)) return false
    if (!oldest) return true
    return Date.parse(c.created_at) <= Date.parse(oldest.created_at)
  })
  return [...firstPage, ...tail]
}

/** Appends a next page, skipping ids already present (items can shift between pages). */
export function appendPage(
  existing: readonly ConversationSummary[],
  page: readonly ConversationSummary[],
): ConversationSummary[] {
  const seen = new Set(existing.map((c) => c.id))
  return [...existing, ...page.filter((c) => !seen.has(c.id))]
}
