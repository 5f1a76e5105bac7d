/**
 * API keys. Presented keys are compared by SHA-256 digest with `timingSafeEqual` against
 * every known key (no early exit), so the time taken does not depend on how much of a key
 * matched. The table carries a scope per key; `admin` may do everything.
 *
 * Two sources: keys from the configuration (LLMSCOPE_API_KEYS or the generated file), fixed
 * for the life of the process, and keys made through `POST /keys`, kept (as digests) in LMDB by
 * {@link ApiKeySource}. A revoked key leaves the source's list before the revoke answers, so
 * it stops working at once.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { nanoid } from 'nanoid'
import type { ApiKeySpec, Scope } from './config.js'

export interface KeyEntry {
  /**
   * A non-secret label for logs and rate limiting: `key_…` for keys made through the API,
   * `cfg_` + the first 8 hex chars of the digest for configured keys.
   */
  id: string
  scope: Scope
  digest: Buffer
  source: 'config' | 'api'
}

/** The keys made through the API, as the ring reads them on every check. */
export interface ApiKeySource {
  entries(): readonly KeyEntry[]
}

/** File in the data dir holding the key made on first start (mode 0600). */
export const GENERATED_KEY_FILE = 'api-key'

/** SHA-256 of a key: what is stored and compared, never the key itself. */
export function digest(key: string): Buffer {
  return createHash('sha256').update(key).digest()
}

/** Whether a key of `have` scope may use a route needing `need`. */
export function allows(have: Scope, need: Scope): boolean {
  return have === 'admin' || have === need
}

export class KeyRing {
  readonly #entries: KeyEntry[]
  #api: ApiKeySource | null = null

  constructor(specs: readonly ApiKeySpec[]) {
    this.#entries = specs.map((s) => {
      const d = digest(s.key)
      return { id: `cfg_${d.subarray(0, 4).toString('hex')}`, scope: s.scope, digest: d, source: 'config' as const }
    })
  }

  /** Adds the keys made through the API (read on every check, so revocation is immediate). */
  attach(source: ApiKeySource): void {
    this.#api = source
  }

  /** Configured keys (not revocable through the API). */
  get configured(): readonly KeyEntry[] {
    return this.#entries
  }

  get size(): number {
    return this.#entries.length + (this.#api?.entries().length ?? 0)
  }

  /** The entry for a presented key, or null. Constant time in the key's content. */
  check(presented: string | undefined): KeyEntry | null {
    if (presented === undefined || presented === '') return null
    const d = digest(presented)
    let found: KeyEntry | null = null
    for (const e of this.#entries) {
      if (timingSafeEqual(d, e.digest)) found = e
    }
    if (this.#api !== null) {
      for (const e of this.#api.entries()) {
        if (timingSafeEqual(d, e.digest)) found = e
      }
    }
    return found
  }
}

/**
 * The configured keys, or — with none configured — the key kept in the data dir, made on
 * first start. `created` is the new key when one was just made (to print once), else null.
 */
export function loadKeys(configured: readonly ApiKeySpec[], dataDir: string): { ring: KeyRing; created: string | null } {
  if (configured.length > 0) return { ring: new KeyRing(configured), created: null }
  const file = join(dataDir, GENERATED_KEY_FILE)
  if (existsSync(file)) {
    const key = readFileSync(file, 'utf8').trim()
    if (key.length >= 8) return { ring: new KeyRing([{ key, scope: 'admin' }]), created: null }
  }
  const key = `lsk_${nanoid(32)}`
  writeFileSync(file, `${key}\n`, { mode: 0o600 })
  return { ring: new KeyRing([{ key, scope: 'admin' }]), created: key }
}
