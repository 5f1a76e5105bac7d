/**
 * Broadcaster: one actor that receives every priced batch in log order and fans it out to
 * WebSocket subscribers, without ever slowing ingestion and with bounded memory per socket.
 *
 * ```
 *  events batch ──► for each event: JSON + WS frame built ONCE ──► pushed (by reference) onto
 *                                                                  the list of every filter
 *                                                                  group it matches
 *  tick (a timer owned by the topology, ≤ flushMs after the first pending frame)
 *     └─► per group: ONE Buffer.concat of its frames ──► the same bytes written to each member
 *         socket with ONE write (the kernel sees one send per socket per tick, not one per event)
 * ```
 *
 * - Projects (README: Projects): a subscriber belongs to one project and its groups are kept under
 *   that project, so an event is only ever matched against its own project's groups, and an
 *   alert (which carries its rule's project) only reaches that project's subscribers. Isolation
 *   is by construction: no frame of one project is ever put on another project's list.
 * - Filters (README: Dimensions): model, provider (lists), status, user_id, session_id, tag and
 *   metadata.KEY (a top-level value compared as its dimension text), all ANDed; the same
 *   test applies to the live stream and to `since_seq` replays.
 * - Subscribers with the same project and filter share a group, so the per-event cost grows
 *   with the number of distinct filters in the event's project, not of sockets; the per-tick
 *   cost is one write per socket.
 * - Frames are built here (RFC 6455 text frames, server → client frames are never masked)
 *   because `ws.send()` frames every message again for every socket; ws exposes its framing
 *   as `Sender.frame()` for exactly this broadcast case (websockets/ws#1016), but the server
 *   does not depend on ws directly, and a text frame header is a dozen lines.
 * - Backpressure: a socket's `buffered` bytes (written, not yet taken by the kernel) plus its
 *   private queue may not pass `maxBufferedBytes`. A tick's bytes that do not fit are dropped
 *   for that socket and counted; once it drains to half the cap it gets
 *   `{"type":"dropped","count":N}` exactly where the gap is, then the live stream again.
 *   A socket that keeps dropping for `stuckMs` is closed with 1013 (try again later).
 * - Heartbeat: every `pingMs` each socket is pinged; one that did not answer the previous
 *   ping is terminated.
 * - `since_seq`: a subscription is a message in this actor's mailbox, handled between two
 *   event batches: every event with seq ≤ `lastSeq` has been handled here and every later one
 *   is still to come. The newcomer stays out of the live stream while it catches up from the
 *   log, `replayStep` events per message (so a long replay never holds the event loop), each
 *   step reading up to the CURRENT `lastSeq` (everything up to it is committed, so readable).
 *   The step that reaches `lastSeq` flushes the group lists (they hold only seqs ≤ lastSeq)
 *   and joins the group in the same turn, so the first live frame it gets is lastSeq + 1:
 *   no gap, no duplicate.
 * - Cluster mode (src/cluster/feed.ts): one `attach` message hands this actor to the cluster
 *   feed, which sends every event of the stream (whatever node took it) in stream-seq order as
 *   the cost stage does on a single node, and the alert frames of every node.
 * - `since_seq` from an asynchronous log (cluster mode, `replaySource`: the JetStream stream): a
 *   read cannot happen inside one turn, and re-reading up to the current `lastSeq` after each
 *   read would never meet a stream that keeps moving. So the subscriber's seam is fixed when it
 *   subscribes, at H = `lastSeq`: one read (outside the actor, its batches sent back here as
 *   `replayed` messages) covers (since, H], while the live frames it matches (all past H, alerts
 *   too) are HELD for it in arrival order, under a byte cap of their own (so a socket's memory
 *   here is at most twice the cap while it catches up). When the read ends: replay
 *   frames, held frames, then it joins its group after the seam flush — no gap, no duplicate.
 *   A read that fails, or is not done within `stuckMs`, closes the socket (1011 / 1013).
 *
 * No timers and no `Date.now()` here: the clock is injected and the topology turns
 * `schedule(delay)` requests into `{ type: 'tick' }` messages.
 */
import { Actor, assertNever, type ActorOptions } from './actor.js'
import type { PricedEvent } from '../events.js'
import type { Clock } from '../clock.js'
import type { Filters } from '../analytics/reader.js'
import { metadataValue } from '../analytics/dimensions.js'
import type { BudgetEventRecord } from '../store/alert-events.js'

/**
 * An alert transition as pushed to WebSocket clients (README: Live stream). `project` is its rule's
 * project: only that project's subscribers get it.
 */
export interface AlertNotice {
  type: 'alert'
  project: string
  rule_id: string
  rule_name: string
  state: 'firing' | 'resolved' | 'ok'
  value: number | null
  threshold: number
  at: string
  /** A grouped rule's group (null: the events without the dimension, or a rule without `group_by`; absent in frames of older nodes). */
  group?: string | null
}

/**
 * A budget threshold reached (src/budgets/evaluator.ts), as pushed to WebSocket clients of its
 * project: `{"type":"budget",…}`, delivered exactly like an {@link AlertNotice}.
 */
