export interface Route {
  /** Conversation open in the chat view, or null. */
  conversationId: string | null
}

/** Parses "#/conversations/<id>" (the deep link /ui/#/conversations/<id>). */
export function parseHash(hash: string): Route {
  const m = /^#\/conversations\/([^/?#]+)\/?$/.exec(hash.trim())
  if (!m) return { conversationId: null }
  try {
    return { conversationId: decodeURIComponent(m[1]) }
  } catch {
    return { conversationId: m[1] }
  }
}

export function conversationHash(id: string): string {
  return `#/conversations/${encodeURIComponent(id)}`
}
