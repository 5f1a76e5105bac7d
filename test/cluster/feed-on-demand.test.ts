/**
 * The ClusterFeed on demand (src/cluster/feed.ts, `onDemand`), on one nats-server: it does not
 * follow the stream while nobody listens; the first subscriber starts it with since_seq exact
 * (replay from the stream, then live, no gap or duplicate); a subscriber that arrives while it
 * starts waits; after the last subscriber left for `idleStopMs` it stops following, and starts
 * again for the next one; alert frames reach subscribers; stop gives the broadcaster its own
 * send back. Also JetStreamLog.append's own ack matching under many appends in flight from two
 * connections, and an append to a subject no stream takes (no responders) failing at once.
 */
import t from 'tap'
import { Broadcaster, eventMessage, type AlertNotice, type SocketSink, type SubscriptionFilter } from '../../src/actors/broadcaster.js'
import { systemClock } from '../../src/clock.js'
import type { PendingEvent, PricedEvent, StoredEvent } from '../../src/events.js'
import { silentLog } from '../../src/log.js'
import { ClusterFeed, publishAlert } from '../../src/cluster/feed.js'
import { JetStreamLog } from '../../src/cluster/js-log.js'
import { connectCluster, type NatsHandles } from '../../src/cluster/nats.js'
import type { ClusterConfig } from '../../src/config.js'
import { startNats } from '../helpers/nats.js'

t.setTimeout(120_000)

/** Splits written bytes back into the JSON messages of their text frames (payloads < 64 KiB). */
function decode(buf: Buffer): any[] {
  const out: any[] = []
  let i = 0
  while (i < buf.length) {
    let len = buf[i + 1]!
    let head = 2
    if (len === 126) {
      len = buf.readUInt16BE(i + 2)
      head = 4
    }
    out.push(JSON.parse(buf.subarray(i + head, i + head + len).toString('utf8')))
    i += head + len
  }
  return out
}

