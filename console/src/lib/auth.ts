import { readonly, ref, type Ref } from 'vue'

/**
 * The API token of the service's reads (API_TOKEN), for this tab only.
 *
 * The service asks for `Authorization: Bearer <token>` on its reads and live stream only when
 * it was given tokens; so the console sends none until a data call is answered 401, then asks
 * the operator. The token lives in sessionStorage: it survives a reload of the tab and dies
 * with it. A later 401 for the token in use (it was rotated out) forgets it and asks again.
 */
export interface TokenStore {
  /** True once a data call was refused for want of a valid token, until one is given. */
  readonly required: Readonly<Ref<boolean>>
  /** True when the refused call carried a token: a wrong one, or one rotated out. */
  readonly refused: Readonly<Ref<boolean>>
  /** The token to send, or null. */
  current(): string | null
  /** Keeps a token for this tab (trimmed; an empty one is ignored). */
  provide(token: string): void
  /**
   * Reports a 401 for a call made with `sent`. A refusal of a token other than the current one
   * (an answer to a call made before a newer token was given) changes nothing.
   */
  refuse(sent: string | null): void
  /** Forgets the token and the refusal state. */
  forget(): void
  /** Calls `listener` with each newly provided token; returns the unsubscribe function. */
  onProvide(listener: (token: string) => void): () => void
}

export const STORAGE_KEY = 'console.apiToken'

/** sessionStorage, or null where it is disabled (then the token lives in memory only). */
function sessionStore(): Storage | null {
  try {
    return typeof sessionStorage === 'undefined' ? null : sessionStorage
  } catch {
    return null
  }
}

export function createTokenStore(storage: Storage | null = sessionStore()): TokenStore {
  let memory: string | null = null
  const required = ref(false)
  const refused = ref(false)
  const listeners = new Set<(token: string) => void>()

  const read = (): string | null => {
    try {
      return storage ? storage.getItem(STORAGE_KEY) : memory
    } catch {
      return memory
    }
  }
  const write = (token: string | null) => {
    memory = token
    try {
      if (token === null) storage?.removeItem(STORAGE_KEY)
      else storage?.setItem(STORAGE_KEY, token)
    } catch {
      // Storage full or disabled: the in-memory copy still serves this page.
    }
  }

  return {
    required: readonly(required),
    refused: readonly(refused),
    current: () => read() || null,
    provide(token) {
      const value = token.trim()
      if (!value) return
      write(value)
      required.value = false
      refused.value = false
      for (const listener of [...listeners]) listener(value)
    },
    refuse(sent) {
      const current = read() || null
      if (sent !== current) return
      if (current !== null) {
        write(null)
        refused.value = true
      }
      required.value = true
    },
    forget() {
      write(null)
      required.value = false
      refused.value = false
    },
    onProvide(listener) {
      listeners.add(listener)
      return () => {
        listeners.delete(listener)
      }
    },
  }
}

/** The page's one store: api.ts and sse.ts send its token, App.vue asks for it. */
export const tokens = createTokenStore()

/** The Authorization header for `token` (none without a token). */
export function authorization(token: string | null): Record<string, string> {
  return token ? { Authorization: `Bearer ${token}` } : {}
}