export type BudgetNotice = Omit<BudgetEventRecord, 'id' | 'delivery' | 'period_end' | 'group_by'> & {
  /** Its record in `GET /alerts/events`. */
  event_id: string
}

/**
 * One subscriber's socket as the broadcaster sees it (src/http/ws.ts adapts a `ws` socket;
 * tests use a fake). The object itself is the subscription's identity.
 */
export interface SocketSink {
  /** True while frames may be written (handshake done, no close frame sent or received). */
  readonly open: boolean
  /** Bytes written and not yet taken by the kernel (ws's `bufferedAmount`). */
  readonly buffered: number
  /** Writes whole, already framed WebSocket frames. Never throws. */
  write(frames: Buffer): void
  ping(): void
  /** Starts the closing handshake with `code`. */
  close(code: number, reason: string): void
  /** Destroys the connection at once. */
  terminate(): void
}

/**
 * What a subscriber wants: events of `project` only, and of those the ones every given filter
 * matches (AND). `models`/`providers` null = any; an absent dimension filter = any.
 */
export interface SubscriptionFilter extends Omit<Filters, 'models' | 'providers'> {
  /** The project the subscriber acts in (its key's, or the one an owner named). */
  project: string
  models: ReadonlySet<string> | null
  providers: ReadonlySet<string> | null
}

export type BroadcastMessage =
  | { type: 'events'; events: PricedEvent[] }
  | { type: 'alert'; alert: AlertNotice }
  | { type: 'budget'; budget: BudgetNotice }
  | { type: 'subscribe'; sink: SocketSink; filter: SubscriptionFilter; sinceSeq: number | null }
  | { type: 'unsubscribe'; sink: SocketSink }
  | { type: 'pong'; sink: SocketSink }
  | { type: 'tick' }
  /** Sent by the broadcaster to itself: the next slice of a `since_seq` catch-up. */
  | { type: 'replay'; sink: SocketSink }
  /**
   * Sent to itself by an asynchronous catch-up (`replaySource`): the next batch of the read, or
   * its end (`done`), or its failure (`error`, with `done`).
   */
  | { type: 'replayed'; sink: SocketSink; events: PricedEvent[]; done: boolean; error?: unknown }
  /**
   * Cluster mode (src/cluster/feed.ts), sent once before any subscriber: from now on events come
   * from the cluster feed, `since_seq` replays read `replaySource`, the log's end is `logEnd()`,
   * and every event up to `seq` (the stream's last when the feed started) counts as handled.
   */
  | { type: 'attach'; replaySource: NonNullable<BroadcasterOptions['replaySource']>; logEnd: () => number; seq: number }
  /**
   * Sent once by the engine before any subscriber (src/forget.ts): `forgotten(seq)` is true for
   * the events of a running DELETE /events, which `since_seq` replays then pass over.
   */
  | { type: 'exclude'; forgotten: (seq: number) => boolean }

/** Tunables; every one has a default (see {@link DEFAULT_BROADCAST_LIMITS}). */
export interface BroadcastLimits {
  /** Longest a frame waits for the flush that writes it, in ms. */
  flushMs: number
  /** Per-socket cap on bytes not yet taken by the kernel (written + queued here). */
  maxBufferedBytes: number
  /** A socket that keeps dropping (cannot drain to half the cap) this long is closed with 1013. */
  stuckMs: number
  /** Ping period; a socket that did not answer the previous ping is terminated. */
  pingMs: number
  /**
   * Most log positions a `since_seq` replay may be behind the stream; older ones are skipped
   * and reported as dropped.
   */
  replayMax: number
  /** Log events read per catch-up message (the event loop is free in between). */
  replayStep: number
  /** Most subscribers at once; more are closed with 1013 (the route answers 503 first). */
  maxSubscribers: number
}

export const DEFAULT_BROADCAST_LIMITS: Readonly<BroadcastLimits> = Object.freeze({
  flushMs: 4,
  maxBufferedBytes: 4 * 1024 * 1024,
  stuckMs: 10_000,
  pingMs: 30_000,
  replayMax: 10_000,
  replayStep: 500,
  maxSubscribers: 1_000
})

/** Close codes (RFC 6455 §7.4 and the IANA registry). */
export const CLOSE_TRY_AGAIN_LATER = 1013
export const CLOSE_INTERNAL_ERROR = 1011

export interface BroadcasterOptions extends ActorOptions {
  clock: Clock
  /** Asks for a `{ type: 'tick' }` message in about `delayMs` (the owner keeps the earliest). */
  schedule: (delayMs: number) => void
  /**
   * The log's events with seq ≥ `from`, priced, in log order (for `since_seq` replays), read
   * synchronously a slice at a time. Required unless `replaySource` is given.
   */
  history?: (from: number) => Iterable<PricedEvent[]>
  /**
   * Cluster mode, instead of `history`: `project`'s events with `from` ≤ seq ≤ `through`, priced,
   * in seq order, in batches, read asynchronously (see the header: the seam is fixed at
   * subscribe time and live frames are held meanwhile). Stops early once `signal` aborts.
   */
  replaySource?: (from: number, through: number, project: string, signal: AbortSignal) => AsyncIterable<PricedEvent[]>
  /** The seq the log will assign next: a `since_seq` at or past it comes from another log. */
  logEnd: () => number
  /** Highest seq handled before this actor existed (restored snapshot), else -1. */
  startSeq?: number
  limits?: Partial<BroadcastLimits>
}

