/**
 * The JetStream event log (src/cluster/js-log.ts), the cluster names and the NATS connection
 * (src/cluster/nats.ts), against one real nats-server (and three for the helper test).
 */
import t from 'tap'
import { startNats, streamLeader } from '../helpers/nats.js'
import { clusterNames, partitionOf } from '../../src/cluster/names.js'
import { connectCluster, type NatsHandles } from '../../src/cluster/nats.js'
import { decodeEvent, encodeEvent, JetStreamLog, PRICE_REV_HEADER, priceRevOf } from '../../src/cluster/js-log.js'
import type { ClusterConfig } from '../../src/config.js'
import { seqOfEventId, type PendingEvent, type StoredEvent } from '../../src/events.js'
import { silentLog } from '../../src/log.js'

t.setTimeout(240_000)

const cfg = (servers: string[], over: Partial<ClusterConfig> = {}): ClusterConfig => ({
  servers, nodeId: null, leaseMs: 10_000, partitions: 4, replicas: 0, queryTimeoutMs: 5_000, name: 'llmscope', ...over
})

let n = 0
/** A pending event with every field set, varied by a counter. */
function pending(over: Partial<PendingEvent> = {}): PendingEvent {
  const i = n++
  return {
    ts: 1_700_000_000_000 + i, recv: 1_700_000_000_500 + i, model: `m${i % 3}`, provider: 'openai',
    prompt: 10 + i, completion: 5, total: 15 + i, cached: 1, reasoning: 2, latency: 123.5, ttft: 40,
    error: i % 2 === 1, cost: 0.25, meta: { k: 'v', n: i, nested: { a: [1, 2] } }, project: 'acme',
    user: 'u1', session: 's1', tags: ['a', 'b'], ...over
  }
}

const strip = (e: StoredEvent) => {
  const { seq: _s, id: _i, ...rest } = e
  return rest
}

t.test('names and partitionOf (FNV-1a 32 of project NUL model)', async (t) => {
  const n = clusterNames('llmscope')
  t.equal(n.stream, 'llmscope-events')
  t.equal(n.subject(3, 'acme'), 'llmscope.ev.3.acme')
  t.equal(n.partitionSubject(3), 'llmscope.ev.3.>')
  t.equal(n.allEvents, 'llmscope.ev.>')
  t.equal(n.clusterBucket, 'llmscope-cluster')
  t.equal(n.metaBucket, 'llmscope-meta')
  t.equal(n.alertsBucket, 'llmscope-alerts')
  t.equal(n.snapshotBucket, 'llmscope-snapshots')
  t.equal(n.query(7), 'llmscope.q.7')
  t.equal(n.alertSubject('acme'), 'llmscope.alert.acme')
  t.equal(n.allAlerts, 'llmscope.alert.>')
  // Reference: FNV-1a 32 with BigInt arithmetic over the UTF-8 bytes.
  const fnv = (s: string) => {
    let h = 0x811c9dc5n
    for (const b of Buffer.from(s, 'utf8')) {
      h ^= BigInt(b)
      h = (h * 0x01000193n) & 0xffffffffn
    }
    return h
  }
  t.equal(fnv('a'), 0xe40c292cn, 'the reference is FNV-1a 32 (published vector for "a")')
  for (const [p, m] of [['a', 'b'], ['acme', 'gpt-4o'], ['default', 'claude-3-5-sonnet'], ['x', 'modèle-ü']]) {
    for (const parts of [1, 4, 16, 7]) t.equal(partitionOf(p!, m!, parts), Number(fnv(`${p}\u0000${m}`) % BigInt(parts)), `${p}/${m}/${parts}`)
  }
  t.equal(partitionOf('', '', 1), 0)
})

