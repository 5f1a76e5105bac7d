/**
 * The live stream in cluster mode (src/cluster/feed.ts, DESIGN §9):
 * - the Broadcaster's asynchronous since_seq replay (`replaySource`, `attach`) on a fake source
 *   and a hand-moved clock: seam fixed at subscribe time, live frames held meanwhile, then
 *   replay + held + live with no gap or duplicate; failure, deadline, unsubscribe, cap;
 * - the ClusterFeed on one nats-server: events appended by two "ingest nodes" (two connections,
 *   two JetStreamLogs) reach a third node's broadcaster in stream-seq order with every field;
 *   projects stay apart; a since_seq subscriber gets the replay from the stream then the live
 *   stream while events keep arriving, with no gap or duplicate; alert frames published with
 *   publishAlert reach only their project's subscribers; a bad frame is skipped.
 */
import t from 'tap'
import { Broadcaster, eventMessage, textFrame, type AlertNotice, type BroadcastLimits, type SocketSink, type SubscriptionFilter } from '../../src/actors/broadcaster.js'
import { ManualClock, systemClock } from '../../src/clock.js'
import type { PendingEvent, PricedEvent, StoredEvent } from '../../src/events.js'
import { silentLog } from '../../src/log.js'
import { ClusterFeed, parseAlertNotice, publishAlert } from '../../src/cluster/feed.js'
import { JetStreamLog } from '../../src/cluster/js-log.js'
import { connectCluster, type NatsHandles } from '../../src/cluster/nats.js'
import type { ClusterConfig } from '../../src/config.js'
import { startNats } from '../helpers/nats.js'

t.setTimeout(120_000)

/** Splits written bytes back into the JSON messages of their text frames. */
function decode(buf: Buffer): any[] {
  const out: any[] = []
  let i = 0
  while (i < buf.length) {
    if (buf[i] !== 0x81) throw new Error(`not a final text frame at ${i}: ${buf[i]}`)
    let len = buf[i + 1]!
    let head = 2
    if (len === 126) {
      len = buf.readUInt16BE(i + 2)
      head = 4
    } else if (len === 127) {
      len = buf.readUInt32BE(i + 2) * 2 ** 32 + buf.readUInt32BE(i + 6)
      head = 10
    }
    out.push(JSON.parse(buf.subarray(i + head, i + head + len).toString('utf8')))
    i += head + len
  }
  return out
}

class FakeSink implements SocketSink {
  open = true
  buffered = 0
  stalled = false
  writes: Buffer[] = []
  closedWith: [number, string] | null = null
  write(frames: Buffer): void {
    this.writes.push(frames)
    if (this.stalled) this.buffered += frames.length
  }
  ping(): void {}
  close(code: number, reason: string): void {
    this.closedWith = [code, reason]
    this.open = false
  }
  terminate(): void {
    this.open = false
  }
  messages(): any[] {
    return this.writes.flatMap(decode)
  }
  events(): any[] {
    return this.messages().filter((m) => m.type === 'event')
  }
  seqs(): number[] {
    return this.events().map((m) => m.seq)
  }
}

function priced(seq: number, over: Partial<PricedEvent> = {}): PricedEvent {
  return {
    seq, id: `evt_${seq.toString(36)}_AAAAAAAAAAAA`, ts: Date.UTC(2026, 0, 1) + seq, recv: 0, model: 'gpt-4', provider: 'openai',
    prompt: 10, completion: 5, total: 15, cached: 0, reasoning: 0, latency: 100, ttft: null, error: false, cost: null, meta: null, project: 'default', user: null, session: null, tags: null,
    costNanos: 1_500_000, unpriced: false, ...over
  }
}

const inProject = (project: string, over: Partial<SubscriptionFilter> = {}): SubscriptionFilter => ({ project, models: null, providers: null, ...over })
const ALL = inProject('default')
const alert = (project: string, rule: string): AlertNotice => ({ type: 'alert', project, rule_id: rule, rule_name: `rule ${rule}`, state: 'firing', value: 2, threshold: 1, at: '2026-01-01T00:00:00.000Z' })

