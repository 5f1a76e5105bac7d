/**
 * `DELETE /events` in cluster mode (DESIGN §7, §9), run by the node that received it (the front):
 *
 *   1. match   every partition owner lists the seqs of its matching rows (after catching up to
 *              the stream's last seq, read first: `up_to`); a partition that cannot answer
 *              fails the delete before anything is removed (503 naming it)
 *   2. record  the seqs, per partition and chunked, then a header: the durable tombstone
 *              (cluster/tombstones.ts; seqs only, never a value)
 *   3. apply   every partition owner with matches drops the seqs from its aggregators
 *              (`topology.forget`), filters them from whatever it is handed later, and writes its
 *              partition snapshot; an owner change meanwhile is retried until the new owner
 *              answers (it read the tombstone when it took the partition over)
 *   4. purge   the stream messages of those seqs are deleted (erased)
 *   5. finish  the tombstone goes; owners stop filtering; every node drops its local copies of
 *              partitions it does not own (they may hold the rows)
 *
 * Then the answer `{deleted: N}` (N = matched). While it runs, the front rewrites the header
 * every few seconds; a delete whose header has not moved for `staleMs` (its front died or gave
 * up) is completed from step 3 by the janitor, which runs on the node holding the alerts lease.
 * Chunks without a header (a front that died while recording: nothing was removed) are removed
 * by the janitor too. Every step is idempotent, so a delete completed twice removes it once.
 */
import { createHash, randomBytes } from 'node:crypto'
import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream'
import { llmsError } from '../errors.js'
import { encodeQuery } from '../analytics/partials.js'
import type { RangeQuery } from '../queries.js'
import type { Log } from '../log.js'
import type { DeleteRegistry, DeleteStatus } from '../forget.js'
import type { NatsHandles } from './nats.js'
import { askAll, askPartition } from './query.js'
import { bounded, type ForgetHeader, type ForgetTombstones } from './tombstones.js'

/** Owner-side requests of a delete (answered by ClusterEngine). */
export type ForgetRequest =
  /** Every matching seq ≤ the request's upTo. */
  | { kind: 'forget-match'; q: ReturnType<typeof encodeQuery> }
  /** Apply tombstone `id` to this partition and write its snapshot. */
  | { kind: 'forget-apply'; id: string }
  /** Tombstone `id` is gone: stop filtering its seqs. */
  | { kind: 'forget-done'; id: string }

export interface ClusterForgetOptions {
  h: NatsHandles
  tombstones: ForgetTombstones
  node: string
  log: Log
  /** The stream's last seq now. */
  lastSeq: () => Promise<number>
  /**
   * How long one partition may take to list its matches (catching up, then every match) and to
   * apply a delete (which writes its snapshot): longer than a query's timeout, since both grow
   * with the partition; also how long an owner that dies holding the request delays the delete.
   */
  matchTimeoutMs: number
  applyTimeoutMs: number
  /** How long step 3 keeps retrying a partition without a live owner before answering 503. */
  applyDeadlineMs: number
  /** A header unchanged this long is resumed by the janitor. */
  staleMs: number
  /** Where GET /events/deletes reads progress (the node's registry: `running` until the rows left every partition, then `finishing`). */
  registry: DeleteRegistry
  /** How often a running delete rewrites its header (default staleMs / 4). */
  beatMs?: number
}

/** Messages deleted at once while purging. */
const DELETE_CONCURRENCY = 32
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref())

export class ClusterForget {
  readonly #o: ClusterForgetOptions
  /** Deletes this process is running (its own or resumed ones), by id. */
  readonly #running = new Set<string>()
  /** Janitor's view: each header's revision and when it was first seen at it. */
  readonly #seen = new Map<string, { rev: number; at: number }>()
  readonly #orphansSeen = new Map<string, number>()
  #janitor: Promise<void> | null = null
  #stopped = false

  constructor(opts: ClusterForgetOptions) {
    this.#o = opts
  }

