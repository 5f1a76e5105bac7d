/**
 * API keys made through `POST /keys`: records in LMDB and a mirror in memory (every request's
 * auth reads the mirror, never the disk). A record holds the key's SHA-256 digest and its last
 * four characters, never the key: the key is shown once, in the 201 that creates it.
 *
 * Writes resolve after their commit, then the mirror changes — so a key works only once it is
 * durable, and a revoked key is refused from the moment `revoke()` resolves (it is dropped from
 * the mirror even if the commit failed, so a failing disk can never keep a revoked key alive).
 * The same holds for `deleteProject()`, which drops every key of a deleted project.
 */
import { nanoid } from 'nanoid'
import { z } from 'zod'
import type { Database } from 'lmdb'
import { digest, digestKey, type ApiKeySource, type KeyEntry } from '../keys.js'
import { DEFAULT_PROJECT, PROJECT_ID_PATTERN, SCOPES, type Scope } from '../config.js'

/** Bound on stored keys per project (owner keys count as one more project): one project cannot exhaust it for the others. */
export const MAX_API_KEYS = 1000

/** POST /keys body. `project` defaults to the request's project (owner keys have none). */
export const keyCreateSchema = z.strictObject({
  scope: z.enum(SCOPES as [Scope, ...Scope[]]),
  project: z.string().regex(PROJECT_ID_PATTERN, { message: `must be a project id (${PROJECT_ID_PATTERN.source})` }).optional(),
  name: z.string().trim().min(1).max(100).optional()
})

export type KeyCreate = z.output<typeof keyCreateSchema>

/** What is stored, and (without `digest`) what `GET /keys` lists. */
export interface ApiKeyRecord {
  /** 1: before projects (no `project`: read as `default`; `name` required); 2: with `project`. */
  v: 1 | 2
  id: string
  name: string | null
  scope: Scope
  /** The project the key acts in; null for an owner key. Absent in v1 records. */
  project?: string | null
  /** SHA-256 of the key, hex. */
  digest: string
  /** The key's last four characters, to tell keys apart in a list. */
  last4: string
  created_at: string
}

/** The public view of a key record: no digest, no key. */
export interface ApiKeyInfo {
  id: string
  name: string | null
  scope: Scope
  project: string | null
  last4: string
  created_at: string
  source: 'api'
}

export class ApiKeyStore implements ApiKeySource {
  readonly #db: Database<unknown, string>
  readonly #records = new Map<string, ApiKeyRecord & { project: string | null }>()
  /** digest (latin1) → entry; rebuilt on every change, read on the auth path of every request. */
  #byDigest = new Map<string, KeyEntry>()

  constructor(db: Database<unknown, string>) {
    this.#db = db
    for (const { value } of db.getRange({})) {
      const r = value as ApiKeyRecord
      // An unknown record version is skipped rather than misread as a key.
      if (r === null || typeof r !== 'object' || (r.v !== 1 && r.v !== 2) || typeof r.digest !== 'string' || !/^[0-9a-f]{64}$/.test(r.digest)) continue
      if (!(SCOPES as readonly string[]).includes(r.scope)) continue
      // Before projects every key acted in what is now `default` (v1 had no owner scope).
      const project = r.v === 1 ? DEFAULT_PROJECT : r.scope === 'owner' ? null : (r.project ?? null)
      if (r.scope !== 'owner' && project === null) continue
      this.#records.set(r.id, { ...r, project })
    }
    this.#rebuild()
  }

  lookup(d: string): KeyEntry | undefined {
    return this.#byDigest.get(d)
  }

  get size(): number {
    return this.#records.size
  }

  /** Keys of `project` (null: owner keys); all keys when `project` is undefined. Oldest first. */
  list(project?: string | null): ApiKeyInfo[] {
    return [...this.#records.values()]
      .filter((r) => project === undefined || r.project === project)
      .sort((a, b) => (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : a.id < b.id ? -1 : 1))
      .map(info)
  }

  get(id: string): ApiKeyInfo | undefined {
    const r = this.#records.get(id)
    return r === undefined ? undefined : info(r)
  }

  /** How many keys act in `project` (null: owner keys). */
  countIn(project: string | null): number {
    let n = 0
    for (const r of this.#records.values()) if (r.project === project) n++
    return n
  }

  /**
   * Makes a key, stores its digest and answers the key itself — the only time it exists
   * outside the caller. The caller has checked that the project exists and the scope is allowed.
   */
  async create(input: { scope: Scope; project: string | null; name?: string | null }, now: number): Promise<{ key: string; info: ApiKeyInfo }> {
    if ((input.scope === 'owner') !== (input.project === null)) throw new TypeError('an owner key has no project; every other key has one')
    const key = `lsk_${nanoid(32)}`
    const record = {
      v: 2 as const,
      id: `key_${nanoid(12)}`,
      name: input.name ?? null,
      scope: input.scope,
      project: input.project,
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

  /**
   * Removes every key of `project` (a project being deleted): refused from the call on, gone
   * from the disk once this resolves. Answers how many there were.
   */
  async deleteProject(project: string): Promise<number> {
    const ids = [...this.#records.values()].filter((r) => r.project === project).map((r) => r.id)
    if (ids.length === 0) return 0
    for (const id of ids) this.#records.delete(id)
    this.#rebuild()
    // One transaction: all of them go, or (on a failed commit) none from the disk — and then
    // a start after the crash finds the project still purging and calls this again.
    await this.#db.transaction(() => {
      for (const id of ids) this.#db.remove(id)
    })
    return ids.length
  }

  #rebuild(): void {
    const m = new Map<string, KeyEntry>()
    for (const r of this.#records.values()) {
      const d = Buffer.from(r.digest, 'hex')
      m.set(digestKey(d), { id: r.id, scope: r.scope, project: r.project, digest: d, source: 'api' })
    }
    this.#byDigest = m
  }
}

function info(r: ApiKeyRecord & { project: string | null }): ApiKeyInfo {
  return { id: r.id, name: r.name, scope: r.scope, project: r.project, last4: r.last4, created_at: r.created_at, source: 'api' }
}