/** Waits (polling) until `cond` holds; fails naming `what` (a function: read at the timeout, with the state it saw) after `ms`. */
async function until(cond: () => boolean | Promise<boolean>, what: string | (() => string), ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${typeof what === 'string' ? what : what()}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

/**
 * A replay source the test releases by hand: each call is recorded with its range; `release()`
 * yields its events (from the given log) in batches of 2 and ends, `fail()` throws.
 */
class ManualSource {
  calls: Array<{ from: number; through: number; project: string; signal: AbortSignal; release: () => void; fail: (err: Error) => void }> = []
  constructor(readonly log: PricedEvent[]) {}
  readonly source = (from: number, through: number, project: string, signal: AbortSignal): AsyncIterable<PricedEvent[]> => {
    let release!: () => void
    let fail!: (err: Error) => void
    const gate = new Promise<void>((resolve, reject) => {
      release = resolve
      fail = reject
    })
    this.calls.push({ from, through, project, signal, release, fail })
    const log = this.log
    return (async function* () {
      await gate
      const rows = log.filter((e) => e.seq >= from && e.seq <= through && e.project === project)
      for (let i = 0; i < rows.length; i += 2) yield rows.slice(i, i + 2)
    })()
  }
}

function asyncSetup(opts: { limits?: Partial<BroadcastLimits>; log?: PricedEvent[]; attach?: boolean } = {}) {
  const clock = new ManualClock(1_000_000)
  const src = new ManualSource(opts.log ?? [])
  let end = 0
  const b = new Broadcaster(
    opts.attach === true
      ? { clock, schedule: () => {}, history: () => { throw new Error('the sync history must not be read once attached') }, logEnd: () => 0, limits: opts.limits }
      : { clock, schedule: () => {}, replaySource: src.source, logEnd: () => end, limits: opts.limits }
  )
  t.teardown(() => b.destroy())
  return { b, clock, src, setEnd: (n: number) => (end = n) }
}

/** Lets the replay reader's batches come back as messages and be handled. */
async function settle(b: Broadcaster): Promise<void> {
  for (let i = 0; i < 5; i++) {
    await b.idle()
    await new Promise((r) => setImmediate(r))
  }
  await b.idle()
}

t.test('async since_seq: the seam is fixed at subscribe; live frames (and alerts) are held, then replay + held + live, no gap, no duplicate', async (t) => {
  const log = Array.from({ length: 30 }, (_, i) => priced(i + 1))
  const { b, clock, src } = asyncSetup({ log })
  const other = new FakeSink()
  b.send({ type: 'subscribe', sink: other, filter: ALL, sinceSeq: null })
  b.send({ type: 'events', events: log.slice(0, 10) }) // handled 1..10
  const late = new FakeSink()
  b.send({ type: 'subscribe', sink: late, filter: ALL, sinceSeq: 4 })
  await b.idle()
  t.equal(src.calls.length, 1, 'one read')
  t.match(src.calls[0], { from: 5, through: 10, project: 'default' }, 'it reads (since, lastSeq at subscribe]')
  // The stream moves on while the read is in flight: these are held for the newcomer.
  b.send({ type: 'events', events: log.slice(10, 13) })
  b.send({ type: 'alert', alert: alert('default', 'r1') })
  b.send({ type: 'events', events: log.slice(13, 15) })
  clock.advance(5)
  b.send({ type: 'tick' })
  await b.idle()
  t.same(late.seqs(), [], 'nothing live before the replay')
  t.same(other.seqs(), Array.from({ length: 15 }, (_, i) => i + 1), 'others unaffected')
  src.calls[0]!.release()
  await settle(b)
  b.send({ type: 'events', events: log.slice(15, 18) })
  clock.advance(5)
  b.send({ type: 'tick' })
  await b.idle()
  t.same(late.seqs(), Array.from({ length: 14 }, (_, i) => i + 5), 'replay 5..10, held 11..15, live 16..18')
  const kinds = late.messages().map((m) => (m.type === 'event' ? m.seq : m.type))
  t.same(kinds.slice(0, 10), [5, 6, 7, 8, 9, 10, 11, 12, 13, 'alert'], 'the alert keeps its live place')
  t.same(late.events()[0], JSON.parse(eventMessage(log[4]!)), 'replayed frames are the live message')
  t.match(b.broadcastStats, { replayedMessages: 6, messagesDropped: 0, refused: 0, lastSeq: 18 })
})

t.test('async since_seq: project and filters apply to the read, the held frames and the live stream', async (t) => {
  const log = Array.from({ length: 20 }, (_, i) => priced(i + 1, { project: i % 2 === 0 ? 'a' : 'b', model: i % 4 < 2 ? 'm1' : 'm2' }))
  const { b, src } = asyncSetup({ log })
  b.send({ type: 'events', events: log.slice(0, 10) })
  const s = new FakeSink()
  b.send({ type: 'subscribe', sink: s, filter: inProject('a', { models: new Set(['m1']) }), sinceSeq: 0 })
  await b.idle()
  t.equal(src.calls[0]!.project, 'a')
  b.send({ type: 'events', events: log.slice(10, 15) })
  b.send({ type: 'alert', alert: alert('b', 'rb') })
  await b.idle()
  src.calls[0]!.release()
  await settle(b)
  b.send({ type: 'events', events: log.slice(15) })
  b.send({ type: 'tick' })
  await b.idle()
  const want = log.filter((e) => e.project === 'a' && e.model === 'm1').map((e) => e.seq)
  t.same(s.seqs(), want)
  t.equal(s.messages().filter((m) => m.type === 'alert').length, 0, "another project's alert never reaches it")
})

t.test('async since_seq: bounded by replayMax (skipped announced first); a failed read closes 1011; a read past stuckMs closes 1013; unsubscribe aborts the read', async (t) => {
  const log = Array.from({ length: 40 }, (_, i) => priced(i + 1))
  const { b, clock, src } = asyncSetup({ log, limits: { replayMax: 10, stuckMs: 1000 } })
  b.send({ type: 'events', events: log.slice(0, 30) })
  const bounded = new FakeSink()
  b.send({ type: 'subscribe', sink: bounded, filter: ALL, sinceSeq: -1 })
  await b.idle()
  t.match(src.calls[0], { from: 21, through: 30 })
  src.calls[0]!.release()
  await settle(b)
  t.same(bounded.messages()[0], { type: 'dropped', count: 20 })
  t.same(bounded.seqs(), Array.from({ length: 10 }, (_, i) => i + 21))

  const failing = new FakeSink()
  b.send({ type: 'subscribe', sink: failing, filter: ALL, sinceSeq: 25 })
  await b.idle()
  src.calls[1]!.fail(new Error('stream unavailable'))
  await settle(b)
  t.same(failing.closedWith, [1011, 'replay failed'])
  t.equal(b.stats.failed, 1, 'the failure is logged as a failed message')

  const slow = new FakeSink()
  b.send({ type: 'subscribe', sink: slow, filter: ALL, sinceSeq: 25 })
  const gone = new FakeSink()
  b.send({ type: 'subscribe', sink: gone, filter: ALL, sinceSeq: 25 })
  await b.idle()
  b.send({ type: 'unsubscribe', sink: gone })
  await b.idle()
  t.ok(src.calls[3]!.signal.aborted, "an unsubscribed socket's read is aborted")
  clock.advance(999)
  b.send({ type: 'tick' })
  await b.idle()
  t.equal(slow.closedWith, null, 'not before stuckMs')
  clock.advance(1)
  b.send({ type: 'tick' })
  await b.idle()
  t.same(slow.closedWith, [1013, 'since_seq replay took too long, retry later'])
  t.ok(src.calls[2]!.signal.aborted)
  src.calls[2]!.release()
  src.calls[3]!.release()
  await settle(b)
  t.equal(slow.events().length, 0, 'a late read writes nothing to a closed subscriber')
  t.match(b.broadcastStats, { subscribers: 1, refused: 2 })
})

t.test('async since_seq: held frames have a cap; past it they are dropped and announced after what was kept', async (t) => {
  const log = Array.from({ length: 30 }, (_, i) => priced(i + 1))
  const frame = textFrame(eventMessage(log[0]!)).length
  const { b, clock, src } = asyncSetup({ log, limits: { maxBufferedBytes: frame * 6 + 10 } })
  b.send({ type: 'events', events: log.slice(0, 4) })
  const s = new FakeSink()
  b.send({ type: 'subscribe', sink: s, filter: ALL, sinceSeq: 1 }) // replays 2..4
  await b.idle()
  b.send({ type: 'events', events: log.slice(4, 12) }) // 5..10 held (6 frames fit), 11 and 12 dropped
  await b.idle()
  src.calls[0]!.release()
  await settle(b)
  clock.advance(5)
  b.send({ type: 'tick' })
  await b.idle()
  b.send({ type: 'events', events: [log[12]!] })
  clock.advance(5)
  b.send({ type: 'tick' })
  await b.idle()
  const msgs = s.messages().map((m) => (m.type === 'event' ? m.seq : m))
  t.same(msgs, [2, 3, 4, 5, 6, 7, 8, 9, 10, { type: 'dropped', count: 2 }, 13], 'replay, kept held frames, the notice where the gap is, then live')
  t.equal(b.broadcastStats.messagesDropped, 2)
})

t.test('async since_seq: a replay that does not fit the socket drops the held frames after it: one gap, then live', async (t) => {
  const log = Array.from({ length: 30 }, (_, i) => priced(i + 1))
  const frame = textFrame(eventMessage(log[0]!)).length
  const { b, clock, src } = asyncSetup({ log, limits: { maxBufferedBytes: frame * 2 + 10 } })
  b.send({ type: 'events', events: log.slice(0, 4) })
  const s = new FakeSink()
  s.stalled = true
  b.send({ type: 'subscribe', sink: s, filter: ALL, sinceSeq: 1 }) // replays 2..4: 4 does not fit
  await b.idle()
  b.send({ type: 'events', events: log.slice(4, 10) }) // 5, 6 held; 7..10 dropped
  await b.idle()
  src.calls[0]!.release()
  await settle(b)
  t.same(s.seqs(), [2, 3])
  s.stalled = false
  s.buffered = 0
  clock.advance(5)
  b.send({ type: 'tick' })
  b.send({ type: 'events', events: [log[10]!] })
  clock.advance(5)
  b.send({ type: 'tick' })
  await b.idle()
  const msgs = s.messages().map((m) => (m.type === 'event' ? m.seq : m))
  t.same(msgs, [2, 3, { type: 'dropped', count: 7 }, 11], 'received + dropped = 2..11')
  t.equal(b.broadcastStats.messagesDropped, 7)
})

t.test('attach: lastSeq moves to the given seq, replays come from the new source, the log end from the new function', async (t) => {
  const log = Array.from({ length: 12 }, (_, i) => priced(i + 1))
  const { b, clock } = asyncSetup({ attach: true })
  const src = new ManualSource(log)
  b.send({ type: 'attach', replaySource: src.source, logEnd: () => 20, seq: 10 })
  await b.idle()
  t.equal(b.lastSeq, 10)
  const s = new FakeSink()
  b.send({ type: 'subscribe', sink: s, filter: ALL, sinceSeq: 7 })
  const ahead = new FakeSink()
  b.send({ type: 'subscribe', sink: ahead, filter: ALL, sinceSeq: 11 }) // inside the log end: waits for 12
  await b.idle()
  t.match(src.calls[0], { from: 8, through: 10 })
  src.calls[0]!.release()
  await settle(b)
  b.send({ type: 'events', events: log.slice(10) })
  clock.advance(5)
  b.send({ type: 'tick' })
  await b.idle()
  t.same(s.seqs(), [8, 9, 10, 11, 12])
  t.same(ahead.seqs(), [12])
  t.throws(() => new Broadcaster({ clock, schedule: () => {}, logEnd: () => 0 }), { name: 'TypeError' })
})

t.test('parseAlertNotice: a frame is checked and rebuilt; its project must be the subject\'s', async (t) => {
  const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v))
  const n = alert('a', 'r1')
  t.same(parseAlertNotice(enc({ ...n, extra: '<script>' }), 'a'), n, 'unknown fields are not passed on')
  t.same(parseAlertNotice(enc({ ...n, value: null, state: 'ok' }), 'a'), { ...n, value: null, state: 'ok' })
  t.equal(parseAlertNotice(enc(n), 'b'), null, 'another subject project')
  t.equal(parseAlertNotice(enc({ ...n, state: 'weird' }), 'a'), null)
  t.equal(parseAlertNotice(enc({ ...n, threshold: '1' }), 'a'), null)
  t.equal(parseAlertNotice(enc({ ...n, value: 'x' }), 'a'), null)
  t.equal(parseAlertNotice(enc({ ...n, rule_id: 1 }), 'a'), null)
  t.equal(parseAlertNotice(enc([n]), 'a'), null)
  t.equal(parseAlertNotice(enc(null), 'a'), null)
  t.equal(parseAlertNotice(new TextEncoder().encode('{nope'), 'a'), null)
})