t.test('encodeEvent/decodeEvent keep every field, nulls included', async (t) => {
  const full: StoredEvent = { seq: 77, id: 'evt_25_abcdefghijkl', ...pending() }
  t.same(decodeEvent(77, encodeEvent(full)), full)
  const bare: StoredEvent = { seq: 5, id: 'evt_5_ABCDEFGHIJ-_', ...pending({ ttft: null, cost: null, meta: null, user: null, session: null, tags: null, project: 'default' }) }
  t.same(decodeEvent(5, encodeEvent(bare)), bare)
  t.throws(() => decodeEvent(1, new TextEncoder().encode('[2,"x"]')), /unknown format/)
  // Format 3: cache-write tokens (set on decode only when nonzero), with or without the other extras.
  const cw: StoredEvent = { seq: 9, id: 'evt_9_abcdefghijkl', ...pending({ cacheWrite: 300 }) }
  t.equal(JSON.parse(Buffer.from(encodeEvent(cw)).toString())[0], 3)
  t.same(decodeEvent(9, encodeEvent(cw)), cw)
  const cwKeyed: StoredEvent = { seq: 10, id: 'evt_a_abcdefghijkl', ...pending({ cacheWrite: 7, clientId: 'k9', costSource: 'computed' }) }
  t.same(decodeEvent(10, encodeEvent(cwKeyed)), cwKeyed)
  t.equal(JSON.parse(Buffer.from(encodeEvent({ ...cw, cacheWrite: 0 })).toString())[0], 1, 'no cache writes: format 1 as before')
  t.throws(() => decodeEvent(1, new TextEncoder().encode('[3,"x"]')), /unknown format/)
  // The price revision comes from the header, set only when > 0.
  t.same(decodeEvent(77, encodeEvent(full), 12), { ...full, priceRev: 12 })
  t.same(decodeEvent(77, encodeEvent(full), 0), full)
  t.equal(priceRevOf(undefined), 0)
})