class FakeSink implements SocketSink {
  open = true
  buffered = 0
  writes: Buffer[] = []
  closedWith: [number, string] | null = null
  write(frames: Buffer): void {
    this.writes.push(frames)
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
  seqs(): number[] {
    return this.messages().filter((m) => m.type === 'event').map((m) => m.seq)
  }
}

const inProject = (project: string): SubscriptionFilter => ({ project, models: null, providers: null })
const price = (e: StoredEvent): PricedEvent => ({ ...e, costNanos: e.total * 1000, unpriced: false })

async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

function pending(i: number, project = 'a'): PendingEvent {
  return {
    ts: Date.UTC(2026, 0, 2) + i, recv: Date.UTC(2026, 0, 2) + i, model: i % 2 === 0 ? 'gpt-4o' : 'claude-3', provider: 'openai',
    prompt: 10 + i, completion: 5, total: 15 + i, cached: 0, reasoning: 0, latency: 100, ttft: null, error: false, cost: null,
    meta: { i }, project, user: null, session: null, tags: null
  }
}

function liveBroadcaster(teardown: (fn: () => Promise<void>) => void) {
  let timer: NodeJS.Timeout | null = null
  const b: Broadcaster = new Broadcaster({
    clock: systemClock,
    schedule: (ms) => {
      if (timer !== null) return
      timer = setTimeout(() => {
        timer = null
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

t.test('on one nats-server', async (t) => {
  const nats = await startNats()
  t.teardown(() => nats.stop())
  const cfg: ClusterConfig = { servers: nats.urls, nodeId: null, leaseMs: 10_000, partitions: 4, replicas: 1, queryTimeoutMs: 5000, name: 'ondemand' }
  const ingestH: NatsHandles = await connectCluster(cfg, { log: silentLog, name: 'ingest' })
  const ingest2H: NatsHandles = await connectCluster(cfg, { log: silentLog, name: 'ingest2' })
  const reader: NatsHandles = await connectCluster(cfg, { log: silentLog, name: 'reader' })
  t.teardown(() => Promise.all([ingestH.close(), ingest2H.close(), reader.close()]))
  const log = new JetStreamLog(ingestH)
  const log2 = new JetStreamLog(ingest2H)
  const readerLog = new JetStreamLog(reader)
  const appended: StoredEvent[] = []
  const add = async (l: JetStreamLog, events: PendingEvent[]) => {
    const a = l.append(events)
    await a.committed
    appended.push(...a.events)
    return a.events
  }

  await t.test('append: many appends in flight from two connections; every ack matched to its event', async (t) => {
    const calls = Array.from({ length: 40 }, (_, k) => (k % 2 === 0 ? log : log2).append(Array.from({ length: 1 + (k % 7) * 30 }, (_, i) => pending(k * 1000 + i))))
    await Promise.all(calls.map((c) => c.committed))
    const events = calls.flatMap((c) => c.events)
    appended.push(...events)
    const seqs = events.map((e) => e.seq).sort((x, y) => x - y)
    t.same(seqs, Array.from({ length: events.length }, (_, i) => i + 1), 'every seq once, no gap')
    // Each event got the seq its own message was stored at (the body matches).
    for (const e of [events[0]!, events[events.length - 1]!, events[Math.floor(events.length / 2)]!]) {
      t.same(await readerLog.get(e.seq), e, `stored at ${e.seq}`)
    }
    t.equal(new Set(events.map((e) => e.id.slice(-12))).size, events.length, 'every random part differs')
    t.same(log.append([]).events, [])
    await log.append([]).committed
  })

  await t.test('append to a subject no stream takes fails at once (no responders), not after the timeout', async (t) => {
    const other: NatsHandles = { ...ingestH, names: { ...ingestH.names, subject: (p: number, project: string) => `nostream.${p}.${project}` } }
    const l = new JetStreamLog(other, { ackTimeoutMs: 10_000 })
    const t0 = Date.now()
    const err = await l.append([pending(1)]).committed.then(() => null, (e: unknown) => e as { code: string; statusCode: number })
    t.equal(err?.code, 'LLMS_ERR_UNAVAILABLE')
    t.equal(err?.statusCode, 503)
    t.ok(Date.now() - t0 < 5000, `failed in ${Date.now() - t0} ms`)
    t.equal(l.stats.failedAppends, 1)
  })

  await t.test('appends nobody acknowledges each fail after their own timeout, in order, however many wait', async (t) => {
    // A core subscriber takes the subject (so no "no responders") and never answers.
    const hole = ingest2H.nc.subscribe('blackhole.>', { callback: () => {} })
    t.teardown(() => hole.unsubscribe())
    await ingest2H.nc.flush()
    const other: NatsHandles = { ...ingestH, names: { ...ingestH.names, subject: (p: number, project: string) => `blackhole.${p}.${project}` } }
    const l = new JetStreamLog(other, { ackTimeoutMs: 300 })
    const failedAt = (c: Promise<void>, t0: number) => c.then(() => -1, (e: { code?: string }) => (e.code === 'LLMS_ERR_UNAVAILABLE' ? Date.now() - t0 : -2))
    const t0 = Date.now()
    const first = [failedAt(l.append([pending(1), pending(2)]).committed, t0), failedAt(l.append([pending(3)]).committed, t0)]
    await new Promise((r) => setTimeout(r, 150))
    const t1 = Date.now()
    const later = failedAt(l.append([pending(4)]).committed, t1)
    const [a, b2] = await Promise.all(first)
    const c = await later
    for (const [what, ms] of [['first', a!], ['second', b2!], ['later', c]] as const) t.ok(ms >= 290 && ms < 3000, `${what} failed ${ms} ms after it was made`)
    t.equal(l.stats.failedAppends, 3)
    // And a later append on the same log still gets its own timeout.
    const t2 = Date.now()
    t.ok((await failedAt(l.append([pending(5)]).committed, t2)) >= 290)
  })

  const b = liveBroadcaster((fn) => t.teardown(fn))
  const feed = new ClusterFeed({ h: reader, log: readerLog, broadcaster: b, price, logger: silentLog, onDemand: true, idleStopMs: 200 })
  await feed.start()
  t.teardown(() => feed.stop())

  await t.test('nobody listens: the stream is not followed', async (t) => {
    await add(log, [pending(1), pending(2)])
    await reader.jsm.streams.info(reader.names.stream)
    await b.idle()
    t.match(feed.stats(), { running: false, events: 0, follows: 0 })
  })

  await t.test('the first subscriber starts it; since_seq replays from the stream, then live, no gap or duplicate', async (t) => {
    const since = 5
    const s = new FakeSink()
    const live = new FakeSink()
    t.equal(b.send({ type: 'subscribe', sink: s, filter: inProject('a'), sinceSeq: since }), true)
    // Arrives while the feed starts: held, then handed over after the first.
    t.equal(b.send({ type: 'subscribe', sink: live, filter: inProject('a'), sinceSeq: null }), true)
    await until(() => feed.stats().running && b.broadcastStats.subscribers === 2, 'following, both subscribed')
    const startSeq = feed.stats().startSeq
    t.equal(startSeq, appended.length, 'attached at the stream end when the first subscriber came')
    // Events keep arriving while the replay runs.
    for (let k = 0; k < 5; k++) await add(k % 2 === 0 ? log : log2, [pending(7000 + k), pending(8000 + k, 'b')])
    const last = Math.max(...appended.map((e) => e.seq))
    await until(() => b.lastSeq === last, 'the broadcaster handled the last seq')
    const want = appended.filter((e) => e.project === 'a').map((e) => e.seq).sort((x, y) => x - y)
    await until(() => s.seqs().at(-1) === want.at(-1) && live.seqs().at(-1) === want.at(-1), 'both got the last a event')
    t.same(s.seqs(), want.filter((q) => q > since), 'since_seq: all after it, once, in order')
    t.same(live.seqs(), want.filter((q) => q > startSeq), 'live: everything after the feed started')
    const byId = new Map(appended.map((e) => [e.seq, e]))
    t.same(s.messages().filter((m) => m.type === 'event').at(-1), JSON.parse(eventMessage(price(byId.get(last - 1)!))), 'every field')
    t.equal(feed.stats().follows, 1)

    await t.test('alert frames reach the project subscribers', async (t) => {
      const notice: AlertNotice = { type: 'alert', project: 'a', rule_id: 'r1', rule_name: 'r', state: 'firing', value: 2, threshold: 1, at: '2026-01-01T00:00:00.000Z' }
      t.equal(publishAlert(ingestH.nc, ingestH.names, notice), true)
      await until(() => s.messages().some((m) => m.type === 'alert'), 'the alert arrived')
      t.same(s.messages().filter((m) => m.type === 'alert'), [notice])
    })

    b.send({ type: 'unsubscribe', sink: s })
    b.send({ type: 'unsubscribe', sink: live })
    await until(() => feed.stats().pauses === 1 && !feed.stats().running, 'stopped following after the last left')
    t.equal(b.broadcastStats.subscribers, 0)
  })

  await t.test('paused: events go by unread; the next subscriber starts it again at the new end, since_seq still exact', async (t) => {
    const handled = feed.stats().events
    await add(log, [pending(9001), pending(9002)])
    await reader.jsm.streams.info(reader.names.stream)
    t.equal(feed.stats().events, handled, 'nothing read while paused')
    const s = new FakeSink()
    const since = appended.length - 6
    b.send({ type: 'subscribe', sink: s, filter: inProject('a'), sinceSeq: since })
    await until(() => feed.stats().follows === 2 && feed.stats().running, 'following again')
    t.equal(feed.stats().startSeq, appended.length)
    await add(log2, [pending(9003), pending(9004)])
    const want = appended.filter((e) => e.project === 'a' && e.seq > since).map((e) => e.seq).sort((x, y) => x - y)
    await until(() => s.seqs().at(-1) === want.at(-1), 'got the last a event')
    t.same(s.seqs(), want)
    t.equal(s.closedWith, null)
  })

  await t.test('stop: the broadcaster gets its own send back; safe twice', async (t) => {
    await feed.stop()
    await feed.stop()
    t.equal(feed.stats().running, false)
    t.equal(Object.prototype.hasOwnProperty.call(b, 'send'), false)
  })
})