// ---------------------------------------------------------------------------------------------
// On one nats-server.

const price = (e: StoredEvent): PricedEvent => ({ ...e, costNanos: e.total * 1000 + (e.error ? 1 : 0), unpriced: e.model === 'unknown' })

function pending(i: number, project: string, over: Partial<PendingEvent> = {}): PendingEvent {
  return {
    ts: Date.UTC(2026, 0, 2) + i * 1000, recv: Date.UTC(2026, 0, 2) + i * 1000 + 5, model: i % 3 === 0 ? 'gpt-4o' : 'claude-3', provider: i % 3 === 0 ? 'openai' : 'anthropic',
    prompt: 100 + i, completion: 50 + i, total: 150 + 2 * i, cached: i % 5, reasoning: i % 7, latency: 200 + i, ttft: i % 2 === 0 ? 30 + i : null,
    error: i % 4 === 3, cost: i % 6 === 0 ? 0.25 : null, meta: { i, tier: i % 2 === 0 ? 'free' : 'pro' }, project,
    user: `u${i % 3}`, session: i % 2 === 0 ? `s${i}` : null, tags: i % 3 === 0 ? ['t1', `n${i}`] : null, ...over
  }
}

/** A broadcaster with a real timer for its ticks (what the topology does on a node). */
function liveBroadcaster(teardown: (fn: () => Promise<void>) => void) {
  let timer: NodeJS.Timeout | null = null
  let due = Infinity
  const b: Broadcaster = new Broadcaster({
    clock: systemClock,
    schedule: (ms) => {
      const at = Date.now() + ms
      if (timer !== null && due <= at) return
      if (timer !== null) clearTimeout(timer)
      due = at
      timer = setTimeout(() => {
        timer = null
        due = Infinity
        b.send({ type: 'tick' })
      }, ms)
      timer.unref()
    },
    history: () => {
      throw new Error('single-node history read in cluster mode')
    },
    logEnd: () => 0
  })
  teardown(async () => {
    await b.destroy()
    if (timer !== null) clearTimeout(timer)
  })
  return b
}