/** Counters for /metrics. Messages count once per socket. */
export interface BroadcastStats {
  subscribers: number
  /** Messages written to sockets (replayed ones and drop notices included). */
  messagesSent: number
  bytesSent: number
  /** Messages a socket did not get: over its cap, or older than a replay's bound. */
  messagesDropped: number
  /** `{"type":"dropped"}` notices sent. */
  dropNotices: number
  /** Messages sent from the log for `since_seq`. */
  replayedMessages: number
  /** Sockets closed with 1013 for staying over their cap past `stuckMs`. */
  closedSlow: number
  /** Sockets terminated for not answering a ping. */
  reapedDead: number
  /** Subscriptions refused: over `maxSubscribers`, or the replay failed. */
  refused: number
  /** Highest seq handled. */
  lastSeq: number
}

/** Subscribers sharing one filter share one list of frames per tick. */
interface Group {
  readonly key: string
  readonly filter: SubscriptionFilter
  readonly members: Set<Subscriber>
  frames: Buffer[]
  bytes: number
}

interface Subscriber {
  readonly sink: SocketSink
  readonly filter: SubscriptionFilter
  /** Its group once it is in the live stream; null while it waits or catches up. */
  group: Group | null
  /** While it catches up from the log: the next seq to read; else null. */
  replayNext: number | null
  /**
   * Asynchronous catch-up only (`replaySource`), else null: the live frames it matched since it
   * subscribed (seq past `holdThrough`, and alerts), in arrival order, written after the replay.
   */
  held: Buffer[] | null
  heldBytes: number
  /** Live messages it missed while held frames were over its cap (from the first, all later). */
  heldDropped: number
  heldDroppedSince: number
  /** Asynchronous catch-up: the seam, `lastSeq` when it subscribed (the read covers up to it). */
  holdThrough: number
  /** Asynchronous catch-up: when it began (clock ms), and how to stop its read. */
  replayStarted: number
  replayAbort: AbortController | null
  /**
   * Set while the subscriber waits outside any group for events it already has: `since_seq`
   * named an accepted event this actor has not handled yet. It joins at the first seq past it.
   */
  waitThrough: number | null
  /** Frames for this socket only (replay, replay-skip notice), written before any group frame. */
  own: Buffer[]
  ownBytes: number
  /** Messages dropped since the last notice; > 0 means "dropping until drained". */
  dropped: number
  /** When the current dropping spell began (clock ms). */
  droppingSince: number
  alive: boolean
}

/**
 * One final, unmasked text frame (RFC 6455 §5.2) holding `payload`, header and payload in
 * one Buffer so it can be shared by every socket and concatenated without further copies.
 */
export function textFrame(payload: string): Buffer {
  const len = Buffer.byteLength(payload)
  const head = len < 126 ? 2 : len < 65_536 ? 4 : 10
  const buf = Buffer.allocUnsafe(head + len)
  buf[0] = 0x81 // FIN + opcode 1 (text)
  if (head === 2) {
    buf[1] = len
  } else if (head === 4) {
    buf[1] = 126
    buf.writeUInt16BE(len, 2)
  } else {
    buf[1] = 127
    buf.writeUInt32BE(Math.floor(len / 2 ** 32), 2)
    buf.writeUInt32BE(len >>> 0, 6)
  }
  buf.write(payload, head, 'utf8')
  return buf
}

/**
 * The WebSocket message of one event (README: Live stream): cost in dollars, timestamp ISO, and the
 * dimensions `user_id`, `session_id`, `tags` (null when the event has none).
 */
export function eventMessage(e: PricedEvent): string {
  const { id, seq, model, provider, total, latency, costNanos, user, session, tags } = e
  // The message written out field by field: one JSON.stringify per string (the object form
  // built a 13-key object and walked it, ~2.5× the time in the ws bench's profile). Byte for
  // byte the object form's output (test/actors/broadcaster-message.test.ts); anything that form
  // would treat specially (an undefined field is left out, a non-finite number is null) takes it.
  if (
    typeof id !== 'string' || typeof model !== 'string' || typeof provider !== 'string' ||
    !Number.isFinite(seq) || !Number.isFinite(total) || !Number.isFinite(latency) || !Number.isFinite(costNanos) ||
    user === undefined || session === undefined || tags === undefined
  ) return eventMessageObject(e)
  return `{"type":"event","id":${JSON.stringify(id)},"seq":${seq},"timestamp":"${isoTime(e.ts)}","model":${JSON.stringify(model)},"provider":${JSON.stringify(provider)},"total_tokens":${total},"latency_ms":${latency},"cost":${costNanos / 1e9},"status":${e.error ? '"error"' : '"success"'},"user_id":${JSON.stringify(user)},"session_id":${JSON.stringify(session)},"tags":${JSON.stringify(tags)}}`
}