  /** Deletes the events of `project` matching `q` (steps 1–5); resolves with how many. */
  async run(project: string, q: RangeQuery): Promise<{ deleted: number }> {
    if (this.#stopped) throw llmsError('LLMS_ERR_SHUTTING_DOWN', 'the server is shutting down', { retryAfter: 1 })
    const { h, log, registry } = this.#o
    const id = `del_${randomBytes(8).toString('hex')}`
    const prog = registry.start(project, id)
    this.#running.add(id)
    try {
      const upTo = await this.#o.lastSeq()
      const wire = encodeQuery({ ...q, project })
      const replies = await askAll(h.nc, h.names, h.partitions, { upTo, req: { kind: 'forget-match', q: wire } satisfies ForgetRequest }, this.#o.matchTimeoutMs)
      const seqs = new Map<number, number[]>()
      replies.forEach((r, p) => {
        const list = (r as { seqs?: unknown }).seqs
        if (!Array.isArray(list)) throw new TypeError(`partition ${p}: forget-match reply without seqs`)
        const mine = (list as number[]).filter((s) => Number.isSafeInteger(s) && s <= upTo)
        if (mine.length > 0) seqs.set(p, mine)
        prog.matched += mine.length
      })
      if (prog.matched === 0) {
        registry.end(prog, 'done')
        return { deleted: 0 }
      }
      const fh = createHash('sha256').update(JSON.stringify(wire)).digest('hex').slice(0, 16)
      const { header, rev } = await unavailableOn('record the delete', () => this.#o.tombstones.write({ id, project, node: this.#o.node, started_at: Date.parse(prog.started_at), up_to: upTo, fh }, seqs))
      log.info({ delete: id, project, matched: header.matched, partitions: Object.keys(header.parts).length }, 'delete recorded')
      await this.#complete(header, rev, prog)
      registry.end(prog, 'done')
      return { deleted: header.matched }
    } catch (err) {
      registry.end(prog, 'failed')
      throw err
    } finally {
      this.#running.delete(id)
    }
  }

  /**
   * Steps 3–5 of a recorded delete (its header at revision `rev`), beating the header meanwhile.
   * One beat at a time, each a compare-and-set on the previous one's revision; the beats stop,
   * and the one in flight is awaited, before the header is removed — so no beat lands after the
   * removal and brings the header back (it did, under load: a completed delete looked pending).
   */
  async #complete(header: ForgetHeader, rev: number, prog: DeleteStatus): Promise<void> {
    const { h, tombstones, log } = this.#o
    const beatMs = this.#o.beatMs ?? Math.max(250, Math.floor(this.#o.staleMs / 4))
    let beating = true
    let inFlight: Promise<void> = Promise.resolve()
    const beat = setInterval(() => {
      if (!beating) return
      beating = false
      inFlight = tombstones.beat(header, rev).then(
        (next) => {
          rev = next
          beating = true
        },
        // Gone or moved: someone else completed or took it; the steps below are idempotent.
        () => {}
      )
    }, beatMs)
    beat.unref()
    const stopBeats = async () => {
      clearInterval(beat)
      beating = false
      await inFlight
    }
    try {
      prog.matched = header.matched
      prog.state = 'running'
      const parts = Object.keys(header.parts).map(Number)
      const removed = await Promise.all(parts.map((p) => this.#apply(p, header.id)))
      log.info({ delete: header.id, rows: removed.reduce((a, b) => a + b, 0) }, 'delete applied to every partition')
      // Out of every analytics answer now; next out of the stream (GET /events/:id, replays).
      prog.state = 'finishing'
      for (const p of parts) {
        const seqs = await unavailableOn('read the delete', () => tombstones.seqs(header, p))
        await bounded(seqs.map((seq) => async () => {
          await this.#deleteMessage(seq)
          prog.deleted++
        }), DELETE_CONCURRENCY)
      }
      await stopBeats()
      await unavailableOn('remove the delete record', () => tombstones.remove(header))
      // Best effort: an owner that misses it only filters a few seqs that no longer exist.
      await Promise.allSettled(parts.map((p) => askPartition(h.nc, h.names, p, { upTo: 0, req: { kind: 'forget-done', id: header.id } satisfies ForgetRequest }, 5_000)))
      h.nc.publish(h.names.forgetDone, new TextEncoder().encode(JSON.stringify({ id: header.id })))
      log.info({ delete: header.id, project: header.project, deleted: header.matched }, 'delete complete')
    } finally {
      await stopBeats()
    }
  }

  /** Step 3 for one partition: retried while it has no owner (a hand-over), up to the deadline. */
  async #apply(p: number, id: string): Promise<number> {
    const { h } = this.#o
    const deadline = Date.now() + this.#o.applyDeadlineMs
    for (let attempt = 1; ; attempt++) {
      try {
        const r = (await askPartition(h.nc, h.names, p, { upTo: 0, req: { kind: 'forget-apply', id } satisfies ForgetRequest }, this.#o.applyTimeoutMs)) as { removed?: number }
        return r.removed ?? 0
      } catch (err) {
        if ((err as { statusCode?: number }).statusCode !== 503 || Date.now() >= deadline || this.#stopped) {
          throw llmsError('LLMS_ERR_UNAVAILABLE', `the delete is recorded but partition ${p} could not apply it (${(err as Error).message}); it completes in the background, or run the delete again`, { retryAfter: 1 })
        }
        await sleep(Math.min(1000, 100 * attempt))
      }
    }
  }

  /** Erases one stream message; one already gone is fine; other failures are retried a little. */
  async #deleteMessage(seq: number): Promise<void> {
    const { h } = this.#o
    for (let attempt = 1; ; attempt++) {
      try {
        await h.jsm.streams.deleteMessage(h.names.stream, seq, true)
        return
      } catch (err) {
        if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.NoMessageFound) return
        if (/no message found/i.test((err as Error).message)) return
        if (attempt >= 5) throw llmsError('LLMS_ERR_UNAVAILABLE', `could not remove event ${seq} from the event stream (${(err as Error).message}); the delete completes in the background, or run it again`, { retryAfter: 1 })
        await sleep(200 * attempt)
      }
    }
  }

  /**
   * One janitor pass (the alerts-lease holder calls it every few seconds): completes deletes whose
   * header has not moved for staleMs and that this node is not running, and removes chunks that
   * have had no header for as long. One pass at a time; failures are logged and retried next pass.
   */
  janitor(now = Date.now()): Promise<void> {
    this.#janitor ??= this.#janitorPass(now).catch((err: unknown) => this.#o.log.warn({ err: (err as Error).message }, 'delete janitor pass failed')).finally(() => {
      this.#janitor = null
    })
    return this.#janitor
  }

  async #janitorPass(now: number): Promise<void> {
    const { tombstones, log, staleMs } = this.#o
    const heads = await tombstones.headers()
    const live = new Set(heads.map((x) => x.header.id))
    for (const id of this.#seen.keys()) if (!live.has(id)) this.#seen.delete(id)
    for (const { header, rev } of heads) {
      if (this.#stopped) return
      if (this.#running.has(header.id)) continue
      const seen = this.#seen.get(header.id)
      if (seen === undefined || seen.rev !== rev) {
        this.#seen.set(header.id, { rev, at: now })
        continue
      }
      if (now - seen.at < staleMs) continue
      log.warn({ delete: header.id, node: header.node, project: header.project }, 'a delete was left unfinished by its node: completing it')
      const prog = this.#o.registry.start(header.project, header.id, header.started_at)
      this.#running.add(header.id)
      try {
        await this.#complete(header, rev, prog)
        this.#o.registry.end(prog, 'done')
      } catch (err) {
        this.#o.registry.end(prog, 'failed')
        log.warn({ delete: header.id, err: (err as Error).message }, 'completing an unfinished delete failed; retried later')
        this.#seen.delete(header.id)
      } finally {
        this.#running.delete(header.id)
      }
    }
    const orphans = new Set(await tombstones.orphans())
    for (const id of this.#orphansSeen.keys()) if (!orphans.has(id)) this.#orphansSeen.delete(id)
    for (const id of orphans) {
      if (this.#running.has(id)) continue
      const first = this.#orphansSeen.get(id)
      if (first === undefined) this.#orphansSeen.set(id, now)
      else if (now - first >= staleMs) {
        const n = await tombstones.removeOrphan(id)
        this.#orphansSeen.delete(id)
        log.info({ delete: id, chunks: n }, 'removed the record of a delete that died before it was committed')
      }
    }
  }

  /** No new delete starts; a running one stops retrying. */
  stop(): void {
    this.#stopped = true
  }
}

/** `call`, with a failure that is not already ours answered 503 naming what could not be done. */
async function unavailableOn<T>(what: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call()
  } catch (err) {
    if ((err as { statusCode?: unknown }).statusCode !== undefined) throw err
    throw llmsError('LLMS_ERR_UNAVAILABLE', `could not ${what} (${(err as Error).message}); retry shortly`, { retryAfter: 1 })
  }
}
