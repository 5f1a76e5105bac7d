/**
 * The Broadcaster actor on fake sockets and a hand-moved clock: serialisation shared by all
 * sockets, one write per socket per flush, filters, alerts, the per-socket cap with its drop
 * notice, the 1013 deadline, ping reaping, and since_seq replay (bound and seam).
 */
import t from 'tap'
import fc from 'fast-check'
import { Broadcaster, matchesSubscription, textFrame, type AlertNotice, type BroadcastLimits, type SocketSink, type SubscriptionFilter } from '../../src/actors/broadcaster.js'
import { ManualClock } from '../../src/clock.js'
import type { PricedEvent } from '../../src/events.js'

/** Splits written bytes back into the JSON messages of their text frames. */
function decode(buf: Buffer): unknown[] {
  const out: unknown[] = []
  let i = 0
  while (i < buf.length) {
    if (buf[i] !== 0x81) throw new Error(`not a final text frame at ${i}: ${buf[i]}`)
    let len = buf[i + 1]
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
  /** While true, writes pile up in `buffered` (a socket the kernel no longer drains). */
  stalled = false
  writes: Buffer[] = []
  pings = 0
  closedWith: [number, string] | null = null
  terminated = false

  write(frames: Buffer): void {
    this.writes.push(frames)
    if (this.stalled) this.buffered += frames.length
  }
  ping(): void {
    this.pings++
  }
  close(code: number, reason: string): void {
    this.closedWith = [code, reason]
    this.open = false
  }
  terminate(): void {
    this.terminated = true
    this.open = false
  }
  messages(): any[] {
    return this.writes.flatMap(decode)
  }
  seqs(): number[] {
    return this.messages().filter((m) => m.type === 'event').map((m) => m.seq)
  }
}

function priced(seq: number, over: Partial<PricedEvent> = {}): PricedEvent {
  return {
    seq, id: `evt_${seq.toString(36)}_AAAAAAAAAAAA`, ts: Date.UTC(2026, 0, 1) + seq, recv: 0, model: 'gpt-4', provider: 'openai',
    prompt: 10, completion: 5, total: 15, cached: 0, reasoning: 0, latency: 100, ttft: null, error: false, cost: null, meta: null, project: 'default', user: null, session: null, tags: null,
    costNanos: 1_500_000, unpriced: false, ...over
  }
}

const ALL: SubscriptionFilter = { project: 'default', models: null, providers: null }

function setup(opts: { limits?: Partial<BroadcastLimits>; log?: PricedEvent[]; startSeq?: number } = {}) {
  const clock = new ManualClock(1_000_000)
  const scheduled: number[] = []
  const log = opts.log ?? []
  const b = new Broadcaster({
    clock,
    schedule: (ms) => scheduled.push(ms),
    history: function* (from) {
      // Two "appends" per call, like the real log yields one array per stored put.
      const rest = log.filter((e) => e.seq >= from)
      yield rest.slice(0, 3)
      yield rest.slice(3)
    },
    logEnd: () => log.length,
    startSeq: opts.startSeq,
    limits: opts.limits
  })
  t.teardown(() => b.destroy())
  return { b, clock, scheduled, log }
}

t.test('textFrame: header sizes at the 7-bit, 16-bit and 64-bit length boundaries', async (t) => {
  for (const [len, head] of [[0, 2], [125, 2], [126, 4], [65_535, 4], [65_536, 10]] as const) {
    const f = textFrame('x'.repeat(len))
    t.equal(f.length, head + len, `payload ${len}`)
    t.equal(f[0], 0x81)
  }
  t.equal(textFrame('x'.repeat(65_536)).readUInt32BE(6), 65_536)
  t.same(decode(textFrame('{"a":"é"}')), [{ a: 'é' }], 'length counts UTF-8 bytes')
})

t.test('an event reaches every subscriber as the DESIGN message, serialised once and written once per flush', async (t) => {
  const { b, clock } = setup()
  const x = new FakeSink()
  const y = new FakeSink()
  b.send({ type: 'subscribe', sink: x, filter: ALL, sinceSeq: null })
  b.send({ type: 'subscribe', sink: y, filter: ALL, sinceSeq: null })
  b.send({ type: 'events', events: [priced(0)] })
  await b.idle()
  t.same(x.messages(), [{ type: 'event', id: 'evt_0_AAAAAAAAAAAA', seq: 0, timestamp: '2026-01-01T00:00:00.000Z', model: 'gpt-4', provider: 'openai', total_tokens: 15, latency_ms: 100, cost: 0.0015, status: 'success', user_id: null, session_id: null, tags: null }])
  t.equal(x.writes[0], y.writes[0], 'the very same Buffer went to both sockets')

  // Within flushMs of the last flush nothing is written until the tick: three batches, one write each.
  b.send({ type: 'events', events: [priced(1), priced(2)] })
  b.send({ type: 'events', events: [priced(3)] })
  b.send({ type: 'alert', alert: { type: 'alert', project: 'default', rule_id: 'rule_1', rule_name: 'r', state: 'firing', value: 2, threshold: 1, at: '2026-01-01T00:00:00.000Z' } })
  await b.idle()
  t.equal(x.writes.length, 1, 'nothing written before the tick')
  clock.advance(4)
  b.send({ type: 'tick' })
  await b.idle()
  t.equal(x.writes.length, 2, 'one write for the whole tick')
  t.same(x.seqs(), [0, 1, 2, 3])
  t.equal(x.messages()[4].type, 'alert')
  t.equal(x.writes[1], y.writes[1])
  t.match(b.broadcastStats, { subscribers: 2, messagesSent: 10, messagesDropped: 0, lastSeq: 3 })
})

t.test('filters: model and provider comma lists (AND); alerts go to everyone', async (t) => {
  const { b } = setup()
  const byModel = new FakeSink()
  const byProvider = new FakeSink()
  const both = new FakeSink()
  b.send({ type: 'subscribe', sink: byModel, filter: { project: 'default', models: new Set(['a', 'b']), providers: null }, sinceSeq: null })
  b.send({ type: 'subscribe', sink: byProvider, filter: { project: 'default', models: null, providers: new Set(['p2']) }, sinceSeq: null })
  b.send({ type: 'subscribe', sink: both, filter: { project: 'default', models: new Set(['a']), providers: new Set(['p2']) }, sinceSeq: null })
  b.send({ type: 'events', events: [priced(0, { model: 'a', provider: 'p1' }), priced(1, { model: 'b', provider: 'p2' }), priced(2, { model: 'c', provider: 'p2' }), priced(3, { model: 'a', provider: 'p2' })] })
  b.send({ type: 'alert', alert: { type: 'alert', project: 'default', rule_id: 'rule_1', rule_name: 'r', state: 'resolved', value: 0, threshold: 1, at: '2026-01-01T00:00:00.000Z' } })
  b.send({ type: 'tick' })
  await b.idle()
  t.same(byModel.seqs(), [0, 1, 3])
  t.same(byProvider.seqs(), [1, 2, 3])
  t.same(both.seqs(), [3])
  for (const s of [byModel, byProvider, both]) t.equal(s.messages().filter((m) => m.type === 'alert').length, 1)
})

t.test('a stalled socket: drops past the cap, counted, then one dropped notice where the gap is; others unaffected', async (t) => {
  const { b, clock } = setup({ limits: { maxBufferedBytes: 2000 } })
  const slow = new FakeSink()
  const fast = new FakeSink()
  slow.stalled = true
  b.send({ type: 'subscribe', sink: slow, filter: ALL, sinceSeq: null })
  b.send({ type: 'subscribe', sink: fast, filter: ALL, sinceSeq: null })
  // ~230 bytes per message: one event per tick, 20 ticks.
  for (let i = 0; i < 20; i++) {
    clock.advance(5)
    b.send({ type: 'events', events: [priced(i)] })
    await b.idle()
  }
  await b.idle()
  t.same(fast.seqs(), Array.from({ length: 20 }, (_, i) => i), 'the healthy socket got everything')
  const got = slow.seqs()
  t.ok(got.length > 0 && got.length < 20, `slow got ${got.length} before its cap`)
  t.ok(slow.buffered <= 2000, 'never past the cap')
  const dropped = 20 - got.length
  t.equal(b.broadcastStats.messagesDropped, dropped)

  // Drains (the kernel took everything): the next tick sends the notice, then live resumes.
  slow.stalled = false
  slow.buffered = 0
  clock.advance(5)
  b.send({ type: 'tick' })
  b.send({ type: 'events', events: [priced(20)] })
  clock.advance(5)
  b.send({ type: 'tick' })
  await b.idle()
  const msgs = slow.messages()
  t.same(msgs.slice(got.length), [{ type: 'dropped', count: dropped }, msgs[got.length + 1]])
  t.equal(msgs[got.length + 1].seq, 20)
  t.equal(got.length + dropped + 1, 21, 'received + dropped = sent')
  t.match(b.broadcastStats, { dropNotices: 1, closedSlow: 0 })
})

t.test('a socket stuck over its cap past stuckMs is closed with 1013 and forgotten', async (t) => {
  const { b, clock } = setup({ limits: { maxBufferedBytes: 1000, stuckMs: 10_000 } })
  const slow = new FakeSink()
  slow.stalled = true
  b.send({ type: 'subscribe', sink: slow, filter: ALL, sinceSeq: null })
  for (let i = 0; i < 10; i++) {
    clock.advance(5)
    b.send({ type: 'events', events: [priced(i)] })
    await b.idle()
  }
  await b.idle()
  t.ok(b.broadcastStats.messagesDropped > 0)
  clock.advance(9_000)
  b.send({ type: 'tick' })
  await b.idle()
  t.equal(slow.closedWith, null, 'not yet')
  clock.advance(1_000)
  b.send({ type: 'tick' })
  await b.idle()
  t.same(slow.closedWith?.[0], 1013)
  t.match(b.broadcastStats, { subscribers: 0, closedSlow: 1 })
})

t.test('ping/pong: a socket that did not answer the previous ping is terminated', async (t) => {
  const { b, clock, scheduled } = setup({ limits: { pingMs: 1000 } })
  const live = new FakeSink()
  const dead = new FakeSink()
  b.send({ type: 'subscribe', sink: live, filter: ALL, sinceSeq: null })
  b.send({ type: 'subscribe', sink: dead, filter: ALL, sinceSeq: null })
  await b.idle()
  t.equal(scheduled.at(-1), 1000, 'idle: the next tick is asked for at the next ping')
  clock.advance(1000)
  b.send({ type: 'tick' })
  await b.idle()
  t.equal(live.pings, 1)
  t.equal(dead.pings, 1)
  b.send({ type: 'pong', sink: live })
  clock.advance(1000)
  b.send({ type: 'tick' })
  await b.idle()
  t.equal(dead.terminated, true)
  t.equal(live.terminated, false)
  t.equal(live.pings, 2)
  t.match(b.broadcastStats, { subscribers: 1, reapedDead: 1 })
})

t.test('since_seq: replays (since, lastSeq] from the log, then live, with no gap or duplicate', async (t) => {
  const log = Array.from({ length: 12 }, (_, i) => priced(i))
  const { b } = setup({ log })
  const other = new FakeSink()
  b.send({ type: 'subscribe', sink: other, filter: ALL, sinceSeq: null })
  // The broadcaster has handled 0..9; 10 and 11 are committed (in the log) but still to come.
  b.send({ type: 'events', events: log.slice(0, 10) })
  const late = new FakeSink()
  b.send({ type: 'subscribe', sink: late, filter: ALL, sinceSeq: 4 })
  b.send({ type: 'events', events: log.slice(10) })
  b.send({ type: 'tick' })
  await b.idle()
  t.same(late.seqs(), [5, 6, 7, 8, 9, 10, 11])
  t.same(other.seqs(), Array.from({ length: 12 }, (_, i) => i))
  t.equal(b.broadcastStats.replayedMessages, 5)

  const ahead = new FakeSink()
  b.send({ type: 'subscribe', sink: ahead, filter: ALL, sinceSeq: 50 })
  b.send({ type: 'events', events: [priced(12)] })
  b.send({ type: 'tick' })
  await b.idle()
  t.same(ahead.seqs(), [12], 'a since_seq past the end of the log (another log) means live from now')
})

t.test('since_seq: a long catch-up goes in slices, chasing the stream, and joins it exactly at the end', async (t) => {
  const log = Array.from({ length: 25 }, (_, i) => priced(i))
  const { b, clock } = setup({ log, limits: { replayStep: 2 } })
  b.send({ type: 'events', events: log.slice(0, 10) })
  const s = new FakeSink()
  b.send({ type: 'subscribe', sink: s, filter: ALL, sinceSeq: 1 })
  // These arrive while it catches up: it reads them from the log, not live.
  b.send({ type: 'events', events: log.slice(10, 13) })
  b.send({ type: 'events', events: log.slice(13, 20) })
  b.send({ type: 'alert', alert: { type: 'alert', project: 'default', rule_id: 'rule_1', rule_name: 'r', state: 'firing', value: 2, threshold: 1, at: '2026-01-01T00:00:00.000Z' } })
  await b.idle()
  t.same(s.seqs(), Array.from({ length: 18 }, (_, i) => i + 2), 'nothing past lastSeq (19) although the log has more')
  t.ok(s.writes.length > 5, `written in slices (${s.writes.length} writes)`)
  t.equal(s.messages().filter((m) => m.type === 'alert').length, 1, 'an alert during the catch-up is not lost')
  b.send({ type: 'events', events: log.slice(20, 25) })
  clock.advance(5)
  b.send({ type: 'tick' })
  await b.idle()
  t.same(s.seqs(), Array.from({ length: 23 }, (_, i) => i + 2), 'then live, no gap, no duplicate')
  t.equal(b.broadcastStats.replayedMessages, 18)
})

t.test('since_seq ahead of the broadcaster but inside the log: waits, and joins right after it', async (t) => {
  // The client learned seqs 0..7 from 202 answers; the pipeline has brought only 0..2 here.
  const log = Array.from({ length: 10 }, (_, i) => priced(i))
  const { b, clock } = setup({ log })
  const other = new FakeSink()
  b.send({ type: 'subscribe', sink: other, filter: ALL, sinceSeq: null })
  b.send({ type: 'events', events: log.slice(0, 3) })
  const s = new FakeSink()
  b.send({ type: 'subscribe', sink: s, filter: ALL, sinceSeq: 7 })
  b.send({ type: 'events', events: log.slice(3, 6) })
  b.send({ type: 'events', events: log.slice(6, 10) })
  clock.advance(5)
  b.send({ type: 'tick' })
  await b.idle()
  t.same(s.seqs(), [8, 9])
  t.same(other.seqs(), Array.from({ length: 10 }, (_, i) => i))
  t.equal(b.broadcastStats.subscribers, 2)
})

t.test('since_seq: the replay is bounded; the skipped oldest are announced as dropped first', async (t) => {
  const log = Array.from({ length: 20 }, (_, i) => priced(i, { model: i % 2 === 0 ? 'even' : 'odd' }))
  const { b } = setup({ log, startSeq: 19, limits: { replayMax: 5 } })
  const s = new FakeSink()
  b.send({ type: 'subscribe', sink: s, filter: ALL, sinceSeq: -1 })
  const f = new FakeSink()
  b.send({ type: 'subscribe', sink: f, filter: { project: 'default', models: new Set(['even']), providers: null }, sinceSeq: 9 })
  await b.idle()
  const msgs = s.messages()
  t.same(msgs[0], { type: 'dropped', count: 15 })
  t.same(s.seqs(), [15, 16, 17, 18, 19], 'startSeq (a restored snapshot) counts as handled')
  t.same(f.messages()[0], { type: 'dropped', count: 5 }, 'positions 10..14 skipped')
  t.same(f.seqs(), [16, 18], 'the filter applies to the replay')
})

t.test('since_seq: a replay that does not fit the cap is cut, and the rest announced once it drains', async (t) => {
  const log = Array.from({ length: 30 }, (_, i) => priced(i))
  const { b, clock } = setup({ log, startSeq: 29, limits: { maxBufferedBytes: 2000 } })
  const s = new FakeSink()
  s.stalled = true
  b.send({ type: 'subscribe', sink: s, filter: ALL, sinceSeq: -1 })
  await b.idle()
  const got = s.seqs()
  t.ok(got.length > 0 && got.length < 30)
  t.same(got, Array.from({ length: got.length }, (_, i) => i), 'the oldest first')
  s.stalled = false
  s.buffered = 0
  clock.advance(5)
  b.send({ type: 'tick' })
  await b.idle()
  t.same(s.messages().at(-1), { type: 'dropped', count: 30 - got.length })
})

t.test('subscriber cap: one too many is closed with 1013; unsubscribe frees the slot', async (t) => {
  const { b } = setup({ limits: { maxSubscribers: 1 } })
  const a = new FakeSink()
  const c = new FakeSink()
  b.send({ type: 'subscribe', sink: a, filter: ALL, sinceSeq: null })
  b.send({ type: 'subscribe', sink: c, filter: ALL, sinceSeq: null })
  await b.idle()
  t.same(c.closedWith?.[0], 1013)
  t.match(b.broadcastStats, { subscribers: 1, refused: 1 })
  b.send({ type: 'unsubscribe', sink: a })
  await b.idle()
  t.equal(b.broadcastStats.subscribers, 0)
})

t.test('no subscribers: events are only counted, nothing is serialised or scheduled', async (t) => {
  const { b, scheduled } = setup()
  b.send({ type: 'events', events: [priced(0), priced(1)] })
  await b.idle()
  t.equal(b.lastSeq, 1)
  t.equal(b.eventsSeen, 2)
  t.same(scheduled, [])
})

t.test('limits are checked at construction, naming the option', async (t) => {
  t.throws(() => new Broadcaster({ clock: new ManualClock(), schedule: () => {}, history: () => [], logEnd: () => 0, limits: { maxBufferedBytes: 0 } }), { name: 'RangeError', message: 'broadcast limit maxBufferedBytes must be a positive integer, got 0' })
})

const alertOf = (project: string, rule_id = 'rule_1'): AlertNotice => ({ type: 'alert', project, rule_id, rule_name: 'r', state: 'firing', value: 2, threshold: 1, at: '2026-01-01T00:00:00.000Z' })
const inProject = (project: string, over: Partial<SubscriptionFilter> = {}): SubscriptionFilter => ({ project, models: null, providers: null, ...over })

t.test('event frames carry user_id, session_id and tags (null when absent)', async (t) => {
  const { b } = setup()
  const s = new FakeSink()
  b.send({ type: 'subscribe', sink: s, filter: ALL, sinceSeq: null })
  b.send({ type: 'events', events: [priced(0, { user: 'u1', session: 's1', tags: ['a', 'b'] }), priced(1)] })
  b.send({ type: 'tick' })
  await b.idle()
  t.match(s.messages(), [{ seq: 0, user_id: 'u1', session_id: 's1', tags: ['a', 'b'] }, { seq: 1, user_id: null, session_id: null, tags: null }])
})

t.test('projects: a subscriber gets its project\'s events and alerts only, with the same filter as another project\'s', async (t) => {
  const { b } = setup()
  const a = new FakeSink()
  const a2 = new FakeSink()
  const other = new FakeSink()
  b.send({ type: 'subscribe', sink: a, filter: inProject('proj-a'), sinceSeq: null })
  b.send({ type: 'subscribe', sink: a2, filter: inProject('proj-a', { models: new Set(['gpt-4']) }), sinceSeq: null })
  b.send({ type: 'subscribe', sink: other, filter: inProject('proj-b'), sinceSeq: null })
  b.send({ type: 'events', events: [priced(0, { project: 'proj-a' }), priced(1, { project: 'proj-b' }), priced(2, { project: 'default' }), priced(3, { project: 'proj-a' })] })
  b.send({ type: 'alert', alert: alertOf('proj-b', 'rule_b') })
  b.send({ type: 'alert', alert: alertOf('proj-c', 'rule_c') })
  b.send({ type: 'tick' })
  await b.idle()
  t.same(a.seqs(), [0, 3])
  t.same(a2.seqs(), [0, 3])
  t.same(other.seqs(), [1])
  t.same(a.messages().filter((m) => m.type === 'alert'), [])
  t.same(other.messages().filter((m) => m.type === 'alert').map((m) => m.rule_id), ['rule_b'])
  t.equal(other.messages().at(-1).project, 'proj-b')
})

t.test('filters: status, user_id, session_id, tag and metadata.KEY (values as dimension text), ANDed', async (t) => {
  const events = [
    priced(0, { error: true, user: 'u1', session: 's1', tags: ['x', 'y'], meta: { feature: 'search', n: 42, flag: true, deep: { a: 1 } } }),
    priced(1, { user: 'u1', session: 's2', tags: ['y'], meta: { feature: 'chat', n: 42.5, flag: false } }),
    priced(2, { user: 'u2', tags: null, meta: null }),
    priced(3, { error: true, user: null, session: 's1', tags: ['x'], meta: { feature: 'search', n: '42' } })
  ]
  const cases: Array<[string, Partial<SubscriptionFilter>, number[]]> = [
    ['status error', { status: 'error' }, [0, 3]],
    ['status success (the default)', { status: 'success' }, [1, 2]],
    ['user_id', { user_id: 'u1' }, [0, 1]],
    ['session_id', { session_id: 's1' }, [0, 3]],
    ['tag', { tag: 'x' }, [0, 3]],
    ['tag y', { tag: 'y' }, [0, 1]],
    ['metadata string', { metadata: { feature: 'search' } }, [0, 3]],
    ['metadata number as JSON text (a string "42" is the same dimension value)', { metadata: { n: '42' } }, [0, 3]],
    ['metadata boolean', { metadata: { flag: 'true' } }, [0]],
    ['metadata false', { metadata: { flag: 'false' } }, [1]],
    ['metadata nested object is not a dimension', { metadata: { deep: '[object Object]' } }, []],
    ['metadata missing key', { metadata: { nope: 'x' } }, []],
    ['metadata inherited name is no key', { metadata: { toString: 'x' } }, []],
    ['AND of several', { status: 'error', tag: 'x', metadata: { feature: 'search', n: '42' }, session_id: 's1' }, [0, 3]],
    ['AND that excludes', { user_id: 'u1', tag: 'x', status: 'success' }, []],
    ['with model list', { models: new Set(['gpt-4', 'other']), user_id: 'u2' }, [2]]
  ]
  const { b } = setup()
  const sinks = cases.map(([, over]) => {
    const s = new FakeSink()
    b.send({ type: 'subscribe', sink: s, filter: inProject('default', over), sinceSeq: null })
    return s
  })
  b.send({ type: 'events', events })
  b.send({ type: 'tick' })
  await b.idle()
  cases.forEach(([name, over, want], i) => {
    t.same(sinks[i].seqs(), want, name)
    t.same(events.filter((e) => matchesSubscription(inProject('default', over), e)).map((e) => e.seq), want, `${name}: matchesSubscription`)
  })
})

t.test('since_seq with project and filters: the replay applies them, then live applies them, no gap', async (t) => {
  const log = Array.from({ length: 30 }, (_, i) => priced(i, { project: i % 3 === 0 ? 'proj-a' : 'proj-b', tags: i % 2 === 0 ? ['even'] : ['odd'], meta: { i } }))
  const { b, clock } = setup({ log, limits: { replayStep: 4 } })
  b.send({ type: 'events', events: log.slice(0, 20) })
  const s = new FakeSink()
  b.send({ type: 'subscribe', sink: s, filter: inProject('proj-a', { tag: 'even' }), sinceSeq: 2 })
  const m = new FakeSink()
  b.send({ type: 'subscribe', sink: m, filter: inProject('proj-b', { metadata: { i: '7' } }), sinceSeq: -1 })
  // An alert of each project during the catch-up: each reaches its project's subscriber only.
  b.send({ type: 'alert', alert: alertOf('proj-a', 'rule_a') })
  b.send({ type: 'alert', alert: alertOf('proj-b', 'rule_b') })
  b.send({ type: 'events', events: log.slice(20) })
  clock.advance(5)
  b.send({ type: 'tick' })
  await b.idle()
  t.same(s.seqs(), [6, 12, 18, 24], 'proj-a, tag even, after 2')
  t.same(m.seqs(), [7])
  t.same(s.messages().filter((x) => x.type === 'alert').map((x) => x.rule_id), ['rule_a'])
  t.same(m.messages().filter((x) => x.type === 'alert').map((x) => x.rule_id), ['rule_b'])
  // 6, 12, 18 and 7 from the log, and 24 too if the catch-up was still chasing the stream.
  const replayed = b.broadcastStats.replayedMessages
  t.ok(replayed >= 4 && replayed <= 5, `only matching events are read out of the log (${replayed})`)
})

/**
 * Property: whatever the interleaving of events (of three projects, random dimensions),
 * alerts, subscriptions (random project, filters and since_seq), unsubscriptions and ticks,
 * each subscriber gets exactly the events of its project that match its filter after its
 * starting point, in log order, and exactly its project's alerts sent after it subscribed.
 */
t.test('property: projects never see each other; each subscriber gets exactly its filter', async (t) => {
  const PROJECTS = ['default', 'proj-a', 'proj-b']
  const project = fc.constantFrom(...PROJECTS)
  const eventArb = fc.record({
    project,
    model: fc.constantFrom('m1', 'm2'),
    error: fc.boolean(),
    user: fc.constantFrom(null, 'u1', 'u2'),
    tags: fc.constantFrom(null, ['t1'], ['t1', 't2'], ['t2']),
    meta: fc.constantFrom(null, { f: 'a' }, { f: 'b', n: 1 }, { n: 1 }, { f: true })
  })
  const filterArb: fc.Arbitrary<Partial<SubscriptionFilter>> = fc.record(
    {
      models: fc.constantFrom(null, new Set(['m1']), new Set(['m1', 'm2'])),
      status: fc.constantFrom('success' as const, 'error' as const),
      user_id: fc.constantFrom('u1', 'u2'),
      tag: fc.constantFrom('t1', 't2'),
      metadata: fc.constantFrom<Record<string, string>>({ f: 'a' }, { n: '1' }, { f: 'true' }, { f: 'b', n: '1' })
    },
    { requiredKeys: ['models'] }
  )
  const command = fc.oneof(
    fc.record({ kind: fc.constant('events' as const), events: fc.array(eventArb, { minLength: 1, maxLength: 6 }) }),
    fc.record({ kind: fc.constant('alert' as const), project }),
    fc.record({ kind: fc.constant('subscribe' as const), project, filter: filterArb, since: fc.option(fc.nat(), { nil: null }) }),
    fc.record({ kind: fc.constant('unsubscribe' as const), which: fc.nat() }),
    fc.record({ kind: fc.constant('tick' as const) })
  )
  await fc.assert(
    // Each command is followed by waiting for the actor to go idle, or not (then the next
    // messages interleave with a catch-up's own `replay` messages).
    fc.asyncProperty(fc.array(fc.tuple(command, fc.boolean()), { minLength: 1, maxLength: 40 }), async (commands) => {
      const log: PricedEvent[] = []
      const clock = new ManualClock(1_000_000)
      const b = new Broadcaster({
        clock,
        schedule: () => {},
        history: function* (from) {
          yield log.filter((e) => e.seq >= from)
        },
        logEnd: () => log.length,
        limits: { replayStep: 1 }
      })
      interface Sub { sink: FakeSink; filter: SubscriptionFilter; from: number; alerts: string[]; gone: boolean }
      const subs: Sub[] = []
      let alertN = 0
      try {
        for (const [c, wait] of commands) {
          switch (c.kind) {
            case 'events': {
              const batch = c.events.map((e, i) => priced(log.length + i, e))
              log.push(...batch)
              b.send({ type: 'events', events: batch })
              break
            }
            case 'alert': {
              const id = `rule_${alertN++}`
              for (const s of subs) if (!s.gone && s.filter.project === c.project) s.alerts.push(id)
              b.send({ type: 'alert', alert: alertOf(c.project, id) })
              break
            }
            case 'subscribe': {
              const sink = new FakeSink()
              const filter = inProject(c.project, c.filter)
              const last = log.length - 1
              // since_seq within what was sent (-1 … last), or live.
              const since = c.since === null ? null : (c.since % (last + 2)) - 1
              subs.push({ sink, filter, from: (since ?? last) + 1, alerts: [], gone: false })
              b.send({ type: 'subscribe', sink, filter, sinceSeq: since })
              break
            }
            case 'unsubscribe': {
              const live = subs.filter((s) => !s.gone)
              if (live.length === 0) break
              const s = live[c.which % live.length]
              s.gone = true
              b.send({ type: 'unsubscribe', sink: s.sink })
              break
            }
            case 'tick':
              clock.advance(5)
              b.send({ type: 'tick' })
              break
          }
          if (wait) await b.idle()
        }
        clock.advance(5)
        b.send({ type: 'tick' })
        await b.idle()
        for (const s of subs) {
          const got = s.sink.messages()
          const events = got.filter((m) => m.type === 'event')
          for (const m of events) if (log[m.seq].project !== s.filter.project) return false
          for (const m of got) if (m.type === 'alert' && m.project !== s.filter.project) return false
          if (s.gone) continue
          const want = log.filter((e) => e.seq >= s.from && matchesSubscription(s.filter, e)).map((e) => e.seq)
          if (JSON.stringify(events.map((m) => m.seq)) !== JSON.stringify(want)) return false
          if (JSON.stringify(got.filter((m) => m.type === 'alert').map((m) => m.rule_id)) !== JSON.stringify(s.alerts)) return false
          if (got.some((m) => m.type === 'dropped')) return false
        }
        return true
      } finally {
        b.destroy()
      }
    }),
    { numRuns: 300 }
  )
  t.pass('300 random interleavings')
})