/** The last whole second {@link isoTime} formatted, and its text up to the milliseconds. */
let isoSecond = NaN
let isoPrefix = ''

/**
 * `new Date(ts).toISOString()`, with the text up to the seconds kept from the previous call:
 * a live stream's events mostly fall in the same second, and formatting a Date was the larger
 * part of the message's cost. Anything a Date would treat specially (a fraction, out of range)
 * goes to Date as before.
 */
function isoTime(ts: number): string {
  if (!Number.isInteger(ts) || Math.abs(ts) > 8.64e15) return new Date(ts).toISOString()
  const second = Math.floor(ts / 1000)
  if (second !== isoSecond) {
    // Every form (years 0–9999, ±YYYYYY outside) ends in ".mmmZ".
    isoPrefix = new Date(second * 1000).toISOString().slice(0, -4)
    isoSecond = second
  }
  const ms = ts - second * 1000
  return isoPrefix + (ms < 10 ? '00' : ms < 100 ? '0' : '') + ms + 'Z'
}

/** {@link eventMessage} as an object through JSON.stringify: the definition of its bytes. */
export function eventMessageObject(e: PricedEvent): string {
  return JSON.stringify({
    type: 'event',
    id: e.id,
    seq: e.seq,
    timestamp: new Date(e.ts).toISOString(),
    model: e.model,
    provider: e.provider,
    total_tokens: e.total,
    latency_ms: e.latency,
    cost: e.costNanos / 1e9,
    status: e.error ? 'error' : 'success',
    user_id: e.user,
    session_id: e.session,
    tags: e.tags
  })
}

const droppedFrame = (count: number) => textFrame(`{"type":"dropped","count":${count}}`)

/**
 * Whether event `e` is one `f` asks for: its project, then every filter given (AND). A metadata
 * filter compares the event's own top-level value as a dimension (`42`, `true`, a string as
 * itself); a missing key or a non-scalar value never matches.
 */
export function matchesSubscription(f: SubscriptionFilter, e: PricedEvent): boolean {
  if (e.project !== f.project) return false
  if (f.models !== null && !f.models.has(e.model)) return false
  if (f.providers !== null && !f.providers.has(e.provider)) return false
  if (f.status !== undefined && (e.error ? 'error' : 'success') !== f.status) return false
  if (f.user_id !== undefined && e.user !== f.user_id) return false
  if (f.session_id !== undefined && e.session !== f.session_id) return false
  if (f.tag !== undefined && (e.tags === null || !e.tags.includes(f.tag))) return false
  if (f.metadata !== undefined) {
    for (const key in f.metadata) {
      if (e.meta === null || !Object.hasOwn(e.meta, key)) return false
      if (metadataValue(e.meta[key]) !== f.metadata[key]) return false
    }
  }
  return true
}

/** The filter as a canonical string (within a project): equal filters share a group. */
function filterKey(f: SubscriptionFilter): string {
  const set = (s: ReadonlySet<string> | null) => (s === null ? null : [...s].sort())
  const meta = f.metadata === undefined ? null : Object.entries(f.metadata).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  return JSON.stringify([set(f.models), set(f.providers), f.status ?? null, f.user_id ?? null, f.session_id ?? null, f.tag ?? null, meta])
}

function checkLimits(l: BroadcastLimits): void {
  for (const [name, value] of Object.entries(l)) {
    if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`broadcast limit ${name} must be a positive integer, got ${String(value)}`)
  }
}

export class Broadcaster extends Actor<BroadcastMessage> {
  readonly #opts: BroadcasterOptions
  readonly #limits: BroadcastLimits
  /** A group's frames are flushed early once they reach this many bytes. */
  readonly #flushBytes: number
  readonly #subs = new Map<SocketSink, Subscriber>()
  /** The replay sources and log end: the options', until an `attach` message replaces them. */
  #history: BroadcasterOptions['history']
  #replaySource: BroadcasterOptions['replaySource']
  #logEnd: () => number
  /** Events being deleted (see the `exclude` message): replays pass over them. */
  #forgotten: (seq: number) => boolean = () => false
  /** Groups by project, then by filter key: an event is matched against its project's only. */
  readonly #groups = new Map<string, Map<string, Group>>()
  /** Subscribers with `waitThrough` set, not yet in their group. */
  readonly #waiting = new Set<Subscriber>()
  /** Subscribers catching up from the log (`replayNext` set), not yet in their group. */
  readonly #replaying = new Set<Subscriber>()
  /** Of those, the ones catching up asynchronously (`held` set): live frames are held for them. */
  readonly #holding = new Set<Subscriber>()
  #seen = 0
  #lastSeq: number
  /** Some group holds frames not yet flushed. */
  #pending = false
  #lastFlush = -Infinity
  #lastPing: number
  #stats = { messagesSent: 0, bytesSent: 0, messagesDropped: 0, dropNotices: 0, replayedMessages: 0, closedSlow: 0, reapedDead: 0, refused: 0 }

