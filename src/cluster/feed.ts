/**
 * The live stream in cluster mode (DESIGN §9: any node serves `/ws` with every event and alert of
 * the project, whichever node took it; `seq` is the stream sequence, so `since_seq` works against
 * any node).
 *
 * ```
 *  JetStream `${name}-events` (every partition)
 *    └─► ONE ordered consumer per node, from the stream's last seq L + 1 at start
 *          └─► decode (seq = stream sequence) ─► price ─► batches in seq order ─► Broadcaster
 *  core NATS `${name}.alert.>` (published by the alerts-lease holder, publishAlert)
 *    └─► checked AlertNotice ─► Broadcaster `alert` (its project's subscribers only)
 *  since_seq replay: the Broadcaster reads (since, seam] through `JetStreamLog.read({ project, to })`
 * ```
 *
 * - `start()` reads L, sends the broadcaster one `attach` message (its replays now read the stream,
 *   its log end is what this feed has heard of, and everything ≤ L counts as handled), then
 *   follows the stream from L + 1. So a `since_seq` at or below L replays from the stream, and
 *   no event past L is missed, whenever the consumer actually starts delivering.
 * - In order, once: the ordered consumer delivers in stream order without redelivery (the client
 *   recreates it after a reconnect from the next seq); a seq at or below the last one handed over
 *   is skipped anyway. If its iteration ends while the feed runs, the feed follows again from the
 *   last seq + 1 after a short pause (logged).
 * - Batches: messages are handed over when the client's queue is empty (caught up) or a batch
 *   reaches `batchMax`, so a quiet stream gives one frame per event at once and a busy one
 *   gives the broadcaster batches like the cost stage does.
 * - Backpressure: a broadcaster whose mailbox refuses a batch is waited for (`idle()`) and the
 *   batch sent again, so events are never lost between the stream and the sockets; the consumer
 *   meanwhile buffers at most its pull window in the client.
 * - A message that does not decode (a newer writer's format) is skipped, counted and logged; a
 *   frame on the alert subject that is not an AlertNotice likewise.
 *
 * The broadcaster must get events from this feed only (in cluster mode the node's topology never
 * sends it any): the feed defines its `lastSeq`.
 */
import { DeliverPolicy, type ConsumerMessages } from '@nats-io/jetstream'
import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import type { AlertNotice, Broadcaster } from '../actors/broadcaster.js'
import type { PricedEvent, StoredEvent } from '../events.js'
import type { Log } from '../log.js'
import { decodeEvent, type JetStreamLog } from './js-log.js'
import type { ClusterNames } from './names.js'
import type { NatsHandles } from './nats.js'

/** Most events handed to the broadcaster in one message. */
export const FEED_BATCH_MAX = 500
/** Messages the ordered consumer pulls ahead (its buffer in this process). */
export const FEED_PULL_WINDOW = 1000
/** Pause before the feed follows the stream again after its consumer ended unexpectedly. */
export const FEED_RESTART_MS = 1000

export interface ClusterFeedOptions {
  h: NatsHandles
  /** Reads `since_seq` replays (the same stream). */
  log: JetStreamLog
  /** The node's broadcaster (its topology's): this feed becomes its only source of events. */
  broadcaster: Broadcaster
  /** Prices one stored event exactly as the cost stage does. */
  price: (e: StoredEvent) => PricedEvent
  logger: Log
  /** Most events per message to the broadcaster (default {@link FEED_BATCH_MAX}). */
  batchMax?: number
}

/** Figures for /metrics and /ready. */
export interface ClusterFeedStats {
  running: boolean
  /** The stream's last seq when the feed started (the broadcaster's starting point). */
  startSeq: number
  /** Highest stream seq handed to the broadcaster (startSeq before the first). */
  lastSeq: number
  /** Messages of the stream after `lastSeq` when it was delivered: the feed's lag. */
  lag: number
  /** Events and batches handed to the broadcaster. */
  events: number
  batches: number
  /** Alert frames handed to the broadcaster. */
  alerts: number
  /** Stream messages that did not decode (skipped). */
  undecodable: number
  /** Frames on the alert subject that were not an AlertNotice (skipped). */
  badAlerts: number
  /** Times the broadcaster's mailbox was full and the feed waited for it to drain. */
  waits: number
  /** Times the consumer ended unexpectedly and the feed followed the stream again. */
  restarts: number
}

