/**
 * Exactly once in cluster mode (DESIGN §7, §9): an event's client id is its JetStream
 * `Nats-Msg-Id` (`${project}/${clientId}`), so copies sent to any node within the stream's
 * `duplicate_window` (= the dedupe window) are stored once and answered with the first copy's
 * id — in one append, across appends, across nodes, concurrently. Imported EVENT objects keep
 * their costs through the stream.
 */
import t from 'tap'
import { startNats } from '../helpers/nats.js'
import { FILE_TIMEOUT_MS } from '../helpers/server.js'
import { get, post, startCluster, until } from '../helpers/cluster.js'
import { connectCluster } from '../../src/cluster/nats.js'
import { clientRnd, decodeEvent, encodeEvent, JetStreamLog } from '../../src/cluster/js-log.js'
import { isDuplicate, seqOfEventId, type PendingEvent } from '../../src/events.js'
import type { ClusterConfig } from '../../src/config.js'
import { silentLog } from '../../src/log.js'

t.setTimeout(FILE_TIMEOUT_MS)

const HOUR = 3600_000

function pending(over: Partial<PendingEvent> = {}): PendingEvent {
  return {
    ts: 1_700_000_000_000, recv: 1_700_000_000_500, model: 'gpt-4o', provider: 'openai', prompt: 10, completion: 5, total: 15, cached: 0, reasoning: 0,
    latency: 12, ttft: null, error: false, cost: null, meta: null, project: 'acme', user: null, session: null, tags: null, ...over
  }
}

t.test('JetStreamLog: a client id is the Nats-Msg-Id; a duplicate PubAck gives the first copy\'s id', async (t) => {
  const nats = await startNats()
  t.teardown(() => nats.stop())
  const cfg: ClusterConfig = { servers: nats.urls, nodeId: null, leaseMs: 10_000, partitions: 4, replicas: 0, queryTimeoutMs: 5_000, name: 'dd', dedupeWindowMs: 2 * HOUR }
  const h = await connectCluster(cfg, { log: silentLog, name: 'test' })
  t.teardown(() => h.close())
  const log = new JetStreamLog(h)

  const si = await h.jsm.streams.info(h.names.stream)
  t.equal(si.config.duplicate_window, 2 * HOUR * 1e6, 'the stream\'s duplicate_window is the dedupe window')

  // Two copies in one append, and copies of the same key in other projects (independent).
  const a = log.append([pending({ clientId: 'k1' }), pending({ clientId: 'k2' }), pending({ clientId: 'k1', prompt: 99 }), pending({ clientId: 'k1', project: 'other' }), pending()])
  await a.committed
  const [k1, k2, k1copy, k1other, plain] = a.events
  t.equal(k1copy.id, k1.id, 'the copy in the same append answers the first one\'s id')
  t.ok(isDuplicate(k1copy) && !isDuplicate(k1) && !isDuplicate(k2) && !isDuplicate(k1other) && !isDuplicate(plain))
  t.not(k1other.id, k1.id, 'another project: another event')
  t.equal(k1.id, `evt_${k1.seq.toString(36)}_${clientRnd('acme', 'k1')}`, 'the id\'s random part derives from the key')
  t.equal(seqOfEventId(k1.id), k1.seq)
  const sm = await h.jsm.streams.getMessage(h.names.stream, { seq: k1.seq })
  t.equal(sm!.header.get('Nats-Msg-Id'), 'acme/k1')
  t.same(decodeEvent(sm!.seq, sm!.data), { ...pending({ clientId: 'k1' }), seq: k1.seq, id: k1.id }, 'read back with its client id (body format 2)')

  // Later appends: duplicates again, nothing stored.
  const last = await log.lastSeq()
  const b = log.append([pending({ clientId: 'k2' }), pending({ clientId: 'k1' })])
  await b.committed
  t.same(b.events.map((e) => e.id), [k2.id, k1.id])
  t.ok(b.events.every(isDuplicate))
  t.equal(await log.lastSeq(), last, 'the stream did not grow')

  // Body formats: 1 without extras (as before), 2 with them; an imported cost's origin survives.
  const body1 = JSON.parse(Buffer.from(encodeEvent({ ...pending(), rnd: 'AAAAAAAAAAAA' })).toString())
  t.equal(body1[0], 1)
  t.equal(body1.length, 20)
  const imported = decodeEvent(7, encodeEvent({ ...pending({ clientId: 'evt_1_abcdefghijkl', costSource: 'unpriced' }), rnd: 'AAAAAAAAAAAA' }))
  t.match(imported, { clientId: 'evt_1_abcdefghijkl', costSource: 'unpriced', id: 'evt_7_AAAAAAAAAAAA' })
  t.throws(() => decodeEvent(1, Buffer.from('[3,"x"]')), /unknown format/)
})