t.test('ClusterFeed on JetStream', async (t) => {
  const nats = await startNats()
  t.teardown(() => nats.stop())
  const cfg: ClusterConfig = { servers: nats.urls, nodeId: null, leaseMs: 10_000, partitions: 4, replicas: 1, queryTimeoutMs: 5000, name: 'feedtest' }
  const handles: NatsHandles[] = []
  for (let i = 0; i < 3; i++) handles.push(await connectCluster(cfg, { log: silentLog, name: `node${i}` }))
  t.teardown(() => Promise.all(handles.map((h) => h.close())))
  const [ingestA, ingestB, reader] = handles as [NatsHandles, NatsHandles, NatsHandles]
  const logA = new JetStreamLog(ingestA)
  const logB = new JetStreamLog(ingestB)
  const readerLog = new JetStreamLog(reader)

  /** Appends through one ingest node and returns the stored events (seq and id set). */
  const appended: StoredEvent[] = []
  async function ingest(log: JetStreamLog, events: PendingEvent[]): Promise<StoredEvent[]> {
    const a = log.append(events)
    await a.committed
    appended.push(...a.events)
    return a.events
  }

  // Some history before the feed starts: it must not be streamed live, only replayed.
  await ingest(logA, [pending(0, 'a'), pending(1, 'b'), pending(2, 'a')])
  const before = await readerLog.lastSeq()
  t.equal(before, 3)

  const b = liveBroadcaster((fn) => t.teardown(fn))
  const feed = new ClusterFeed({ h: reader, log: readerLog, broadcaster: b, price, logger: silentLog, batchMax: 7 })
  await feed.start()
  t.teardown(() => feed.stop())
  await b.idle()
  t.equal(b.lastSeq, 3, 'the broadcaster starts at the stream end')
  await t.rejects(feed.start(), /already started/)

  const subA = new FakeSink()
  const subA2 = new FakeSink()
  const subB = new FakeSink()
  b.send({ type: 'subscribe', sink: subA, filter: inProject('a'), sinceSeq: null })
  b.send({ type: 'subscribe', sink: subA2, filter: inProject('a', { models: new Set(['gpt-4o']), status: 'error' }), sinceSeq: null })
  b.send({ type: 'subscribe', sink: subB, filter: inProject('b'), sinceSeq: null })
  await b.idle()

  await t.test('events from two ingest nodes reach a third node in stream-seq order, every field, projects apart', async (t) => {
    // Both ingest nodes at once, many publishes in flight on each.
    const batches: Array<Promise<StoredEvent[]>> = []
    for (let k = 0; k < 6; k++) {
      batches.push(ingest(logA, Array.from({ length: 15 }, (_, i) => pending(100 + k * 100 + i, i % 3 === 0 ? 'b' : 'a'))))
      batches.push(ingest(logB, Array.from({ length: 15 }, (_, i) => pending(150 + k * 100 + i, i % 4 === 0 ? 'b' : 'a'))))
    }
    const stored = (await Promise.all(batches)).flat().sort((x, y) => x.seq - y.seq)
    t.equal(stored.length, 180)
    t.same(stored.map((e) => e.seq), Array.from({ length: 180 }, (_, i) => before + 1 + i), 'the stream gave seqs 4..183')
    const last = stored[stored.length - 1]!.seq
    await until(() => b.lastSeq === last, () => `the broadcaster handled the last seq (${last}; it is at ${b.lastSeq}, replayed ${b.broadcastStats.replayedMessages} messages)`)
    await until(() => subA.events().length + subB.events().length === 180, 'every event reached a subscriber')
    const want = (p: string) => stored.filter((e) => e.project === p).map((e) => JSON.parse(eventMessage(price(e))))
    t.same(subA.events(), want('a'), "project a's subscriber: every a event, in seq order, every field")
    t.same(subB.events(), want('b'), "project b's subscriber: b's only")
    t.same(subA2.seqs(), stored.filter((e) => e.project === 'a' && e.model === 'gpt-4o' && e.error).map((e) => e.seq), 'filters apply')
    t.match(feed.stats(), { running: true, startSeq: 3, lastSeq: last, events: 180, undecodable: 0 })
    t.ok(feed.stats().batches <= 180, `handed in ${feed.stats().batches} batches`)
  })

  await t.test('since_seq replays from the stream, then joins the live stream with no gap and no duplicate while events keep arriving', async (t) => {
    const base = b.lastSeq
    const since = 10
    // Events keep arriving on both ingest nodes while subscribers join.
    let stop = false
    let n = 0
    const writer = (async () => {
      while (!stop) {
        await ingest(n % 2 === 0 ? logA : logB, [pending(5000 + n, n % 5 === 0 ? 'b' : 'a'), pending(9000 + n, 'a')])
        n++
      }
    })()
    await until(() => b.lastSeq > base + 10, 'some events arrived live')
    const resumed = new FakeSink()
    b.send({ type: 'subscribe', sink: resumed, filter: inProject('a'), sinceSeq: since })
    const fromStart = new FakeSink()
    b.send({ type: 'subscribe', sink: fromStart, filter: inProject('b'), sinceSeq: -1 })
    await until(() => b.broadcastStats.replayedMessages > 0 && b.lastSeq > base + 60, 'replays done and more events arrived')
    stop = true
    await writer
    const last = appended.reduce((m, e) => Math.max(m, e.seq), 0)
    await until(() => b.lastSeq === last, () => `the broadcaster handled the last seq (${last}; it is at ${b.lastSeq}, replayed ${b.broadcastStats.replayedMessages} messages)`)
    await until(() => resumed.seqs().at(-1) === appended.filter((e) => e.project === 'a').reduce((m, e) => Math.max(m, e.seq), 0), 'resumed got the last a event')
    await until(() => fromStart.seqs().at(-1) === appended.filter((e) => e.project === 'b').reduce((m, e) => Math.max(m, e.seq), 0), 'fromStart got the last b event')
    const all = [...appended].sort((x, y) => x.seq - y.seq)
    t.same(resumed.events(), all.filter((e) => e.project === 'a' && e.seq > since).map((e) => JSON.parse(eventMessage(price(e)))), 'a after since: all, once, in order, every field')
    t.same(fromStart.seqs(), all.filter((e) => e.project === 'b').map((e) => e.seq), 'b from the start of the stream (the events before the feed started included)')
    t.equal(resumed.closedWith, null)
    t.ok(b.broadcastStats.replayedMessages > 0)
  })

  await t.test('alert frames published with publishAlert reach only their project\'s subscribers; a bad frame is skipped', async (t) => {
    const alerts = (s: FakeSink) => s.messages().filter((m) => m.type === 'alert')
    const before = { a: alerts(subA).length, b: alerts(subB).length }
    t.equal(publishAlert(ingestA.nc, ingestA.names, alert('a', 'rule_a')), true)
    ingestB.nc.publish(ingestB.names.alertSubject('a'), 'not json')
    ingestB.nc.publish(ingestB.names.alertSubject('b'), JSON.stringify(alert('a', 'rule_spoof')))
    t.equal(publishAlert(ingestB.nc, ingestB.names, alert('b', 'rule_b')), true)
    await until(() => alerts(subB).length > before.b, "b's alert arrived")
    await until(() => alerts(subA).length > before.a, "a's alert arrived")
    await until(() => feed.stats().badAlerts === 2, 'the bad frames were counted')
    t.same(alerts(subA).slice(before.a), [alert('a', 'rule_a')])
    t.same(alerts(subA2).map((m) => m.rule_id), ['rule_a'], 'whatever its filter')
    t.same(alerts(subB).slice(before.b), [alert('b', 'rule_b')])
    t.equal(feed.stats().alerts, 2)
  })

  await t.test('a message that does not decode is skipped and counted; the stream goes on', async (t) => {
    await reader.js.publish(reader.names.subject(0, 'zz'), new TextEncoder().encode('{"not":"an event"}'))
    const [good] = await ingest(logA, [pending(77, 'a')])
    await until(() => b.lastSeq === good!.seq, 'the event after it was handled')
    await until(() => subA.seqs().at(-1) === good!.seq, 'and reached its subscriber')
    t.equal(feed.stats().undecodable, 1)
  })

  await t.test('a broadcaster whose mailbox is full is waited for: nothing lost, nothing reordered', async (t) => {
    let open!: () => void
    const gate = new Promise<void>((resolve) => (open = resolve))
    /** Holds its first events batch until the gate opens, so its one-message mailbox fills. */
    class SlowBroadcaster extends Broadcaster {
      #held = false
      protected override receive(m: Parameters<Broadcaster['send']>[0]): void | Promise<void> {
        if (m.type !== 'events' || this.#held) return super.receive(m)
        this.#held = true
        return gate.then(() => super.receive(m))
      }
    }
    const slow = new SlowBroadcaster({ clock: systemClock, schedule: () => {}, history: () => [], logEnd: () => 0, mailboxCapacity: 1 })
    t.teardown(() => slow.destroy())
    const feed2 = new ClusterFeed({ h: reader, log: readerLog, broadcaster: slow, price, logger: silentLog, batchMax: 1 })
    await feed2.start()
    t.teardown(() => feed2.stop())
    const s = new FakeSink()
    slow.send({ type: 'subscribe', sink: s, filter: inProject('a'), sinceSeq: null })
    await slow.idle()
    const stored = await ingest(logB, Array.from({ length: 20 }, (_, i) => pending(300 + i, 'a')))
    await until(() => feed2.stats().waits > 0, 'the feed waited for the full mailbox')
    open()
    const last = Math.max(...stored.map((e) => e.seq))
    await until(() => slow.lastSeq === last, 'every event handed over')
    slow.send({ type: 'tick' })
    await slow.idle()
    t.same(s.seqs(), stored.map((e) => e.seq).sort((x, y) => x - y))
    await feed2.stop()
  })

  await t.test('start refuses a closed broadcaster and a second start; stop before start is safe', async (t) => {
    const closed = new Broadcaster({ clock: systemClock, schedule: () => {}, history: () => [], logEnd: () => 0 })
    await closed.close()
    const f = new ClusterFeed({ h: reader, log: readerLog, broadcaster: closed, price, logger: silentLog })
    await t.rejects(f.start(), /refused the cluster feed/)
    t.equal(f.stats().running, false)
    const never = new ClusterFeed({ h: reader, log: readerLog, broadcaster: closed, price, logger: silentLog })
    await never.stop()
    await t.rejects(never.start(), /already started/)
    t.throws(() => new ClusterFeed({ h: reader, log: readerLog, broadcaster: closed, price, logger: silentLog, batchMax: 0 }), { name: 'RangeError' })
  })

  await t.test('stop: no more events; safe twice; publishAlert on a closed connection answers false', async (t) => {
    await feed.stop()
    await feed.stop()
    t.equal(feed.stats().running, false)
    const at = b.lastSeq
    await ingest(logA, [pending(1, 'a')])
    // The event is in the stream; a running feed would hand it over within ms. Give it the
    // time of a round trip through the server, then check nothing moved.
    await reader.jsm.streams.info(reader.names.stream)
    await b.idle()
    t.equal(b.lastSeq, at, 'nothing handed over after stop')
    const closed = await connectCluster(cfg, { log: silentLog })
    await closed.close()
    t.equal(publishAlert(closed.nc, closed.names, alert('a', 'x')), false)
  })
})