  /**
   * @throws RangeError `broadcast limit <name> must be a positive integer, got <value>`
   */
  constructor(options: BroadcasterOptions) {
    super('broadcaster', options)
    this.#opts = options
    this.#limits = { ...DEFAULT_BROADCAST_LIMITS, ...options.limits }
    checkLimits(this.#limits)
    if (options.history === undefined && options.replaySource === undefined) throw new TypeError('broadcaster needs history or replaySource')
    this.#history = options.history
    this.#replaySource = options.replaySource
    this.#logEnd = options.logEnd
    // A tick's blob must fit well under the cap, or a healthy socket would drop whole ticks.
    this.#flushBytes = Math.max(1, Math.min(256 * 1024, Math.floor(this.#limits.maxBufferedBytes / 4)))
    this.#lastSeq = options.startSeq ?? -1
    this.#lastPing = options.clock.now()
  }

  protected receive(message: BroadcastMessage): void {
    switch (message.type) {
      case 'events':
        this.#events(message.events)
        return
      case 'alert':
      case 'budget': {
        // Alerts (and budget alerts) go to every subscriber of the rule's project, whatever its
        // filter (a rule's filters are not the subscriber's), and to no one else.
        const notice = message.type === 'alert' ? message.alert : message.budget
        const project = notice.project
        if (this.#subs.size === 0) return
        let frame: Buffer | undefined
        const groups = this.#groups.get(project)
        if (groups !== undefined) {
          frame = textFrame(JSON.stringify(notice))
          for (const g of groups.values()) this.#enqueue(g, frame)
        }
        // Not in the log, so not replayable: those outside the live stream get it now.
        for (const sub of this.#replaying) {
          if (sub.filter.project !== project) continue
          frame ??= textFrame(JSON.stringify(notice))
          // An asynchronous catch-up keeps live order: the alert goes after the held events.
          if (sub.held !== null) this.#holdFrame(sub, frame, this.#opts.clock.now())
          else this.#own(sub, frame)
        }
        for (const sub of this.#waiting) if (sub.filter.project === project) this.#own(sub, (frame ??= textFrame(JSON.stringify(notice))))
        this.#afterEnqueue()
        return
      }
      case 'subscribe':
        this.#subscribe(message.sink, message.filter, message.sinceSeq)
        return
      case 'unsubscribe': {
        const sub = this.#subs.get(message.sink)
        if (sub !== undefined) this.#remove(sub)
        return
      }
      case 'pong': {
        const sub = this.#subs.get(message.sink)
        if (sub !== undefined) sub.alive = true
        return
      }
      case 'tick':
        this.#tick()
        return
      case 'replay': {
        const sub = this.#subs.get(message.sink)
        if (sub !== undefined && sub.replayNext !== null) this.#replayStep(sub)
        return
      }
      case 'attach':
        this.#history = undefined
        this.#replaySource = message.replaySource
        this.#logEnd = message.logEnd
        // The stream's positions, not whatever this actor saw before (a local log, a snapshot).
        this.#lastSeq = message.seq
        return
      case 'replayed': {
        const sub = this.#subs.get(message.sink)
        if (sub !== undefined && sub.held !== null) this.#replayed(sub, message.events, message.done, message.error)
        return
      }
      case 'exclude':
        this.#forgotten = message.forgotten
        return
      default:
        assertNever(message)
    }
  }

  get eventsSeen(): number {
    return this.#seen
  }

  /** Highest seq handled (events up to it are written, queued or dropped for every subscriber). */
  get lastSeq(): number {
    return this.#lastSeq
  }

  /** The limits in force (defaults merged with the options). */
  get limits(): Readonly<BroadcastLimits> {
    return this.#limits
  }

  get broadcastStats(): BroadcastStats {
    return { subscribers: this.#subs.size, ...this.#stats, lastSeq: this.#lastSeq }
  }

  #events(events: PricedEvent[]): void {
    if (events.length === 0) return
    this.#seen += events.length
    this.#lastSeq = events[events.length - 1].seq
    if (this.#groups.size === 0 && this.#waiting.size === 0 && this.#holding.size === 0) return
    for (const e of events) {
      if (this.#waiting.size > 0) this.#admit(e.seq)
      let frame: Buffer | undefined
      if (this.#holding.size > 0) frame = this.#hold(e)
      const groups = this.#groups.get(e.project)
      if (groups === undefined) continue
      for (const g of groups.values()) {
        if (!matchesSubscription(g.filter, e)) continue
        // Serialised once per event, whatever the number of groups and sockets.
        frame ??= textFrame(eventMessage(e))
        this.#enqueue(g, frame)
        if (g.bytes >= this.#flushBytes) this.#flush(this.#opts.clock.now())
      }
    }
    this.#afterEnqueue()
  }

  /** Moves waiting subscribers whose `waitThrough` is below `seq` into their groups. */
  #admit(seq: number): void {
    let flushed = false
    for (const sub of this.#waiting) {
      if (sub.waitThrough! >= seq) continue
      // Same seam as in #subscribe: the group's list may hold events before `seq`.
      if (!flushed) this.#flush(this.#opts.clock.now())
      flushed = true
      sub.waitThrough = null
      this.#waiting.delete(sub)
      this.#join(sub)
    }
  }

  #join(sub: Subscriber): void {
    const project = sub.filter.project
    let groups = this.#groups.get(project)
    if (groups === undefined) {
      groups = new Map()
      this.#groups.set(project, groups)
    }
    const key = filterKey(sub.filter)
    let group = groups.get(key)
    if (group === undefined) {
      group = { key, filter: sub.filter, members: new Set(), frames: [], bytes: 0 }
      groups.set(key, group)
    }
    group.members.add(sub)
    sub.group = group
  }

  #enqueue(g: Group, frame: Buffer): void {
    g.frames.push(frame)
    g.bytes += frame.length
    this.#pending = true
  }

  /** Leading edge: flush now when the last flush is older than flushMs; else within flushMs. */
  #afterEnqueue(): void {
    if (!this.#pending) return
    const now = this.#opts.clock.now()
    if (now - this.#lastFlush >= this.#limits.flushMs) this.#flush(now)
    this.#arm(now)
  }

  #subscribe(sink: SocketSink, filter: SubscriptionFilter, sinceSeq: number | null): void {
    if (this.#subs.has(sink)) return
    if (this.#subs.size >= this.#limits.maxSubscribers) {
      this.#stats.refused++
      sink.close(CLOSE_TRY_AGAIN_LATER, 'too many subscribers')
      return
    }
    const now = this.#opts.clock.now()
    // The seam: group lists may still hold events with seq ≤ lastSeq. Write them out to the
    // existing members first, so the newcomer's live stream starts strictly after lastSeq.
    this.#flush(now)
    const sub: Subscriber = {
      sink, filter, group: null, replayNext: null, held: null, heldBytes: 0, heldDropped: 0, heldDroppedSince: now, holdThrough: -1, replayStarted: now, replayAbort: null,
      waitThrough: null, own: [], ownBytes: 0, dropped: 0, droppingSince: now, alive: true
    }
    this.#subs.set(sink, sub)
    if (sinceSeq !== null && sinceSeq < this.#lastSeq) {
      sub.replayNext = sinceSeq + 1
      this.#replaying.add(sub)
      if (this.#replaySource === undefined) this.#replayStep(sub)
      else this.#replayAsync(sub, now)
    } else if (sinceSeq !== null && sinceSeq > this.#lastSeq && sinceSeq < this.#logEnd()) {
      // The client has events (it saw their ids in 202 answers) that have not reached us yet.
      sub.waitThrough = sinceSeq
      this.#waiting.add(sub)
    } else {
      this.#join(sub)
    }
    this.#arm(now)
  }

  /**
   * One slice of a catch-up: writes the log's events from `replayNext` on that match the
   * filter, at most `replayStep` of them and none past `lastSeq`. When it reaches `lastSeq` the
   * subscriber joins the live stream; else it asks for the next slice. If the stream is more
   * than `replayMax` positions ahead, the older ones are skipped and announced as dropped.
   */
  #replayStep(sub: Subscriber): void {
    const now = this.#opts.clock.now()
    let from = sub.replayNext!
    const behind = this.#lastSeq - from + 1
    if (behind > this.#limits.replayMax) {
      // Log positions, not filtered events: counting those would mean reading them all.
      const skipped = behind - this.#limits.replayMax
      this.#own(sub, droppedFrame(skipped))
      this.#stats.messagesDropped += skipped
      this.#stats.dropNotices++
      from += skipped
    }
    const through = Math.min(this.#lastSeq, from + this.#limits.replayStep - 1)
    const cap = this.#limits.maxBufferedBytes
    try {
      outer: for (const batch of this.#history!(from)) {
        for (const e of batch) {
          if (e.seq > through) break outer
          this.#replayOne(sub, e, now, cap)
        }
      }
    } catch (err) {
      this.#stats.refused++
      this.#remove(sub)
      sub.sink.close(CLOSE_INTERNAL_ERROR, 'replay failed')
      throw err
    }
    this.#writeOwn(sub)
    sub.replayNext = through + 1
    if (sub.replayNext > this.#lastSeq) {
      sub.replayNext = null
      this.#replaying.delete(sub)
      // The seam: group lists hold only seqs ≤ lastSeq, which the replay covered.
      this.#flush(now)
      this.#join(sub)
      this.#arm(now)
    } else if (!this.send({ type: 'replay', sink: sub.sink })) {
      this.#stats.refused++
      this.#remove(sub)
      sub.sink.close(CLOSE_TRY_AGAIN_LATER, 'server busy, retry later')
    }
  }

  /**
   * Starts an asynchronous catch-up: fixes the seam at `lastSeq`, skips (and announces) what is
   * past `replayMax`, and starts the read of (since, seam] outside this actor; live frames the
   * subscriber matches are held from now on.
   */
  #replayAsync(sub: Subscriber, now: number): void {
    // The stream's positions start at 1 (JetStream sequences): -1 and 0 mean "from the start".
    let from = Math.max(1, sub.replayNext!)
    const behind = this.#lastSeq - from + 1
    if (behind > this.#limits.replayMax) {
      const skipped = behind - this.#limits.replayMax
      this.#own(sub, droppedFrame(skipped))
      this.#stats.messagesDropped += skipped
      this.#stats.dropNotices++
      from += skipped
    }
    sub.replayNext = from
    sub.holdThrough = this.#lastSeq
    sub.held = []
    sub.replayStarted = now
    sub.replayAbort = new AbortController()
    this.#holding.add(sub)
    void this.#readReplay(sub.sink, from, this.#lastSeq, sub.filter.project, sub.replayAbort.signal)
  }

  /** The read of one asynchronous catch-up, outside the actor: its batches come back as messages. */
  async #readReplay(sink: SocketSink, from: number, through: number, project: string, signal: AbortSignal): Promise<void> {
    let error: unknown
    try {
      for await (const events of this.#replaySource!(from, through, project, signal)) {
        if (signal.aborted) return
        if (events.length > 0 && !this.send({ type: 'replayed', sink, events, done: false })) throw new Error('broadcaster mailbox full during a since_seq replay')
      }
    } catch (err) {
      error = err
    }
    if (signal.aborted) return
    // Refused (mailbox full, closing): the replay deadline in #tick closes the socket.
    this.send(error === undefined ? { type: 'replayed', sink, events: [], done: true } : { type: 'replayed', sink, events: [], done: true, error })
  }

  /** One batch (or the end) of an asynchronous catch-up; at the end the subscriber joins. */
  #replayed(sub: Subscriber, events: PricedEvent[], done: boolean, error: unknown): void {
    if (error !== undefined) {
      this.#stats.refused++
      this.#remove(sub)
      sub.sink.close(CLOSE_INTERNAL_ERROR, 'replay failed')
      throw error
    }
    const now = this.#opts.clock.now()
    const cap = this.#limits.maxBufferedBytes
    for (const e of events) {
      // Only (replayNext, seam]: a source that repeats or overshoots adds no duplicate.
      if (e.seq < sub.replayNext! || e.seq > sub.holdThrough) continue
      sub.replayNext = e.seq + 1
      // The held frames (newer) have their own cap: the older replay frames are not refused for
      // them; if these do not fit, the held ones are dropped after them (one gap, then live).
      this.#replayOne(sub, e, now, cap)
    }
    this.#writeOwn(sub)
    if (!done) return
    const held = sub.held!
    if (sub.dropped > 0) {
      // Dropping until drained: the held frames go the same way, the notice counts them.
      sub.dropped += held.length + sub.heldDropped
      this.#stats.messagesDropped += held.length
    } else {
      for (const frame of held) this.#own(sub, frame)
      if (sub.heldDropped > 0) {
        sub.dropped = sub.heldDropped
        sub.droppingSince = sub.heldDroppedSince
      }
    }
    this.#endHold(sub)
    sub.replayNext = null
    this.#replaying.delete(sub)
    // The seam: group lists hold only seqs ≤ lastSeq; those past the seam were held.
    this.#flush(now)
    this.#join(sub)
    this.#writeOwn(sub)
    this.#arm(now)
  }

  /** Live event `e` for the subscribers catching up asynchronously; returns its frame if built. */
  #hold(e: PricedEvent): Buffer | undefined {
    let frame: Buffer | undefined
    const now = this.#opts.clock.now()
    for (const sub of this.#holding) {
      if (!matchesSubscription(sub.filter, e)) continue
      frame ??= textFrame(eventMessage(e))
      this.#holdFrame(sub, frame, now)
    }
    return frame
  }

  #holdFrame(sub: Subscriber, frame: Buffer, now: number): void {
    if (sub.heldDropped > 0 || sub.sink.buffered + sub.ownBytes + sub.heldBytes + frame.length > this.#limits.maxBufferedBytes) {
      if (sub.heldDropped === 0) sub.heldDroppedSince = now
      sub.heldDropped++
      this.#stats.messagesDropped++
      return
    }
    sub.held!.push(frame)
    sub.heldBytes += frame.length
  }

  /** Leaves the asynchronous catch-up state (held frames already moved or dropped). */
  #endHold(sub: Subscriber): void {
    this.#holding.delete(sub)
    sub.replayAbort?.abort()
    sub.replayAbort = null
    sub.held = null
    sub.heldBytes = 0
    sub.heldDropped = 0
  }

