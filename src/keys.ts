/**
 * API keys. A presented key is hashed (SHA-256) and looked up by its digest in a Map; the
 * table carries a scope and a project per key (README: Projects): `owner` may do everything
 * everywhere, `admin` everything inside its project, `read` and `ingest` what they say.
 *
 * Why a Map lookup is as safe as comparing against every key: what the Map compares (and may
 * stop comparing at the first differing byte) is the presented key's digest, never the key.
 * Timing could at most tell an attacker how many leading bytes of the digest of their guess
 * match a stored digest — and choosing a guess whose digest matches more bytes is a preimage
 * attack on SHA-256. So the time a check takes reveals nothing useful about any key, and a
 * check costs one hash plus one lookup however many keys there are. The one compare left, on
 * the entry found, is `timingSafeEqual` (a hash-bucket collision is the only way it can fail).
 *
 * Two sources: keys from the configuration (LLMSCOPE_API_KEYS or the generated file), fixed
 * for the life of the process, and keys made through `POST /keys`, kept (as digests) in LMDB by
 * {@link ApiKeySource}. A revoked key leaves the source's table before the revoke answers, so
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
  /** The project the key acts in; null for an `owner` key (it acts in any). */
  project: string | null
  digest: Buffer
  source: 'config' | 'api'
}

/** The keys made through the API, as the ring reads them on every check. */
export interface ApiKeySource {
  /** The entry whose digest is `d`, if any (`d` as {@link digestKey} spells it). */
  lookup(d: string): KeyEntry | undefined
  readonly size: number
}

/** File in the data dir holding the key made on first start (mode 0600). */
export const GENERATED_KEY_FILE = 'api-key'

/** SHA-256 of a key: what is stored and compared, never the key itself. */
export function digest(key: string): Buffer {
  return createHash('sha256').update(key).digest()
}

/** A digest as a Map key (latin1: one char per byte, the cheapest string of 32 bytes). */
export function digestKey(d: Buffer): string {
  return d.toString('latin1')
}

/**
 * Whether a key of `have` scope may use a route needing `need`. Scope only: whether the key
 * may act in the request's project is the auth hook's other check.
 */
export function allows(have: Scope, need: Scope): boolean {
  if (have === 'owner') return true
  if (have === 'admin') return need !== 'owner'
  return have === need
}

export class KeyRing {
  readonly #entries: KeyEntry[]
  readonly #byDigest = new Map<string, KeyEntry>()
  #api: ApiKeySource | null = null

  constructor(specs: readonly ApiKeySpec[]) {
    this.#entries = specs.map((s) => {
      const d = digest(s.key)
      return { id: `cfg_${d.subarray(0, 4).toString('hex')}`, scope: s.scope, project: s.scope === 'owner' ? null : s.project, digest: d, source: 'config' as const }
    })
    // A key listed twice keeps its first entry.
    for (const e of this.#entries) if (!this.#byDigest.has(digestKey(e.digest))) this.#byDigest.set(digestKey(e.digest), e)
  }

  /** Adds the keys made through the API (looked up on every check, so revocation is immediate). */
  attach(source: ApiKeySource): void {
    this.#api = source
  }

  /** Configured keys (not revocable through the API). */
  get configured(): readonly KeyEntry[] {
    return this.#entries
  }

  /** The projects configured keys name (created at start if absent and never deleted). */
  get configuredProjects(): string[] {
    return [...new Set(this.#entries.flatMap((e) => (e.project === null ? [] : [e.project])))]
  }

  get size(): number {
    return this.#entries.length + (this.#api?.size ?? 0)
  }

  /** The entry for a presented key, or null. One hash and one lookup (see the module comment). */
  check(presented: string | undefined): KeyEntry | null {
    if (presented === undefined || presented === '') return null
    const d = digest(presented)
    const k = digestKey(d)
    const found = this.#byDigest.get(k) ?? this.#api?.lookup(k)
    return found !== undefined && timingSafeEqual(d, found.digest) ? found : null
  }
}

/**
 * The configured keys, or — with none configured — the owner key kept in the data dir, made
 * on first start. `created` is the new key when one was just made (to print once), else null.
 */
export function loadKeys(configured: readonly ApiKeySpec[], dataDir: string): { ring: KeyRing; created: string | null } {
  if (configured.length > 0) return { ring: new KeyRing(configured), created: null }
  const file = join(dataDir, GENERATED_KEY_FILE)
  if (existsSync(file)) {
    const key = readFileSync(file, 'utf8').trim()
    if (key.length >= 8) return { ring: new KeyRing([{ key, scope: 'owner', project: null }]), created: null }
  }
  const key = `lsk_${nanoid(32)}`
  writeFileSync(file, `${key}\n`, { mode: 0o600 })
  return { ring: new KeyRing([{ key, scope: 'owner', project: null }]), created: key }
}