t.test('on one nats-server', async (t) => {
  const nats = await startNats()
  t.teardown(() => nats.stop())
  const h = await connectCluster(cfg(nats.urls), { log: silentLog, name: 'test' })
  t.teardown(() => h.close())
  const log = new JetStreamLog(h)

  t.test('connectCluster made the stream and buckets with replicas 1', async (t) => {
    t.equal(h.replicas, 1)
    t.equal(h.partitions, 4)
    const si = await h.jsm.streams.info('llmscope-events')
    t.same(si.config.subjects, ['llmscope.ev.>'])
    // No dedupeWindowMs in this config: the default dedupe window, 24 hours.
    t.equal(si.config.duplicate_window, 86_400_000_000_000)
    t.equal(si.config.num_replicas, 1)
    const kv = await h.kvm.open('llmscope-cluster')
    t.equal((await kv.status()).ttl, 10_000)
    t.equal((await kv.status()).history, 1)
    const meta = await h.kvm.open('llmscope-meta')
    t.same((await meta.get('config'))?.json(), { partitions: 4 })
    await h.kvm.open('llmscope-alerts')
    await h.objm.open('llmscope-snapshots')
    // A second node ensures the same things: fine.
    const h2 = await connectCluster(cfg(nats.urls), { log: silentLog })
    await h2.close()
    await h2.close()
    // Another partition count is refused, naming both.
    await t.rejects(connectCluster(cfg(nats.urls, { partitions: 8 }), { log: silentLog }), /made with 4 partitions and LLMSCOPE_PARTITIONS is 8/)
  })

  t.test('append: ids, seqs, subjects, round trip of every field', async (t) => {
    const before = await log.lastSeq()
    const input = [pending(), pending({ ttft: null, cost: null, meta: null, user: null, session: null, tags: null }), pending({ project: 'other-1', model: 'gpt-4o' })]
    const copies = input.map((e) => structuredClone(e))
    const { events, committed } = log.append(input)
    t.equal(events.length, 3)
    t.equal(events[0]!.seq, -1, 'seq comes with the ack')
    await committed
    t.same(events.map((e) => e.seq), [before + 1, before + 2, before + 3])
    for (const e of events) {
      t.match(e.id, /^evt_[0-9a-z]+_[A-Za-z0-9_-]{12}$/)
      t.equal(seqOfEventId(e.id), e.seq)
    }
    t.equal(await log.lastSeq(), before + 3)
    for (let i = 0; i < 3; i++) {
      const got = await log.get(events[i]!.seq)
      t.same(got, events[i], `get(${events[i]!.seq})`)
      t.same(strip(got!), copies[i])
      const sm = await h.jsm.streams.getMessage('llmscope-events', { seq: events[i]!.seq })
      t.equal(sm!.subject, `llmscope.ev.${partitionOf(copies[i]!.project, copies[i]!.model, 4)}.${copies[i]!.project}`)
      t.equal(sm!.header.get('Nats-Msg-Id'), events[i]!.id.slice(-12))
      t.equal(sm!.header.get(PRICE_REV_HEADER), '0', 'no book: revision 0')
    }
    t.equal(await log.get(before + 1000), undefined)
    t.equal(await log.get(0), undefined)
    t.equal(await log.get(-3), undefined)
  })

  t.test('every message carries the price revision its events were accepted at', async (t) => {
    let rev = 5
    const revLog = new JetStreamLog(h, { priceRev: () => rev })
    const a = revLog.append([pending(), pending({ cacheWrite: 40 })])
    rev = 6
    const b = revLog.append([pending()])
    await Promise.all([a.committed, b.committed])
    t.same(a.events.map((e) => e.priceRev), [5, 5], 'the revision when append was called')
    t.equal(b.events[0]!.priceRev, 6)
    for (const e of [...a.events, ...b.events]) {
      const sm = await h.jsm.streams.getMessage('llmscope-events', { seq: e.seq })
      t.equal(priceRevOf(sm!.header), e.priceRev)
      t.same(await log.get(e.seq), e, 'get reads it back (cache writes included)')
    }
    const read: StoredEvent[] = []
    for await (const batch of log.read(a.events[0]!.seq, { to: b.events[0]!.seq })) read.push(...batch)
    t.same(read.filter((e) => e.priceRev !== undefined), [...a.events, ...b.events], 'read() too')
  })

  t.test('a publish with the same Nats-Msg-Id is stored once, acked with the first seq', async (t) => {
    const { events, committed } = log.append([pending()])
    await committed
    const first = events[0]!
    const rnd = first.id.slice(-12)
    const ack = await h.js.publish(h.names.subject(0, 'acme'), encodeEvent({ ...strip(first), rnd }), { msgID: rnd })
    t.equal(ack.duplicate, true)
    t.equal(ack.seq, first.seq)
    t.equal(await log.lastSeq(), first.seq)
  })

  t.test('many appends in flight together', async (t) => {
    const before = await log.lastSeq()
    const calls = Array.from({ length: 20 }, () => log.append(Array.from({ length: 50 }, () => pending())))
    await Promise.all(calls.map((c) => c.committed))
    const seqs = calls.flatMap((c) => c.events.map((e) => e.seq)).sort((a, b) => a - b)
    t.same(seqs, Array.from({ length: 1000 }, (_, i) => before + 1 + i), 'every seq once, no gap')
  })

  t.test('read: all, by partition, by project, from/to, batches, bounded', async (t) => {
    const h2name = 'rd'
    const h2 = await connectCluster(cfg(nats.urls, { name: h2name, partitions: 3 }), { log: silentLog })
    t.teardown(() => h2.close())
    const log2 = new JetStreamLog(h2)
    // Empty stream: ends at once.
    const none: StoredEvent[][] = []
    for await (const b of log2.read(1)) none.push(b)
    t.same(none, [])
    const input: PendingEvent[] = []
    for (let i = 0; i < 2500; i++) input.push(pending({ project: i % 5 === 0 ? 'p-b' : 'p-a', model: `model-${i % 7}` }))
    const { events, committed } = log2.append(input)
    await committed
    const byPartition = (p: number) => events.filter((e) => partitionOf(e.project, e.model, 3) === p)
    const collect = async (from: number, opts?: Parameters<JetStreamLog['read']>[1]) => {
      const batches: StoredEvent[][] = []
      for await (const b of log2.read(from, opts)) batches.push(b)
      return batches
    }
    const all = await collect(1)
    t.ok(all.every((b) => b.length <= 1000 && b.length > 0), 'batches of at most 1000')
    t.same(all.flat(), events)
    t.same((await collect(101, { to: 200 })).flat(), events.slice(100, 200))
    t.same((await collect(2400)).flat(), events.slice(2399))
    t.same(await collect(2501), [])
    for (let p = 0; p < 3; p++) t.same((await collect(1, { partition: p })).flat(), byPartition(p), `partition ${p}`)
    t.same((await collect(1, { project: 'p-b' })).flat(), events.filter((e) => e.project === 'p-b'))
    const p0b = events.filter((e) => e.project === 'p-b' && partitionOf(e.project, e.model, 3) === 0 && e.seq >= 500 && e.seq <= 1500)
    t.same((await collect(500, { partition: 0, project: 'p-b', to: 1500 })).flat(), p0b)
    // A read whose filter matches nothing before `to` while later events exist ends too.
    const late = log2.append([pending({ project: 'p-late' })])
    await late.committed
    t.same(await collect(1, { project: 'p-late', to: 2500 }), [])
    t.same((await collect(1, { project: 'p-late' })).flat(), late.events)
    // Stopping early (break) is fine.
    for await (const b of log2.read(1)) {
      t.equal(b.length, 1000)
      break
    }

    t.test('purgeProject removes only that project; positions stay', async (t) => {
      const last = await log2.lastSeq()
      const purged = await log2.purgeProject('p-b')
      t.equal(purged, events.filter((e) => e.project === 'p-b').length)
      t.same((await collect(1)).flat(), [...events.filter((e) => e.project !== 'p-b'), ...late.events])
      t.equal(await log2.get(events[0]!.seq), undefined, 'a purged event is gone')
      t.same(await log2.get(events[1]!.seq), events[1])
      t.equal(await log2.lastSeq(), last)
      t.equal(await log2.purgeProject('p-b'), 0)
    })
  })

  t.test('an append not acknowledged in time rejects with LLMS_ERR_UNAVAILABLE', async (t) => {
    const quick = new JetStreamLog(h, { ackTimeoutMs: 500 })
    const status = h.nc.status()
    const reconnected = (async () => {
      for await (const s of status) if (s.type === 'reconnect') return
    })()
    await nats.servers[0]!.kill()
    const { events, committed } = quick.append([pending(), pending()])
    t.equal(events.length, 2)
    const err = await committed.then(() => null, (e: unknown) => e as { code: string; statusCode: number; retryAfter?: number; message: string })
    t.equal(err?.code, 'LLMS_ERR_UNAVAILABLE')
    t.equal(err?.statusCode, 503)
    t.equal(err?.retryAfter, 1)
    t.match(err?.message, /did not acknowledge/)
    t.equal(quick.stats.failedAppends, 1)
    await nats.servers[0]!.restart()
    // The client reconnects by itself; then the next append succeeds.
    await reconnected
    const again = log.append([pending()])
    await again.committed
    t.ok(again.events[0]!.seq > 0)
  })
})

