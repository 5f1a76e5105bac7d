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
 * - On demand (`onDemand`, what a node uses): the stream is followed only while the node has a
 *   /ws subscriber. Following costs a decode and a price per event of the WHOLE stream, and
 *   most nodes have no subscriber most of the time. The feed then sits in front of the
 *   broadcaster's `send` for `subscribe`, `unsubscribe` and `pong`: the first `subscribe` while it
 *   is idle is held (with whatever follows it) until the feed has read the stream's end L',
 *   sent a fresh `attach` (lastSeq = L') and its consumer exists; then they are handed over in
 *   order. So since_seq means what it means for a feed started at L' (replay (since, L'] from the
 *   stream, live from L' + 1) and nothing past L' is missed. Once the last subscriber has been gone
 *   for `idleStopMs` the consumer is closed; nobody is listening, so nothing is lost. Alert frames
 *   are core NATS and cheap: that subscription stays for as long as the feed runs.
 *
 * The broadcaster must get events from this feed only (in cluster mode the node's topology never
 * sends it any): the feed defines its `lastSeq`.
 */
import { DeliverPolicy, type ConsumerMessages } from '@nats-io/jetstream'
import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import type { AlertNotice, BroadcastMessage, Broadcaster, BudgetNotice, SocketSink } from '../actors/broadcaster.js'
import type { PricedEvent, StoredEvent } from '../events.js'
import type { Log } from '../log.js'
import { decodeEvent, priceRevOf, type JetStreamLog } from './js-log.js'
import type { ClusterNames } from './names.js'
import type { NatsHandles } from './nats.js'

/** Most events handed to the broadcaster in one message. */
export const FEED_BATCH_MAX = 500
/** Messages the ordered consumer pulls ahead (its buffer in this process). */
export const FEED_PULL_WINDOW = 1000
/** Pause before the feed follows the stream again after its consumer ended unexpectedly. */
export const FEED_RESTART_MS = 1000
/** On demand: how long the stream is still followed after the last subscriber left. */
export const FEED_IDLE_STOP_MS = 30_000
/** WebSocket close code for a subscriber the feed could not start for (try again later). */
const CLOSE_TRY_AGAIN_LATER = 1013

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
  /**
   * Follow the stream only while the broadcaster has a subscriber (see the file comment).
   * Default false: follow from `start()` to `stop()`.
   */
  onDemand?: boolean
  /** On demand: how long to keep following after the last subscriber left (default {@link FEED_IDLE_STOP_MS}). */
  idleStopMs?: number
}

/** Figures for /metrics and /ready. */
export interface ClusterFeedStats {
  /** Following the stream now (on demand: only while someone listens). */
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
  /** On demand: times the feed started following for a first subscriber, and stopped after the last left. */
  follows: number
  pauses: number
}

const decoder = new TextDecoder()
const ALERT_STATES: ReadonlySet<string> = new Set(['firing', 'resolved', 'ok'])

/**
 * Publishes an alert frame to every node (core NATS, `${name}.alert.<project>`); each node's feed
 * hands it to its broadcaster. Never throws: false when the connection is closed or refused it
 * (an alert frame is best-effort, like a WebSocket push; the alert itself is recorded in KV).
 */
export function publishAlert(nc: NatsConnection, names: ClusterNames, notice: AlertNotice | BudgetNotice): boolean {
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
export function parseAlertNotice(data: Uint8Array, subjectProject: string): AlertNotice | BudgetNotice | null {
  let v: unknown
  try {
    v = JSON.parse(decoder.decode(data))
  } catch {
    return null
  }
  if (typeof v !== 'object' || v === null) return null
  const o = v as Record<string, unknown>
  if (o.project !== subjectProject) return null
  if (o.type === 'budget') return parseBudgetNotice(o, subjectProject)
  if (o.type !== 'alert') return null
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
    at: o.at,
    // A grouped rule's group (issue 14); absent in frames of older nodes.
    ...(o.group === null || typeof o.group === 'string' ? { group: o.group } : {})
  }
}

