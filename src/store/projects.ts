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
 */
import { z } from 'zod'
import type { Database } from 'lmdb'
import { DEFAULT_PROJECT, PROJECT_ID_PATTERN } from '../config.js'
import { llmsError } from '../errors.js'

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
      await this.create({ id }, now)
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
      await this.#db.put(id, t)
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
    await this.#db.put(id, done)
    // A create cannot have come in between: it refuses while `purging` is true.
    this.#tombstones.set(id, done)
    this.#emit({ type: 'deleted', id })
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

function view(r: ProjectRecord): Project {
  return { id: r.id, name: r.name, created_at: r.created_at }
}

function notFound(id: string) {
  return llmsError('LLMS_ERR_NOT_FOUND', `project ${id.slice(0, 64)} not found`, { details: [{ path: '(params) id', message: 'no such project' }] })
}