t.test('connectCluster gives up with one clear error when no server answers', async (t) => {
  const nats = await startNats()
  const url = nats.urls[0]!
  await nats.stop()
  const started = Date.now()
  await t.rejects(connectCluster(cfg([url]), { log: silentLog, firstConnectTimeoutMs: 3000 }), new RegExp(`cannot connect to NATS at ${url.replace(/[.:/]/g, '\\$&')}`))
  t.ok(Date.now() - started < 15_000)
})

t.test('three servers: R3 by default, the stream has a leader', async (t) => {
  const nats = await startNats({ servers: 3 })
  t.teardown(() => nats.stop())
  t.same(nats.servers.map((s) => s.name), ['n1', 'n2', 'n3'])
  const h: NatsHandles = await connectCluster(cfg([nats.urls[0]!]), { log: silentLog })
  t.teardown(() => h.close())
  t.equal(h.replicas, 3)
  t.equal((await h.jsm.streams.info('llmscope-events')).config.num_replicas, 3)
  const leader = await streamLeader(nats.urls[1]!, 'llmscope-events')
  t.ok(leader !== undefined && ['n1', 'n2', 'n3'].includes(leader), `leader ${leader}`)
  const log = new JetStreamLog(h)
  const { events, committed } = log.append([pending(), pending()])
  await committed
  t.same(events.map((e) => e.seq), [1, 2])
})