const decoder = new TextDecoder()
const ALERT_STATES: ReadonlySet<string> = new Set(['firing', 'resolved', 'ok'])

/**
 * Publishes an alert frame to every node (core NATS, `${name}.alert.<project>`); each node's feed
 * hands it to its broadcaster. Never throws: false when the connection is closed or refused it
 * (an alert frame is best-effort, like a WebSocket push; the alert itself is recorded in KV).
 */
export function publishAlert(nc: NatsConnection, names: ClusterNames, notice: AlertNotice): boolean {
  try {
    nc.publish(names.alertSubject(notice.project), JSON.stringify(notice))
    return true
  } catch {
    return false
  }
}

/**
 * An alert frame as received, checked field by field and rebuilt (nothing else reaches clients),
 * or null. Its project must be the subject's.
 */
export function parseAlertNotice(data: Uint8Array, subjectProject: string): AlertNotice | null {
  let v: unknown
  try {
    v = JSON.parse(decoder.decode(data))
  } catch {
    return null
  }
  if (typeof v !== 'object' || v === null) return null
  const o = v as Record<string, unknown>
  if (o.type !== 'alert' || o.project !== subjectProject) return null
  if (typeof o.rule_id !== 'string' || typeof o.rule_name !== 'string' || typeof o.at !== 'string') return null
  if (typeof o.state !== 'string' || !ALERT_STATES.has(o.state)) return null
  if (typeof o.threshold !== 'number' || (o.value !== null && typeof o.value !== 'number')) return null
  return {
    type: 'alert',
    project: subjectProject,
    rule_id: o.rule_id,
    rule_name: o.rule_name,
    state: o.state as AlertNotice['state'],
    value: o.value as number | null,
    threshold: o.threshold,
    at: o.at
  }
}

/** The node's live stream in cluster mode (see the file comment). */
export class ClusterFeed {
  readonly #h: NatsHandles
  readonly #log: JetStreamLog
  readonly #b: Broadcaster
  readonly #price: (e: StoredEvent) => PricedEvent
  readonly #logger: Log
  readonly #batchMax: number
  #started = false
  #running = false
  #stopping = false
  #startSeq = 0
  #lastSeq = 0
  #lag = 0
  #messages: ConsumerMessages | null = null
  #alertSub: Subscription | null = null
  #loop: Promise<void> | null = null
  #wake: (() => void) | null = null
  #stats = { events: 0, batches: 0, alerts: 0, undecodable: 0, badAlerts: 0, waits: 0, restarts: 0 }

