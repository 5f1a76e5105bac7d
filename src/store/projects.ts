/**
 * Projects (README: Projects): records in LMDB and a mirror in memory (the auth path reads the
 * mirror on every request, never the disk). `default` always exists: it is made when the store
 * opens without it, and it cannot be deleted.
 *
 * Deleting a project is two durable steps around the purge of its data (done by others: the
 * DELETE route and the engine):
 *
 *     live ──beginDelete──► tombstone {purging: true} ──(purge)──► finishDelete ──► tombstone {purging: false}
 *
 * The project stops existing (`exists()` false, its keys refused) the moment `beginDelete` is
 * called; the tombstone with `purging: true` is committed before `beginDelete` resolves, so a
 * crash mid-purge leaves it behind and the next start finds it in {@link ProjectStore.purging}
 * and finishes the purge. The tombstone stays after the purge: a project named by a configured
 * key is created at start only when absent and never deleted, so a deleted one stays deleted
 * (its configured keys answer 401) until an owner creates it again, which clears the tombstone.
 *
 * Writes resolve after their commit. One record per id: a tombstone replaces the project, a
 * re-creation replaces the tombstone.
 *
 * Cluster mode ({@link ProjectStore.attachBacking}): the records live in JetStream KV
 * (src/cluster/meta.ts); writes go there (a create is a compare-and-set, so an id is unique
 * cluster-wide) and the mirror follows the bucket through `applyRemote`, which fires the same
 * changes on every node. The LMDB database is then a cache of the bucket.
 */
import { z } from 'zod'
import type { Database } from 'lmdb'
import { DEFAULT_PROJECT, PROJECT_ID_PATTERN } from '../config.js'
import { llmsError } from '../errors.js'
import type { Log } from '../log.js'
import type { MetaBacking } from './backing.js'

export { DEFAULT_PROJECT, PROJECT_ID_PATTERN, isProjectId } from '../config.js'

/** Bound on live projects: each carries its own aggregators, rules and keys. */
export const MAX_PROJECTS = 1000

/** POST /projects body. */
export const projectCreateSchema = z.strictObject({
  id: z.string().regex(PROJECT_ID_PATTERN, { message: `must be a slug: lower-case letters, digits and "-", 1 to 63 characters, not starting with "-" (${PROJECT_ID_PATTERN.source})` }),
  name: z.string().trim().min(1).max(200).optional()
})

export type ProjectCreate = z.output<typeof projectCreateSchema>

/** A live project, as the API shows it. */
export interface Project {
  id: string
  name: string
  created_at: string
}

interface ProjectRecord extends Project {
  v: 1
  kind: 'project'
}

interface Tombstone {
  v: 1
  kind: 'tombstone'
  id: string
  deleted_at: string
  /** True from `beginDelete` until `finishDelete`: the purge of its data may be unfinished. */
  purging: boolean
}

/** What changed; listeners are called after the change is committed (`deleting`: after the tombstone is). */
export type ProjectChange = { type: 'created'; project: Project } | { type: 'deleting'; id: string } | { type: 'deleted'; id: string }

export class ProjectStore {
  readonly #db: Database<unknown, string>
  readonly #live = new Map<string, ProjectRecord>()
  readonly #tombstones = new Map<string, Tombstone>()
  /** Ids with a create in flight (reserved, so a concurrent create of the same id is a 409). */
  readonly #creating = new Set<string>()
  readonly #listeners = new Set<(change: ProjectChange) => void>()
  /** Cluster mode: where writes go (null: the LMDB database, as on a single node). */
  #backing: MetaBacking | null = null
  #log: Log | null = null

  /** Opens the store; `now` dates `default` if this is the store's first open. */
  constructor(db: Database<unknown, string>, now: number) {
    this.#db = db
    for (const { key, value } of db.getRange({})) {
      const r = value as ProjectRecord | Tombstone
      // An unknown record version is skipped rather than misread.
      if (r === null || typeof r !== 'object' || r.v !== 1 || r.id !== key) continue
      if (r.kind === 'project') this.#live.set(r.id, r)
      else if (r.kind === 'tombstone') this.#tombstones.set(r.id, r)
    }
    if (!this.#live.has(DEFAULT_PROJECT)) {
      const d: ProjectRecord = { v: 1, kind: 'project', id: DEFAULT_PROJECT, name: DEFAULT_PROJECT, created_at: new Date(now).toISOString() }
      // Once per data dir, at open: synchronous, so `default` exists before anything reads.
      db.putSync(d.id, d)
      this.#tombstones.delete(d.id)
      this.#live.set(d.id, d)
    }
  }