  #own(sub: Subscriber, frame: Buffer): void {
    sub.own.push(frame)
    sub.ownBytes += frame.length
  }

  /**
   * One replayed event for a catching-up subscriber: its frame into the subscriber's own queue
   * when it matches and fits under `cap`, else counted as dropped (from then on until it drains).
   */
  #replayOne(sub: Subscriber, e: PricedEvent, now: number, cap: number): void {
    if (!matchesSubscription(sub.filter, e) || this.#forgotten(e.seq)) return
    const frame = textFrame(eventMessage(e))
    if (sub.dropped > 0 || sub.sink.buffered + sub.ownBytes + frame.length > cap) {
      if (sub.dropped === 0) sub.droppingSince = now
      sub.dropped++
      this.#stats.messagesDropped++
      return
    }
    this.#own(sub, frame)
    this.#stats.replayedMessages++
  }

  /** Writes the frames queued for this socket only (accounted against its cap when queued). */
  #writeOwn(sub: Subscriber): void {
    if (sub.own.length === 0 || !sub.sink.open) return
    const own = sub.own.length === 1 ? sub.own[0] : Buffer.concat(sub.own, sub.ownBytes)
    sub.sink.write(own)
    this.#stats.messagesSent += sub.own.length
    this.#stats.bytesSent += own.length
    sub.own = []
    sub.ownBytes = 0
  }

  #tick(): void {
    const now = this.#opts.clock.now()
    this.#flush(now)
    for (const sub of this.#holding) {
      if (now - sub.replayStarted < this.#limits.stuckMs) continue
      this.#stats.refused++
      this.#remove(sub)
      sub.sink.close(CLOSE_TRY_AGAIN_LATER, 'since_seq replay took too long, retry later')
    }
    if (now - this.#lastPing >= this.#limits.pingMs) {
      this.#lastPing = now
      for (const sub of [...this.#subs.values()]) {
        if (!sub.alive) {
          this.#stats.reapedDead++
          this.#remove(sub)
          sub.sink.terminate()
          continue
        }
        sub.alive = false
        if (sub.sink.open) sub.sink.ping()
      }
    }
    this.#arm(now)
  }

  /** Asks for the next tick: soon while frames wait or a socket is dropping, else at the next ping. */
  #arm(now: number): void {
    if (this.#subs.size === 0) return
    // An asynchronous catch-up keeps ticks coming (its deadline is checked on ticks).
    let busy = this.#pending || this.#holding.size > 0
    if (!busy) {
      for (const sub of this.#subs.values()) {
        if (sub.dropped > 0 || sub.ownBytes > 0) {
          busy = true
          break
        }
      }
    }
    const { flushMs, pingMs } = this.#limits
    this.#opts.schedule(busy ? flushMs : Math.min(pingMs, Math.max(flushMs, pingMs - (now - this.#lastPing))))
  }

  /** Writes each group's frames, as one buffer, to each of its sockets that has room. */
  #flush(now: number): void {
    // Only a flush that wrote new frames counts for the leading edge (a seam flush may be empty).
    if (this.#pending) this.#lastFlush = now
    this.#pending = false
    for (const groups of this.#groups.values()) for (const g of groups.values()) this.#flushGroup(g, now)
  }

  #flushGroup(g: Group, now: number): void {
    let blob: Buffer | null = null
    let count = 0
    if (g.frames.length > 0) {
      blob = g.frames.length === 1 ? g.frames[0] : Buffer.concat(g.frames, g.bytes)
      count = g.frames.length
      g.frames = []
      g.bytes = 0
    }
    for (const sub of g.members) this.#deliver(sub, blob, count, now)
  }

  #deliver(sub: Subscriber, blob: Buffer | null, count: number, now: number): void {
    const sink = sub.sink
    // Closing or closed: its 'unsubscribe' is on the way; what it would get is simply lost.
    if (!sink.open) return
    this.#writeOwn(sub)
    const cap = this.#limits.maxBufferedBytes
    if (sub.dropped > 0) {
      if (sink.buffered <= cap / 2) {
        const notice = droppedFrame(sub.dropped)
        sink.write(notice)
        this.#stats.messagesSent++
        this.#stats.bytesSent += notice.length
        this.#stats.dropNotices++
        sub.dropped = 0
      } else if (now - sub.droppingSince >= this.#limits.stuckMs) {
        this.#stats.closedSlow++
        this.#remove(sub)
        sink.close(CLOSE_TRY_AGAIN_LATER, 'subscriber too slow: messages were dropped for too long')
        return
      }
    }
    if (blob === null) return
    if (sub.dropped > 0 || sink.buffered + blob.length > cap) {
      if (sub.dropped === 0) sub.droppingSince = now
      sub.dropped += count
      this.#stats.messagesDropped += count
      return
    }
    sink.write(blob)
    this.#stats.messagesSent += count
    this.#stats.bytesSent += blob.length
  }

  #remove(sub: Subscriber): void {
    this.#subs.delete(sub.sink)
    this.#waiting.delete(sub)
    this.#replaying.delete(sub)
    if (sub.held !== null) this.#endHold(sub)
    const group = sub.group
    if (group === null) return
    group.members.delete(sub)
    if (group.members.size > 0) return
    const groups = this.#groups.get(sub.filter.project)
    groups?.delete(group.key)
    if (groups?.size === 0) this.#groups.delete(sub.filter.project)
  }
}