t.test('a cluster: copies sent to any node, one after the other or at once, are counted once', async (t) => {
  const cluster = await startCluster({ nats: 1, nodes: 2, env: { LLMSCOPE_DEDUPE_WINDOW_HOURS: '1' } })
  t.teardown(() => cluster.stop())
  const [a, b] = [cluster.url(0), cluster.url(1)]
  const ev = (id: string, over: Record<string, unknown> = {}) => ({ id, model: 'gpt-4o', prompt_tokens: 100, completion_tokens: 10, timestamp: '2026-05-01T00:00:00Z', latency_ms: 5, ...over })

  const first = await post(a, '/events/batch', [ev('x1'), ev('x2'), ev('x1')])
  t.equal(first.status, 202)
  t.match(first.body, { accepted: 2, duplicates: 1 })
  t.equal(first.body.event_ids[2], first.body.event_ids[0])
  const again = await post(b, '/events/batch', [ev('x2'), ev('x1'), ev('x3')])
  t.same(again.body, { status: 'accepted', accepted: 1, event_ids: [first.body.event_ids[1], first.body.event_ids[0], again.body.event_ids[2]], duplicates: 2 }, 'on the other node: the first copies\' ids')
  const one = await post(b, '/events/ingest', ev('x3'))
  t.same(one.body, { status: 'accepted', event_id: again.body.event_ids[2] })

  // Concurrent copies on both nodes.
  const racing = await Promise.all(Array.from({ length: 20 }, (_, i) => post(i % 2 ? a : b, '/events/ingest', ev('race'))))
  t.ok(racing.every((r) => r.status === 202))
  t.equal(new Set(racing.map((r) => r.body.event_id)).size, 1, 'one event_id for every copy')

  const range = 'start_time=2026-05-01T00:00:00Z&end_time=2026-05-02T00:00:00Z'
  for (const url of [a, b]) {
    await until(async () => (await get(url, `/analytics/metrics?${range}`)).body.total_requests === 4, `node ${url}: x1, x2, x3, race once each`, 60_000)
  }
  t.equal((await get(a, `/analytics/metrics?${range}`)).body.total_requests, 4)
  const stored = await get(b, `/events/${first.body.event_ids[0]}`)
  t.equal(stored.body.client_id, 'x1')

  // An EVENT exported from one project and imported into another keeps its cost and source.
  t.equal((await post(a, '/projects', { id: 'copy' })).status, 201)
  await until(async () => (await get(b, '/projects/copy')).status === 200, 'node b sees project copy')
  const priced = await post(a, '/events/batch', [ev('p1', { model: 'my-inhouse-model' }), ev('p2', { cost: 0.5 }), ev('p3')])
  const exported = await Promise.all((priced.body.event_ids as string[]).map(async (id) => (await get(b, `/events/${id}`)).body))
  const imported = await post(b, '/events/batch', exported, 'copy')
  t.match(imported.body, { accepted: 3, duplicates: 0 })
  const back = await Promise.all((imported.body.event_ids as string[]).map(async (id) => (await get(a, `/events/${id}`, 'copy')).body))
  t.same(back.map((e) => [e.cost, e.cost_source, e.unpriced, e.client_id]), exported.map((e) => [e.cost, e.cost_source, e.unpriced, e.client_id]))
  const twice = await post(a, '/events/batch', exported, 'copy')
  t.match(twice.body, { accepted: 0, duplicates: 3 }, 'posting the export again, on another node: nothing new')
})