  /** Live projects, oldest first. */
  list(): Project[] {
    return [...this.#live.values()].sort((a, b) => (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : a.id < b.id ? -1 : 1)).map(view)
  }

  /** The live project `id`, or undefined (deleted or being deleted included). */
  get(id: string): Project | undefined {
    const r = this.#live.get(id)
    return r === undefined ? undefined : view(r)
  }

  /** Whether `id` is a live project: on every authenticated request, a Map lookup. */
  exists(id: string): boolean {
    return this.#live.has(id)
  }

  get size(): number {
    return this.#live.size
  }

  /** Whether `id` was deleted (its purge finished or not) and not created again. */
  isDeleted(id: string): boolean {
    return this.#tombstones.has(id)
  }

  /** Whether `id` is being deleted: its tombstone says the purge may be unfinished. */
  isPurging(id: string): boolean {
    return this.#tombstones.get(id)?.purging === true
  }

  /** Deleted projects whose purge may be unfinished (the engine finishes them at start). */
  purging(): string[] {
    return [...this.#tombstones.values()].filter((t) => t.purging).map((t) => t.id).sort()
  }

  /**
   * Watches changes; returns the function that stops watching. A listener that throws does
   * not stop the others, nor the change (it is already committed).
   */
  onChange(listener: (change: ProjectChange) => void): () => void {
    this.#listeners.add(listener)
    return () => {
      this.#listeners.delete(listener)
    }
  }

  /**
   * Creates a project (clearing its tombstone if it was deleted).
   * @throws LLMS_ERR_CONFLICT if it exists, is being created, or its purge is still running;
   *   LLMS_ERR_VALIDATION past {@link MAX_PROJECTS}.
   */
  async create(input: { id: string; name?: string }, now: number): Promise<Project> {
    const { id } = input
    if (!PROJECT_ID_PATTERN.test(id)) {
      throw llmsError('LLMS_ERR_VALIDATION', `invalid project id: must match ${PROJECT_ID_PATTERN.source}`, { details: [{ path: 'id', message: `must match ${PROJECT_ID_PATTERN.source}` }] })
    }
    if (this.#live.has(id) || this.#creating.has(id)) {
      throw llmsError('LLMS_ERR_CONFLICT', `project ${id} exists`, { details: [{ path: 'id', message: 'a project with this id exists' }] })
    }
    if (this.isPurging(id)) {
      throw llmsError('LLMS_ERR_CONFLICT', `project ${id} is still being deleted; retry once its DELETE has answered`, { details: [{ path: 'id', message: 'the deletion of this project is not finished' }] })
    }
    if (this.#live.size + this.#creating.size >= MAX_PROJECTS) {
      throw llmsError('LLMS_ERR_VALIDATION', `at most ${MAX_PROJECTS} projects; delete unused ones`, { details: [{ path: '(body)', message: 'too many projects' }] })
    }
    const record: ProjectRecord = { v: 1, kind: 'project', id, name: input.name ?? id, created_at: new Date(now).toISOString() }
    this.#creating.add(id)
    if (this.#backing !== null) {
      let made: boolean
      try {
        // Compare-and-set against what this node mirrors: a create of the same id on any other node wins or loses as a whole.
        made = await this.#backing.create(id, record)
      } finally {
        this.#creating.delete(id)
      }
      if (!made) {
        throw llmsError('LLMS_ERR_CONFLICT', `project ${id} exists or is being deleted`, { details: [{ path: 'id', message: 'a project with this id exists' }] })
      }
      // Applied by the watcher (which announced it); answer what the bucket holds.
      return view(this.#live.get(id) ?? record)
    }
    try {
      await this.#db.put(id, record)
    } finally {
      this.#creating.delete(id)
    }
    this.#tombstones.delete(id)
    this.#live.set(id, record)
    this.#emit({ type: 'created', project: view(record) })
    return view(record)
  }

  /**
   * Creates each of `ids` that is neither live nor deleted (the projects configured keys name,
   * at start). Answers the ids it created.
   */
  async ensure(ids: Iterable<string>, now: number): Promise<string[]> {
    const made: string[] = []
    for (const id of new Set(ids)) {
      if (this.#live.has(id) || this.#tombstones.has(id)) continue
      try {
        await this.create({ id }, now)
      } catch (err) {
        // Cluster mode: another node starting with the same configured keys made it first.
        if (this.#backing !== null && (this.#live.has(id) || this.#tombstones.has(id))) continue
        throw err
      }
      made.push(id)
    }
    return made
  }

  /**
   * First step of a delete: the project stops existing at once (every later check refuses it)
   * and a tombstone `{purging: true}` is committed before this resolves.
   * @throws LLMS_ERR_CONFLICT for `default`; LLMS_ERR_NOT_FOUND if `id` is not a live project.
   */
  async beginDelete(id: string, now: number): Promise<void> {
    if (id === DEFAULT_PROJECT) {
      throw llmsError('LLMS_ERR_CONFLICT', `project ${DEFAULT_PROJECT} cannot be deleted: it always exists`, { details: [{ path: '(params) id', message: `${DEFAULT_PROJECT} cannot be deleted` }] })
    }
    const live = this.#live.get(id)
    if (live === undefined) throw notFound(id)
    const t: Tombstone = { v: 1, kind: 'tombstone', id, deleted_at: new Date(now).toISOString(), purging: true }
    // Gone from the mirror before the commit: no request may act in it from now on.
    this.#live.delete(id)
    this.#tombstones.set(id, t)
    try {
      await (this.#backing !== null ? this.#backing.put(id, t) : this.#db.put(id, t))
    } catch (err) {
      // Nothing was deleted yet: the project is back as it was.
      this.#tombstones.delete(id)
      this.#live.set(id, live)
      throw err
    }
    this.#emit({ type: 'deleting', id })
  }

  /** Last step of a delete, once its data is purged: the tombstone stays, `purging: false`. */
  async finishDelete(id: string): Promise<void> {
    const t = this.#tombstones.get(id)
    if (t === undefined || !t.purging) return
    const done: Tombstone = { ...t, purging: false }
    if (this.#backing !== null) {
      // The watcher applies it and announces `deleted`, on this node as on every other.
      await this.#backing.put(id, done)
      return
    }
    await this.#db.put(id, done)
    // A create cannot have come in between: it refuses while `purging` is true.
    this.#tombstones.set(id, done)
    this.#emit({ type: 'deleted', id })
  }

  /**
   * Cluster mode: from now on writes go to `backing` (JetStream KV) and the mirror follows
   * {@link applyRemote}; `log` reports failed writes to the LMDB cache.
   */
  attachBacking(backing: MetaBacking, log: Log): void {
    this.#backing = backing
    this.#log = log
  }

  /**
   * Cluster mode: the bucket's record of `id` changed (`undefined`: removed), by any node. The
   * mirror and the LMDB cache follow, and listeners hear what it means here: `created` when the
   * project was not live, `deleting` when it was, `deleted` when its purge is done. A record of
   * an unknown version is ignored; `default` is never removed.
   */
  applyRemote(id: string, value: unknown): void {
    const r = value === undefined ? undefined : readRecord(id, value)
    if (r === null) return
    if (id === DEFAULT_PROJECT && r?.kind !== 'project') return
    const wasLive = this.#live.has(id)
    const before = this.#tombstones.get(id)
    if (r === undefined) {
      this.#live.delete(id)
      this.#tombstones.delete(id)
    } else if (r.kind === 'project') {
      this.#tombstones.delete(id)
      this.#live.set(id, r)
    } else {
      this.#live.delete(id)
      this.#tombstones.set(id, r)
    }
    void (r === undefined ? this.#db.remove(id) : this.#db.put(id, r)).catch((err: unknown) => this.#log?.warn({ err, project: id }, 'project cache write failed'))
    if (r?.kind === 'project') {
      if (!wasLive) this.#emit({ type: 'created', project: view(r) })
    } else if (wasLive) {
      this.#emit({ type: 'deleting', id })
      if (r === undefined || !r.purging) this.#emit({ type: 'deleted', id })
    } else if (r !== undefined && !r.purging && before?.purging === true) {
      this.#emit({ type: 'deleted', id })
    }
  }

  /**
   * Cluster mode, at start: the mirror becomes the bucket's `records` (by id; `undefined`:
   * removed), announcing every difference as {@link applyRemote} does. Answers the records the
   * bucket must have and lacks: `default`, when no node has written it yet.
   */
  loadRemote(records: ReadonlyMap<string, unknown>): Array<[string, unknown]> {
    for (const id of [...this.#live.keys(), ...this.#tombstones.keys()]) {
      if (!records.has(id)) this.applyRemote(id, undefined)
    }
    for (const [id, value] of records) this.applyRemote(id, value)
    return records.get(DEFAULT_PROJECT) === undefined ? [[DEFAULT_PROJECT, this.#live.get(DEFAULT_PROJECT)]] : []
  }

  #emit(change: ProjectChange): void {
    for (const fn of this.#listeners) {
      // The change is committed whatever a listener does; one failing must not starve the rest.
      try {
        fn(change)
      } catch {}
    }
  }
}

/** A stored record of `id`, or null when it is not one this version reads. */
function readRecord(id: string, value: unknown): ProjectRecord | Tombstone | null {
  const r = value as ProjectRecord | Tombstone
  if (r === null || typeof r !== 'object' || r.v !== 1 || r.id !== id) return null
  return r.kind === 'project' || r.kind === 'tombstone' ? r : null
}

function view(r: ProjectRecord): Project {
  return { id: r.id, name: r.name, created_at: r.created_at }
}

function notFound(id: string) {
  return llmsError('LLMS_ERR_NOT_FOUND', `project ${id.slice(0, 64)} not found`, { details: [{ path: '(params) id', message: 'no such project' }] })
}
