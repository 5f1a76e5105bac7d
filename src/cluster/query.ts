/**
 * Queries between nodes (DESIGN §9): request-reply on `${name}.q.<N>`, which only the owner of
 * partition N subscribes to.
 *
 * A reply may be larger than NATS's max payload (1 MB by default: a breakdown by user holds every
 * user's sums), so the owner sends it in chunks followed by an empty message, and the coordinator
 * reads them with `requestMany({ strategy: 'sentinel' })`. Each chunk names the node that sent
 * it: during a hand-over two nodes may both be subscribed for an instant, and chunks of two
 * replies must never be stitched together (the coordinator keeps the first node's).
 *
 * A partition that does not answer in time — no owner (no responders), an owner that cannot
 * catch up, a timeout — fails the whole query with 503 naming it: never a partial figure.
 */
import { Empty, headers, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node'
import { ERROR_CODES, llmsError, type ErrorCode, type LLMScopeError } from '../errors.js'
import type { ClusterNames } from './names.js'
import type { Log } from '../log.js'

/** Bytes per reply chunk: well under NATS's default 1 MB max payload. */
export const CHUNK_BYTES = 256 * 1024
const NODE_HEADER = 'LLMScope-Node'

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** What a coordinator sends each partition: the partial request and the stream position to include. */
export interface PartitionRequest {
  /** Every event with stream seq <= upTo must be counted (read-your-writes). */
  upTo: number
  req: unknown
}

type Reply = { ok: true; data: unknown } | { ok: false; code: string; message: string; status: number }

/** The answer of a node that no longer serves the partition asked. */
const HANDED_OVER = (p: number): Reply => ({ ok: false, code: 'LLMS_ERR_UNAVAILABLE', message: `partition ${p} is being handed over`, status: 503 })

/** The owner side: answers the query subjects of the partitions this node serves. */
export class QueryResponder {
  readonly #nc: NatsConnection
  readonly #names: ClusterNames
  readonly #node: string
  readonly #handle: (partition: number, r: PartitionRequest) => Promise<unknown>
  readonly #log: Log
  readonly #subs = new Map<number, Subscription>()
  #answered = 0
  #failed = 0

  constructor(opts: { nc: NatsConnection; names: ClusterNames; node: string; log: Log; handle: (partition: number, r: PartitionRequest) => Promise<unknown> }) {
    this.#nc = opts.nc
    this.#names = opts.names
    this.#node = opts.node
    this.#handle = opts.handle
    this.#log = opts.log
  }

  /** Starts answering partition `p`'s queries (once its state is loaded). */
  serve(p: number): void {
    if (this.#subs.has(p)) return
    const sub = this.#nc.subscribe(this.#names.query(p), {
      callback: (err, msg) => {
        if (err !== null) return
        void this.#answer(p, msg)
      }
    })
    this.#subs.set(p, sub)
  }

  /**
   * Stops answering partition `p` (before its lease goes). Drained, not just unsubscribed: a query
   * already on its way here is answered (a 503, the partition is let go) instead of dropped,
   * which left its coordinator waiting out the whole query timeout (measured: 5 s during a
   * takeover). The UNSUB reaches the server before the caller deletes the lease.
   */
  async unserve(p: number): Promise<void> {
    const sub = this.#subs.get(p)
    if (sub === undefined) return
    this.#subs.delete(p)
    await sub.drain().catch(() => {})
  }

  get serving(): number[] {
    return [...this.#subs.keys()].sort((a, b) => a - b)
  }

  get stats() {
    return { answered: this.#answered, failed: this.#failed }
  }

  async #answer(p: number, msg: Msg): Promise<void> {
    if (msg.reply === undefined || msg.reply === '') return
    let reply: Reply = HANDED_OVER(p)
    if (this.#subs.has(p)) {
      try {
        const r = JSON.parse(decoder.decode(msg.data)) as PartitionRequest
        reply = { ok: true, data: await this.#handle(p, r) }
        this.#answered++
      } catch (err) {
        this.#failed++
        const e = err as Partial<LLMScopeError> & Error
        reply = { ok: false, code: e.code ?? 'LLMS_ERR_INTERNAL', message: e.message, status: e.statusCode ?? 500 }
        if (e.statusCode === undefined) this.#log.warn({ partition: p, err: e.message }, 'partition query failed')
      }
      // Let go while answering: its new owner answers from now on, so no figure from here.
      if (!this.#subs.has(p)) reply = HANDED_OVER(p)
    }
    const bytes = encoder.encode(JSON.stringify(reply))
    const h = headers()
    h.set(NODE_HEADER, this.#node)
    try {
      for (let i = 0; i < bytes.length; i += CHUNK_BYTES) msg.respond(bytes.subarray(i, i + CHUNK_BYTES), { headers: h })
      msg.respond(Empty, { headers: h })
    } catch (err) {
      this.#log.warn({ partition: p, err: (err as Error).message }, 'could not send a partition reply')
    }
  }

  close(): void {
    for (const sub of this.#subs.values()) sub.unsubscribe()
    this.#subs.clear()
  }
}

/** Sends `req` to one partition and resolves with its reply data, or rejects with a 503 naming it. */
export async function askPartition(nc: NatsConnection, names: ClusterNames, p: number, r: PartitionRequest, timeoutMs: number): Promise<unknown> {
  const unavailable = (why: string) => llmsError('LLMS_ERR_UNAVAILABLE', `${/^partitions? \d/.test(why) ? why.replace(/; retry shortly$/, '') : `partition ${p} ${why}`}; retry shortly`, { retryAfter: 1 })
  let it: AsyncIterable<Msg>
  try {
    it = await nc.requestMany(names.query(p), encoder.encode(JSON.stringify(r)), { strategy: 'sentinel', maxWait: timeoutMs })
  } catch (err) {
    throw unavailable(`has no live owner (${(err as Error).message})`)
  }
  const parts: Uint8Array[] = []
  let node: string | undefined
  let complete = false
  try {
    for await (const m of it) {
      const from = m.headers?.get(NODE_HEADER)
      if (node === undefined) node = from
      else if (from !== node) continue
      if (m.data.length === 0) {
        complete = true
        break
      }
      parts.push(m.data)
    }
  } catch (err) {
    const msg = (err as Error).message
    throw unavailable(/no responders|503/i.test(msg) ? 'has no live owner' : `did not answer (${msg})`)
  }
  if (!complete) throw unavailable(parts.length === 0 && node === undefined ? `did not answer within ${timeoutMs} ms (no live owner)` : `did not finish its answer within ${timeoutMs} ms`)
  const total = parts.reduce((n, b) => n + b.length, 0)
  const all = new Uint8Array(total)
  let o = 0
  for (const b of parts) {
    all.set(b, o)
    o += b.length
  }
  const reply = JSON.parse(decoder.decode(all)) as Reply
  if (!reply.ok) {
    if (reply.status === 503) throw unavailable(reply.message)
    const code = (ERROR_CODES as string[]).includes(reply.code) ? (reply.code as ErrorCode) : 'LLMS_ERR_INTERNAL'
    throw llmsError(code, code === 'LLMS_ERR_INTERNAL' && !reply.message.startsWith(`partition ${p}`) ? `partition ${p}: ${reply.message}` : reply.message)
  }
  return reply.data
}

/** Sends `req` to every partition in parallel; resolves with every reply in partition order. */
export async function askAll(nc: NatsConnection, names: ClusterNames, partitions: number, r: PartitionRequest, timeoutMs: number): Promise<unknown[]> {
  const settled = await Promise.allSettled(Array.from({ length: partitions }, (_, p) => askPartition(nc, names, p, r, timeoutMs)))
  const failed = settled.flatMap((s, p) => (s.status === 'rejected' ? [p] : []))
  if (failed.length === 0) return settled.map((s) => (s as PromiseFulfilledResult<unknown>).value)
  const first = (settled[failed[0]] as PromiseRejectedResult).reason as LLMScopeError
  if (failed.length === 1 || first.statusCode !== 503) throw first
  throw llmsError('LLMS_ERR_UNAVAILABLE', `partitions ${failed.join(', ')} did not answer (${first.message}); retry shortly`, { retryAfter: 1 })
}
