/**
 * API keys made through `POST /keys`: records in LMDB and a mirror in memory (every request's
 * auth reads the mirror, never the disk). A record holds the key's SHA-256 digest and its last
 * four characters, never the key: the key is shown once, in the 201 that creates it.
 *
 * Writes resolve after their commit, then the mirror changes — so a key works only once it is
 * durable, and a revoked key is refused from the moment `revoke()` resolves (it is dropped from
 * the mirror even if the commit failed, so a failing disk can never keep a revoked key alive).
 * The same holds for `deleteProject()`, which drops every key of a deleted project.
 *
 * Cluster mode ({@link ApiKeyStore.attachBacking}): the records live in JetStream KV
 * (src/cluster/meta.ts) and the mirror follows the bucket through `applyRemote`, so a key made
 * on any node works on every node once its watcher applied it (on the making node, before
 * `create` resolves), and a revoke is refused here at once and on other nodes once applied.
 */
import { nanoid } from 'nanoid'
import { z } from 'zod'
import type { Database } from 'lmdb'
import { digest, digestKey, type ApiKeySource, type KeyEntry } from '../keys.js'
import { DEFAULT_PROJECT, PROJECT_ID_PATTERN, SCOPES, type Scope } from '../config.js'
import type { Log } from '../log.js'
import type { MetaBacking } from './backing.js'

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
  /** Cluster mode: where writes go (null: the LMDB database, as on a single node). */
  #backing: MetaBacking | null = null
  #log: Log | null = null

  constructor(db: Database<unknown, string>) {
    this.#db = db
    for (const { value } of db.getRange({})) {
      const r = readRecord(value)
      if (r !== null) this.#records.set(r.id, r)
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
    if (this.#backing !== null) {
      // Applied to the mirror by the watcher before this resolves. A 12-character random id never collides in practice.
      if (!(await this.#backing.create(record.id, record))) throw new Error(`key id ${record.id} exists`)
      return { key, info: info(record) }
    }
    await this.#db.put(record.id, record)
    this.#records.set(record.id, record)
    this.#rebuild()
    return { key, info: info(record) }
  }

  /** Revokes a key; false when there is no such key. */
  async revoke(id: string): Promise<boolean> {
    const r = this.#records.get(id)
    if (r === undefined) return false
    this.#records.delete(id)
    this.#rebuild()
    if (this.#backing !== null) {
      try {
        await this.#backing.remove(id)
      } catch (err) {
        // The bucket may still hold it, and then every other node accepts it: say so here too, so a retry finds it.
        if (!this.#records.has(id)) {
          this.#records.set(id, r)
          this.#rebuild()
        }
        throw err
      }
      return true
    }
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
    if (this.#backing !== null) {
      // Not one transaction in KV: a crash midway leaves the project purging, and the next
      // DELETE (or start) calls this again for the keys left.
      const backing = this.#backing
      await Promise.all(ids.map((id) => backing.remove(id)))
      return ids.length
    }
    // One transaction: all of them go, or (on a failed commit) none from the disk — and then
    // a start after the crash finds the project still purging and calls this again.
    await this.#db.transaction(() => {
      for (const id of ids) this.#db.remove(id)
    })
    return ids.length
  }

  /**
   * Cluster mode: from now on writes go to `backing` (JetStream KV) and the mirror follows
   * {@link applyRemote}; `log` reports failed writes to the LMDB cache.
   */
  attachBacking(backing: MetaBacking, log: Log): void {
    this.#backing = backing
    this.#log = log
  }

  /** Cluster mode: the bucket's record of key `id` changed (`undefined`: removed, i.e. revoked), by any node. */
  applyRemote(id: string, value: unknown): void {
    if (this.#applyOne(id, value)) this.#rebuild()
  }

  /** Cluster mode, at start: the keys become the bucket's `records` (by id; `undefined`: removed). */
  loadRemote(records: ReadonlyMap<string, unknown>): void {
    for (const id of [...this.#records.keys()]) if (!records.has(id)) this.#applyOne(id, undefined)
    for (const [id, value] of records) this.#applyOne(id, value)
    this.#rebuild()
  }

  /** Applies one record to the mirror and the LMDB cache; false when it was ignored. */
  #applyOne(id: string, value: unknown): boolean {
    const r = value === undefined ? undefined : readRecord(value)
    if (r === null || (r !== undefined && r.id !== id)) return false
    if (r === undefined) this.#records.delete(id)
    else this.#records.set(id, r)
    void (r === undefined ? this.#db.remove(id) : this.#db.put(id, r)).catch((err: unknown) => this.#log?.warn({ err, key: id }, 'API key cache write failed'))
    return true
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

/** A stored key record as the mirror holds it, or null when it is not one this version reads. */
function readRecord(value: unknown): (ApiKeyRecord & { project: string | null }) | null {
  const r = value as ApiKeyRecord
  // An unknown record version is skipped rather than misread as a key.
  if (r === null || typeof r !== 'object' || (r.v !== 1 && r.v !== 2) || typeof r.digest !== 'string' || !/^[0-9a-f]{64}$/.test(r.digest)) return null
  if (!(SCOPES as readonly string[]).includes(r.scope)) return null
  // Before projects every key acted in what is now `default` (v1 had no owner scope).
  const project = r.v === 1 ? DEFAULT_PROJECT : r.scope === 'owner' ? null : (r.project ?? null)
  if (r.scope !== 'owner' && project === null) return null
  return { ...r, project }
}

function info(r: ApiKeyRecord & { project: string | null }): ApiKeyInfo {
  return { id: r.id, name: r.name, scope: r.scope, project: r.project, last4: r.last4, created_at: r.created_at, source: 'api' }
}