  constructor(opts: ClusterFeedOptions) {
    this.#h = opts.h
    this.#log = opts.log
    this.#b = opts.broadcaster
    this.#price = opts.price
    this.#logger = opts.logger
    this.#batchMax = opts.batchMax ?? FEED_BATCH_MAX
    if (!Number.isSafeInteger(this.#batchMax) || this.#batchMax < 1) throw new RangeError(`batchMax must be a positive integer, got ${String(opts.batchMax)}`)
  }

  /**
   * Attaches the broadcaster and starts following the stream from its current end and the alert
   * frames. Resolves once both subscriptions exist. Call before HTTP serves /ws.
   * @throws when the stream cannot be read, or the broadcaster refuses the attach message
   */
  async start(): Promise<void> {
    if (this.#started || this.#stopping) throw new Error('cluster feed already started (or stopped)')
    this.#started = true
    try {
      await this.#start()
    } catch (err) {
      this.#started = false
      throw err
    }
  }

  async #start(): Promise<void> {
    const last = await this.#log.lastSeq()
    this.#startSeq = last
    this.#lastSeq = last
    const attached = this.#b.send({
      type: 'attach',
      replaySource: (from, through, project, signal) => this.#replay(from, through, project, signal),
      logEnd: () => this.#lastSeq + this.#lag + 1,
      seq: last
    })
    if (!attached) throw new Error('the broadcaster refused the cluster feed (closed or mailbox full)')
    const { names } = this.#h
    const prefix = names.alertSubject('')
    this.#alertSub = this.#h.nc.subscribe(names.allAlerts, {
      callback: (err, msg) => {
        if (err !== null) return
        const notice = parseAlertNotice(msg.data, msg.subject.slice(prefix.length))
        if (notice === null) {
          this.#stats.badAlerts++
          this.#logger.warn({ subject: msg.subject }, 'cluster feed: a frame on the alert subject is not an alert notice; skipped')
          return
        }
        if (this.#b.send({ type: 'alert', alert: notice })) this.#stats.alerts++
      }
    })
    this.#running = true
    try {
      this.#messages = await this.#follow()
    } catch (err) {
      this.#running = false
      this.#alertSub.unsubscribe()
      this.#alertSub = null
      throw err
    }
    this.#loop = this.#run(this.#messages)
  }

  /** Stops following (the broadcaster stays: its owner closes it). Safe twice. */
  async stop(): Promise<void> {
    if (this.#stopping) return this.#loop ?? undefined
    this.#stopping = true
    this.#running = false
    this.#wake?.()
    this.#alertSub?.unsubscribe()
    this.#alertSub = null
    await this.#messages?.close().catch(() => {})
    await this.#loop
  }

  stats(): ClusterFeedStats {
    return { running: this.#running, startSeq: this.#startSeq, lastSeq: this.#lastSeq, lag: this.#lag, ...this.#stats }
  }

  /** An ordered consumer over every partition from the seq after the last handed over. */
  async #follow(): Promise<ConsumerMessages> {
    const { js, names } = this.#h
    const consumer = await js.consumers.get(names.stream, {
      filter_subjects: names.allEvents,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: this.#lastSeq + 1
    })
    return consumer.consume({ max_messages: FEED_PULL_WINDOW })
  }

  /** Follows the stream until stopped; a consumer that ends on its own is replaced. */
  async #run(first: ConsumerMessages): Promise<void> {
    let messages: ConsumerMessages | null = first
    while (!this.#stopping) {
      try {
        messages ??= await this.#follow()
        this.#messages = messages
        if (this.#stopping) break
        if (!(await this.#drain(messages))) {
          this.#logger.warn({ lastSeq: this.#lastSeq }, 'cluster feed: the broadcaster closed; the feed stops')
          break
        }
        if (this.#stopping) break
        this.#logger.warn({ lastSeq: this.#lastSeq }, 'cluster feed: the stream consumer ended; following again')
      } catch (err) {
        if (this.#stopping) break
        this.#logger.error({ err, lastSeq: this.#lastSeq }, 'cluster feed: following the event stream failed; retrying')
      }
      await messages?.close().catch(() => {})
      messages = null
      this.#stats.restarts++
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, FEED_RESTART_MS)
        timer.unref()
        this.#wake = () => {
          clearTimeout(timer)
          resolve()
        }
      })
      this.#wake = null
    }
    this.#running = false
    await messages?.close().catch(() => {})
  }

  /**
   * Decodes, prices and hands over one consumer's messages, in seq order, in batches, until the
   * consumer ends (true) or the broadcaster is closed (false).
   */
  async #drain(messages: ConsumerMessages): Promise<boolean> {
    let batch: PricedEvent[] = []
    for await (const m of messages) {
      if (m.seq <= this.#lastSeq) continue
      this.#lastSeq = m.seq
      this.#lag = m.info.pending
      try {
        batch.push(this.#price(decodeEvent(m.seq, m.data)))
      } catch (err) {
        this.#stats.undecodable++
        this.#logger.warn({ seq: m.seq, err: err instanceof Error ? err.message : String(err) }, 'cluster feed: an event message could not be read; skipped')
      }
      if (batch.length > 0 && (batch.length >= this.#batchMax || messages.getPending() === 0)) {
        if (!(await this.#hand(batch))) return false
        batch = []
      }
    }
    return batch.length === 0 || (await this.#hand(batch))
  }

  /** Sends one batch, waiting for a full mailbox to drain; false once the broadcaster is closed. */
  async #hand(events: PricedEvent[]): Promise<boolean> {
    while (!this.#b.send({ type: 'events', events })) {
      if (this.#b.closed) return false
      this.#stats.waits++
      await this.#b.idle()
    }
    this.#stats.events += events.length
    this.#stats.batches++
    return true
  }

  /** The broadcaster's replay source: `project`'s events in (from - 1, through], priced. */
  async *#replay(from: number, through: number, project: string, signal: AbortSignal): AsyncGenerator<PricedEvent[]> {
    if (through < Math.max(1, from)) return
    for await (const batch of this.#log.read(from, { project, to: through })) {
      if (signal.aborted) return
      yield batch.map(this.#price)
    }
  }
}