/** A budget frame (issue 14, src/budgets/evaluator.ts), checked and rebuilt like an alert's. */
function parseBudgetNotice(o: Record<string, unknown>, project: string): BudgetNotice | null {
  const str = (k: string) => typeof o[k] === 'string'
  const num = (k: string) => typeof o[k] === 'number' && Number.isFinite(o[k])
  if (!str('budget_id') || !str('name') || !str('period_start') || !str('at') || !str('event_id')) return null
  if (!num('threshold') || !num('spent') || !num('amount')) return null
  if (o.group !== null && typeof o.group !== 'string') return null
  return {
    type: 'budget',
    project,
    budget_id: o.budget_id as string,
    name: o.name as string,
    threshold: o.threshold as number,
    spent: o.spent as number,
    amount: o.amount as number,
    period_start: o.period_start as string,
    group: o.group as string | null,
    at: o.at as string,
    event_id: o.event_id as string
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
  readonly #onDemand: boolean
  readonly #idleStopMs: number
  /** The broadcaster's own `send` (the feed's messages go straight to it). */
  readonly #send: (m: BroadcastMessage) => boolean
  #started = false
  #running = false
  #stopping = false
  /** Set to end the current follow (stop, or on demand a pause); the run loop checks it. */
  #halt = false
  /**
   * idle: not following (on demand, nobody listens); starting: making the consumer for a first
   * subscriber; following; pausing: closing the consumer after the last subscriber left.
   */
  #state: 'idle' | 'starting' | 'following' | 'pausing' = 'idle'
  /** Subscribers' messages held while starting or pausing, in arrival order. */
  #held: BroadcastMessage[] = []
  /** Sockets subscribed through this feed and not yet unsubscribed (on demand). */
  readonly #sinks = new Set<SocketSink>()
  #idleTimer: NodeJS.Timeout | null = null
  #startSeq = 0
  #lastSeq = 0
  #lag = 0
  #messages: ConsumerMessages | null = null
  #alertSub: Subscription | null = null
  #loop: Promise<void> | null = null
  #transition: Promise<void> | null = null
  #wake: (() => void) | null = null
  #stats = { events: 0, batches: 0, alerts: 0, undecodable: 0, badAlerts: 0, waits: 0, restarts: 0, follows: 0, pauses: 0 }

  constructor(opts: ClusterFeedOptions) {
    this.#h = opts.h
    this.#log = opts.log
    this.#b = opts.broadcaster
    this.#price = opts.price
    this.#logger = opts.logger
    this.#batchMax = opts.batchMax ?? FEED_BATCH_MAX
    this.#onDemand = opts.onDemand ?? false
    this.#idleStopMs = opts.idleStopMs ?? FEED_IDLE_STOP_MS
    if (!Number.isSafeInteger(this.#batchMax) || this.#batchMax < 1) throw new RangeError(`batchMax must be a positive integer, got ${String(opts.batchMax)}`)
    if (!Number.isFinite(this.#idleStopMs) || this.#idleStopMs < 0) throw new RangeError(`idleStopMs must be a non-negative number, got ${String(opts.idleStopMs)}`)
    this.#send = this.#b.send.bind(this.#b)
  }

  /**
   * Attaches the broadcaster and subscribes to the alert frames; follows the stream from its
   * current end (on demand: from the first subscriber on). Resolves once the subscriptions exist.
   * Call before HTTP serves /ws.
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
    await this.#attach()
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
        if (this.#send(notice.type === 'budget' ? { type: 'budget', budget: notice } : { type: 'alert', alert: notice })) this.#stats.alerts++
      }
    })
    if (this.#onDemand) {
      // Subscribers' messages pass through the feed from now on (see the file comment).
      this.#b.send = (m: BroadcastMessage) => this.#fromOutside(m)
      return
    }
    try {
      await this.#followFromHere()
    } catch (err) {
      this.#alertSub.unsubscribe()
      this.#alertSub = null
      throw err
    }
  }

  /** Reads the stream's end L and tells the broadcaster: positions are the stream's, up to L handled. */
  async #attach(): Promise<void> {
    const last = await this.#log.lastSeq()
    this.#startSeq = last
    this.#lastSeq = last
    this.#lag = 0
    const attached = this.#send({
      type: 'attach',
      replaySource: (from, through, project, signal) => this.#replay(from, through, project, signal),
      logEnd: () => this.#lastSeq + this.#lag + 1,
      seq: last
    })
    if (!attached) throw new Error('the broadcaster refused the cluster feed (closed or mailbox full)')
  }

  /** Makes the consumer from the seq after the last handed over and starts the run loop. */
  async #followFromHere(): Promise<void> {
    this.#halt = false
    this.#running = true
    try {
      this.#messages = await this.#follow()
    } catch (err) {
      this.#running = false
      throw err
    }
    this.#state = 'following'
    this.#loop = this.#run(this.#messages)
  }

  /** On demand: a message for the broadcaster from outside (the /ws route, the broadcaster itself). */
  #fromOutside(m: BroadcastMessage): boolean {
    if (m.type === 'subscribe') {
      this.#sinks.add(m.sink)
      if (this.#idleTimer !== null) {
        clearTimeout(this.#idleTimer)
        this.#idleTimer = null
      }
      if (this.#state === 'following' || this.#stopping) return this.#send(m)
      this.#held.push(m)
      if (this.#state === 'idle') this.#transition = this.#wakeUp()
      return true
    }
    if (m.type === 'unsubscribe' || m.type === 'pong') {
      if (m.type === 'unsubscribe') {
        this.#sinks.delete(m.sink)
        if (this.#sinks.size === 0 && this.#state === 'following') this.#armIdle()
      }
      if (this.#state === 'starting' || this.#state === 'pausing') {
        this.#held.push(m)
        return true
      }
    }
    return this.#send(m)
  }

  /** On demand: follows the stream again for the held subscribers, then hands them over. */
  async #wakeUp(): Promise<void> {
    this.#state = 'starting'
    try {
      await this.#attach()
      if (this.#stopping) throw new Error('the feed is stopping')
      await this.#followFromHere()
      this.#stats.follows++
    } catch (err) {
      this.#state = 'idle'
      const held = this.#held
      this.#held = []
      if (!this.#stopping) this.#logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'cluster feed: could not follow the event stream for a new /ws subscriber; it is closed (try again later)')
      for (const m of held) {
        // Closing a socket sends its unsubscribe through #fromOutside (idle: straight on).
        if (m.type === 'subscribe') m.sink.close(CLOSE_TRY_AGAIN_LATER, 'server busy, retry later')
        else this.#send(m)
      }
      return
    } finally {
      this.#transition = null
    }
    this.#handOverHeld()
  }

  /** Hands the held subscribers' messages over in order; a refused subscribe is closed. */
  #handOverHeld(): void {
    const held = this.#held
    this.#held = []
    for (const m of held) {
      if (!this.#send(m) && m.type === 'subscribe') m.sink.close(CLOSE_TRY_AGAIN_LATER, 'server busy, retry later')
    }
    if (this.#sinks.size === 0 && this.#state === 'following') this.#armIdle()
  }

  #armIdle(): void {
    if (this.#idleTimer !== null || this.#stopping) return
    this.#idleTimer = setTimeout(() => {
      this.#idleTimer = null
      if (this.#sinks.size === 0 && this.#state === 'following' && !this.#stopping) this.#transition = this.#pause()
    }, this.#idleStopMs)
    this.#idleTimer.unref()
  }

  /** On demand: stops following (nobody listens); subscribers that came meanwhile wake it again. */
  async #pause(): Promise<void> {
    this.#state = 'pausing'
    await this.#endFollow()
    this.#stats.pauses++
    this.#state = 'idle'
    this.#transition = null
    if (this.#stopping) return
    if (this.#held.some((m) => m.type === 'subscribe')) this.#transition = this.#wakeUp()
    else {
      const held = this.#held
      this.#held = []
      for (const m of held) this.#send(m)
    }
  }

  /** Ends the current follow and waits for its loop. */
  async #endFollow(): Promise<void> {
    this.#halt = true
    this.#wake?.()
    await this.#messages?.close().catch(() => {})
    await this.#loop
    this.#messages = null
    this.#loop = null
    this.#running = false
  }

  /** Stops following (the broadcaster stays: its owner closes it). Safe twice. */
  async stop(): Promise<void> {
    if (this.#stopping) return this.#loop ?? undefined
    this.#stopping = true
    if (this.#idleTimer !== null) clearTimeout(this.#idleTimer)
    this.#idleTimer = null
    this.#alertSub?.unsubscribe()
    this.#alertSub = null
    await this.#transition?.catch(() => {})
    await this.#endFollow()
    this.#running = false
    if (this.#onDemand && this.#started) {
      // The broadcaster's own send again; held messages go to it (its owner closes it).
      delete (this.#b as { send?: unknown }).send
      const held = this.#held
      this.#held = []
      for (const m of held) this.#send(m)
    }
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

  /** Follows the stream until stopped (or paused); a consumer that ends on its own is replaced. */
  async #run(first: ConsumerMessages): Promise<void> {
    let messages: ConsumerMessages | null = first
    while (!this.#halt) {
      try {
        messages ??= await this.#follow()
        this.#messages = messages
        if (this.#halt) break
        if (!(await this.#drain(messages))) {
          this.#logger.warn({ lastSeq: this.#lastSeq }, 'cluster feed: the broadcaster closed; the feed stops')
          break
        }
        if (this.#halt) break
        this.#logger.warn({ lastSeq: this.#lastSeq }, 'cluster feed: the stream consumer ended; following again')
      } catch (err) {
        if (this.#halt) break
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
        batch.push(this.#price(decodeEvent(m.seq, m.data, priceRevOf(m.headers))))
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
