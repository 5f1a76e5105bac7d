/**
 * API keys made through `POST /keys`: records in LMDB and a mirror in memory (every request's
 * auth reads the mirror, never the disk). A record holds the key's SHA-256 digest and its last
 * four characters, never the key: the key is shown once, in the 201 that creates it.
 *
 * Writes resolve after their commit, then the mirror changes — so a key works only once it is
 * durable, and a revoked key is refused from the moment `revoke()` resolves (it is dropped from
 * the mirror even if the commit failed, so a failing disk can never keep a revoked key alive).
 */
import { nanoid } from 'nanoid'
import { z } from 'zod'
import type { Database } from 'lmdb'
import { digest, type ApiKeySource, type KeyEntry } from '../keys.js'
import { SCOPES, type Scope } from '../config.js'

/** Bound on stored keys: every request compares against each (constant time). */
export const MAX_API_KEYS = 1000

/** POST /keys body. */
export const keyCreateSchema = z.strictObject({
  name: z.string().trim().min(1).max(100),
  scope: z.enum(SCOPES as [Scope, ...Scope[]])
})

export type KeyCreate = z.output<typeof keyCreateSchema>

/** What is stored, and (without `digest`) what `GET /keys` lists. */
export interface ApiKeyRecord {
  v: 1
  id: string
  name: string
  scope: Scope
  /** SHA-256 of the key, hex. */
  digest: string
  /** The key's last four characters, to tell keys apart in a list. */
  last4: string
  created_at: string
}

/** The public view of a key record: no digest, no key. */
export interface ApiKeyInfo {
  id: string
  name: string
  scope: Scope
  last4: string
  created_at: string
  source: 'api'
}

export class ApiKeyStore implements ApiKeySource {
  readonly #db: Database<unknown, string>
  readonly #records = new Map<string, ApiKeyRecord>()
  /** Rebuilt on every change; `entries()` is on the auth path of every request. */
  #entries: KeyEntry[] = []

  constructor(db: Database<unknown, string>) {
    this.#db = db
    for (const { value } of db.getRange({})) {
      const r = value as ApiKeyRecord
      // An unknown record version is skipped rather than misread as a key.
      if (r !== null && typeof r === 'object' && r.v === 1 && typeof r.digest === 'string' && /^[0-9a-f]{64}$/.test(r.digest)) this.#records.set(r.id, r)
    }
    this.#rebuild()
  }

  entries(): readonly KeyEntry[] {
    return this.#entries
  }

  get size(): number {
    return this.#records.size
  }

  list(): ApiKeyInfo[] {
    return [...this.#records.values()]
      .sort((a, b) => (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : a.id < b.id ? -1 : 1))
      .map(info)
  }

  get(id: string): ApiKeyInfo | undefined {
    const r = this.#records.get(id)
    return r === undefined ? undefined : info(r)
  }

  /** Makes a key, stores its digest and answers the key itself — the only time it exists outside the caller. */
  async create(input: KeyCreate, now: number): Promise<{ key: string; info: ApiKeyInfo }> {
    const key = `lsk_${nanoid(32)}`
    const record: ApiKeyRecord = {
      v: 1,
      id: `key_${nanoid(12)}`,
      name: input.name,
      scope: input.scope,
      digest: digest(key).toString('hex'),
      last4: key.slice(-4),
      created_at: new Date(now).toISOString()
    }
    await this.#db.put(record.id, record)
    this.#records.set(record.id, record)
    this.#rebuild()
    return { key, info: info(record) }
  }

  /** Revokes a key; false when there is no such key. */
  async revoke(id: string): Promise<boolean> {
    if (!this.#records.has(id)) return false
    this.#records.delete(id)
    this.#rebuild()
    await this.#db.remove(id)
    return true
  }

  #rebuild(): void {
    this.#entries = [...this.#records.values()].map((r) => ({ id: r.id, scope: r.scope, digest: Buffer.from(r.digest, 'hex'), source: 'api' as const }))
  }
}

function info(r: ApiKeyRecord): ApiKeyInfo {
  return { id: r.id, name: r.name, scope: r.scope, last4: r.last4, created_at: r.created_at, source: 'api' }
}
