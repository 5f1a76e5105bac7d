/**
 * DELETE /events in cluster mode, in one process (src/cluster/forget.ts, tombstones.ts, the
 * runner's side in partition.ts): two nodes on one nats-server and a single-node reference given
 * the same events and deletes.
 * - a delete through one node answers the reference's count and every answer equals the
 *   reference's; the stream messages and the tombstone are gone; nodes drop local copies of
 *   partitions they do not own; GET /events/deletes shows it done;
 * - the janitor completes a delete whose node died after recording it, and removes chunks
 *   that never got a header;
 * - a node taking partitions over re-applies a pending delete before serving them;
 * - with retention on (rows folded into coarse hours), a delete subtracts the folded events:
 *   counts and sums equal the reference's;
 * - the pure parts: seq chunks, hit merging, bounded work, malformed requests.
 */
import t, { type Test } from 'tap'
import { startNats } from '../helpers/nats.js'
import { makeApp, adminHeaders, type TestApp } from '../helpers/app.js'
import { connectCluster } from '../../src/cluster/nats.js'
import { ClusterForget } from '../../src/cluster/forget.js'
import { ForgetTombstones, bounded, decodeSeqs, encodeSeqs } from '../../src/cluster/tombstones.js'
import { liveKeys } from '../../src/cluster/kv-leader.js'
import { decodeSearch, mergeHits, readBySeq, searchRequest } from '../../src/cluster/search.js'
import { localKey } from '../../src/cluster/snapshots.js'
import { partitionOf } from '../../src/cluster/names.js'
import { DeleteRegistry } from '../../src/forget.js'
import { loadConfig } from '../../src/config.js'
import { silentLog } from '../../src/log.js'

t.setTimeout(300_000)

const nats = await startNats({ servers: 1 })
t.teardown(() => nats.stop())

const NAME = 'forgettest'
const clusterEnv = (node: string, name = NAME, extra: Record<string, string> = {}) => ({
  LLMSCOPE_NATS_URL: nats.urls.join(','),
  LLMSCOPE_NODE_ID: node,
  LLMSCOPE_LEASE_S: '2',
  LLMSCOPE_PARTITIONS: '4',
  LLMSCOPE_CLUSTER_NAME: name,
  ...extra
})

async function waitFor(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

type Ready = { cluster?: { owned: number[] } }
const owned = async (x: TestApp) => ((await x.app.inject({ url: '/ready' })).json() as Ready).cluster?.owned ?? []

const a = await makeApp(t, { env: clusterEnv('a') })
const b = await makeApp(t, { env: clusterEnv('b') })
const ref = await makeApp(t)
await waitFor('every partition owned, two each', async () => (await owned(a)).length === 2 && (await owned(b)).length === 2)

const h = await connectCluster(loadConfig({ LLMSCOPE_DATA_DIR: t.testdir(), ...clusterEnv('tester') }).cluster!, { log: silentLog, name: 'tester' })
t.teardown(() => h.close())
const tombstones = new ForgetTombstones(h.kvm, h.names.forgetBucket)

const MODELS = ['gpt-4o', 'gpt-4o-mini', 'claude-3-5-sonnet-20241022', 'my-llm']
function makeEvents(n: number, seed: number): Record<string, unknown>[] {
  let s = seed
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31)
  return Array.from({ length: n }, () => ({
    timestamp: new Date(Date.UTC(2026, 0, 1) + Math.floor(rnd() * 2 * 86_400_000)).toISOString(),
    model: MODELS[Math.floor(rnd() * MODELS.length)],
    prompt_tokens: Math.floor(rnd() * 3000),
    completion_tokens: Math.floor(rnd() * 900),
    latency_ms: Math.floor(rnd() * 3000) + 1,
    status: rnd() < 0.1 ? 'error' : 'success',
    user_id: `u${Math.floor(rnd() * 8)}`,
    session_id: `s${Math.floor(rnd() * 30)}`,
    tags: rnd() < 0.5 ? ['alpha'] : ['beta'],
    metadata: { feature: rnd() < 0.5 ? 'chat' : 'search' }
  }))
}

/** Sends `events` in batches of 25, one at a time, to the nodes in turn (and to the reference). */
async function ingest(nodes: TestApp[], events: Record<string, unknown>[], reference = ref): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < events.length; i += 25) {
    const payload = events.slice(i, i + 25)
    const r = await nodes[(i / 25) % nodes.length]!.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload })
    if (r.statusCode !== 202) throw new Error(r.body)
    ids.push(...(r.json().event_ids as string[]))
    const rr = await reference.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload })
    if (rr.statusCode !== 202) throw new Error(rr.body)
  }
  return ids
}

const URLS = [
  '/analytics/metrics',
  '/analytics/metrics?user_id=u2',
  '/analytics/costs',
  '/analytics/timeseries?interval=1h&start_time=2026-01-01T00:00:00Z&end_time=2026-01-03T00:00:00Z',
  '/analytics/breakdown?by=user_id',
  '/analytics/breakdown?by=session_id&limit=4',
  '/analytics/breakdown?by=tag',
  '/analytics/dimensions'
]

async function sameAsRef(t: Test, nodes: TestApp[], when: string, reference = ref): Promise<void> {
  for (const url of URLS) {
    const want = await reference.app.inject({ url, headers: adminHeaders })
    t.equal(want.statusCode, 200, `reference ${url}`)
    for (const node of nodes) {
      const got = await node.app.inject({ url, headers: adminHeaders })
      t.same(got.json(), want.json(), `${when}: ${node.engine.clusterStatus() === null ? '' : (node.engine.clusterStatus() as { node: string }).node} ${url}`)
    }
  }
}

/** Every event of a search (one page of up to 1000). */
async function search(node: TestApp, q: string): Promise<Array<{ id: string; seq: number; model: string }>> {
  const r = await node.app.inject({ url: `/events?${q}&limit=1000`, headers: adminHeaders })
  if (r.statusCode !== 200) throw new Error(r.body)
  return r.json().events
}

async function streamHolds(seqs: number[]): Promise<number[]> {
  const held: number[] = []
  for (const seq of seqs) {
    try {
      if ((await h.jsm.streams.getMessage(h.names.stream, { seq })) !== null) held.push(seq)
    } catch (err) {
      if (!/no message found/i.test((err as Error).message)) throw err
    }
  }
  return held
}

async function bucketKeys(): Promise<string[]> {
  return liveKeys(await h.kvm.open(h.names.forgetBucket))
}

/** A ClusterForget of the test's own, as a node whose janitor runs when told. */
function janitorNode(registry = new DeleteRegistry(() => Date.now())) {
  return {
    registry,
    forget: new ClusterForget({ h, tombstones, node: 'tester', log: silentLog, lastSeq: async () => (await h.jsm.streams.info(h.names.stream)).state.last_seq, matchTimeoutMs: 10_000, applyTimeoutMs: 10_000, applyDeadlineMs: 20_000, staleMs: 1000, registry })
  }
}

/** What a node that died right after recording the delete of `events` leaves in KV. */
async function ghost(id: string, events: Array<{ seq: number; model: string }>): Promise<void> {
  const bySeq = new Map<number, number[]>()
  for (const e of events) {
    const p = partitionOf('default', e.model, h.partitions)
    bySeq.set(p, [...(bySeq.get(p) ?? []), e.seq])
  }
  await tombstones.write({ id, project: 'default', node: 'ghost', started_at: Date.now(), up_to: Math.max(...events.map((e) => e.seq)), fh: 'x' }, bySeq)
}

await ingest([a, b], makeEvents(300, 11))

t.test('a delete through one node: the reference\'s count and answers, out of the stream and KV, local copies of others\' partitions dropped', async (t) => {
  const u2 = await search(a, 'user_id=u2')
  t.ok(u2.length > 20, `u2 has events (${u2.length})`)
  const want = await ref.app.inject({ method: 'DELETE', url: '/events?user_id=u2', headers: adminHeaders })
  const got = await b.app.inject({ method: 'DELETE', url: '/events?user_id=u2', headers: adminHeaders })
  t.equal(got.statusCode, 200, got.body)
  t.same(got.json(), { deleted: u2.length }, 'deleted: every event the search found')
  t.same(got.json(), want.json(), 'the reference\'s answer')
  await sameAsRef(t, [a, b], 'after the delete')
  for (const node of [a, b]) {
    t.same(await search(node, 'user_id=u2'), [], 'search finds none')
    t.equal((await node.app.inject({ url: `/events/${u2[0]!.id}`, headers: adminHeaders })).statusCode, 404, 'GET /events/:id 404')
  }
  t.same(await streamHolds(u2.map((e) => e.seq)), [], 'their stream messages are gone')
  t.same(await bucketKeys(), [], 'no tombstone left')
  const listed = (await b.app.inject({ url: '/events/deletes', headers: adminHeaders })).json().deletes
  t.match(listed[0], { state: 'done', matched: u2.length, deleted: u2.length }, 'GET /events/deletes on the front: done')
  // Every node drops its local copies of partitions it does not own (they may hold the rows).
  for (const node of [a, b]) {
    const mine = new Set(await owned(node))
    await waitFor('local copies of other partitions dropped', () => [0, 1, 2, 3].every((p) => mine.has(p) || node.engine.stores.meta.get(localKey(p)) === undefined))
    t.ok([...mine].some((p) => node.engine.stores.meta.get(localKey(p)) !== undefined), 'its own partitions\' snapshots are kept')
  }

  const none = await b.app.inject({ method: 'DELETE', url: '/events?user_id=nobody', headers: adminHeaders })
  t.same(none.json(), { deleted: 0 }, 'a delete matching nothing: 0, nothing recorded')
  t.same(await bucketKeys(), [])
  const refused = (await a.engine.forgetEvents('default', { start: -Infinity, end: Infinity }).catch((err: unknown) => err)) as { statusCode?: number }
  t.equal(refused.statusCode, 400, 'no filter but time: refused before anything')
})

t.test('the janitor completes a dead node\'s delete and removes chunks that never got a header', async (t) => {
  const u4 = await search(a, 'user_id=u4')
  t.ok(u4.length > 20)
  t.equal((await ref.app.inject({ method: 'DELETE', url: '/events?user_id=u4', headers: adminHeaders })).statusCode, 200)
  await ghost('del_ghostjanitor', u4)
  const kv = await h.kvm.open(h.names.forgetBucket)
  await kv.put('s.del_orphan.1.0', JSON.stringify({ v: 1, d: encodeSeqs([3, 5]) }))
  t.same((await tombstones.orphans()).sort(), ['del_orphan'], 'the orphan: chunks without a header')
  t.same((await tombstones.pendingFor(partitionOf('default', u4[0]!.model, 4))).map((f) => f.id), ['del_ghostjanitor'], 'the ghost is pending for its partitions')

  const { forget, registry } = janitorNode()
  await forget.janitor(1_000)
  t.equal((await bucketKeys()).length > 1, true, 'first sight: nothing done yet')
  await forget.janitor(10_000)
  t.same(await bucketKeys(), [], 'second pass, header unchanged past staleMs: completed; the orphan removed')
  t.match(registry.list('default')[0], { id: 'del_ghostjanitor', state: 'done', matched: u4.length, deleted: u4.length }, 'the janitor\'s registry shows it done')
  t.same(await streamHolds(u4.map((e) => e.seq)), [], 'its stream messages are gone')
  await sameAsRef(t, [a, b], 'after the janitor')
  forget.stop()
  const stopped = (await forget.run('default', { start: -Infinity, end: Infinity, user_id: 'u1' }).catch((err: unknown) => err)) as { statusCode?: number }
  t.equal(stopped.statusCode, 503, 'a stopped ClusterForget starts nothing')
})

t.test('a node taking partitions over re-applies a pending delete before serving them', async (t) => {
  const u6 = await search(b, 'user_id=u6')
  t.equal((await ref.app.inject({ method: 'DELETE', url: '/events?user_id=u6', headers: adminHeaders })).statusCode, 200)
  const fromA = await owned(a)
  const moved = u6.filter((e) => fromA.includes(partitionOf('default', e.model, 4)))
  t.ok(moved.length > 0, `${moved.length} of u6's events in a's partitions`)
  await ghost('del_ghosttakeover', u6)
  await a.engine.destroy()
  await waitFor('b owns every partition', async () => (await owned(b)).length === 4)
  const stats = (b.engine.stats() as unknown as { cluster: { partitionStats: Array<{ partition: number; pendingForgets: number }> } }).cluster.partitionStats
  t.ok(stats.filter((s) => fromA.includes(s.partition)).every((s) => s.pendingForgets === 1), 'the partitions taken over filter the pending delete')
  const left = (await search(b, 'user_id=u6')).filter((e) => fromA.includes(partitionOf('default', e.model, 4)))
  t.same(left, [], 'before any apply request: none of its events in the partitions taken over')
  const { forget } = janitorNode()
  await forget.janitor(1_000)
  await forget.janitor(10_000)
  t.same(await bucketKeys(), [], 'completed')
  await sameAsRef(t, [b], 'after the takeover and the janitor')
  t.same(await streamHolds(u6.map((e) => e.seq)), [])
})

t.test('a heartbeat still in flight when a delete completes never brings its header back (found under load)', async (t) => {
  // Beats that take their time, as under load: each waits, then writes.
  class SlowBeats extends ForgetTombstones {
    readonly beats: Promise<unknown>[] = []
    override beat(header: Parameters<ForgetTombstones['beat']>[0], rev: number): Promise<number> {
      const p = new Promise((r) => setTimeout(r, 150)).then(() => super.beat(header, rev))
      this.beats.push(p)
      return p
    }
  }
  const slow = new SlowBeats(h.kvm, h.names.forgetBucket)
  const u7 = await search(b, 'user_id=u7')
  t.ok(u7.length > 0)
  t.equal((await ref.app.inject({ method: 'DELETE', url: '/events?user_id=u7', headers: adminHeaders })).statusCode, 200)
  await ghost('del_ghostbeat', u7)
  const registry = new DeleteRegistry(() => Date.now())
  const forget = new ClusterForget({ h, tombstones: slow, node: 'tester', log: silentLog, lastSeq: async () => (await h.jsm.streams.info(h.names.stream)).state.last_seq, matchTimeoutMs: 10_000, applyTimeoutMs: 10_000, applyDeadlineMs: 20_000, staleMs: 1000, beatMs: 1, registry })
  await forget.janitor(1_000)
  await forget.janitor(10_000)
  t.match(registry.list('default')[0], { id: 'del_ghostbeat', state: 'done' })
  t.ok(slow.beats.length > 0, `the header was beaten while the delete ran (${slow.beats.length} beats)`)
  await Promise.allSettled(slow.beats)
  t.same(await bucketKeys(), [], 'every beat has landed or failed, and no header is back')
  t.same(await tombstones.pendingFor(partitionOf('default', u7[0]!.model, 4)), [], 'nothing pending')
  await sameAsRef(t, [b], 'after the slow-beat delete')
  forget.stop()
})

t.test('tombstones: a beat is compare-and-set; a header whose chunks are gone is not pending', async (t) => {
  const seqsOf = new Map([[1, [101, 102]]])
  const { header, rev } = await tombstones.write({ id: 'del_cas', project: 'default', node: 'ghost', started_at: Date.now(), up_to: 102, fh: 'x' }, seqsOf)
  const rev2 = await tombstones.beat(header, rev)
  t.ok(rev2 > rev, 'a beat at the current revision moves it')
  await t.rejects(tombstones.beat(header, rev), 'a beat at an old revision is refused')
  t.same((await tombstones.pendingFor(1)).map((f) => f.seqs), [[101, 102]])
  // The chunks go (as remove() does after the header), the header stays: it is a completed delete.
  const kv = await h.kvm.open(h.names.forgetBucket)
  for (const k of await bucketKeys()) if (k.startsWith('s.del_cas.')) await kv.delete(k)
  t.same(await tombstones.pendingFor(1), [], 'a header without its chunks is not re-applied (a takeover does not wait on it)')
  await tombstones.remove(header)
  await t.rejects(tombstones.beat(header, rev2), 'a beat after the removal is refused…')
  t.same(await bucketKeys(), [], '…and brings nothing back')
})

t.test('with rows folded by retention, a delete subtracts the folded events: counts and sums exact', async (t) => {
  const env = { LLMSCOPE_RETENTION_EVENTS: '10', LLMSCOPE_SNAPSHOT_INTERVAL_S: '1' }
  const c = await makeApp(t, { env: clusterEnv('c', 'forgetret', env) })
  const ref2 = await makeApp(t, { env })
  await waitFor('c owns every partition', async () => (await owned(c)).length === 4)
  await ingest([c], makeEvents(200, 23), ref2)
  // Read-your-writes: every partition has every event before the snapshots below (which fold rows first).
  t.equal((await c.app.inject({ url: '/analytics/metrics', headers: adminHeaders })).json().total_requests, 200)
  const after = Date.now()
  c.engine.startSnapshots()
  const stats = () => (c.engine.stats() as unknown as { cluster: { partitionStats: Array<{ lastSnapshot: { at: number } | null }> } }).cluster.partitionStats
  await waitFor('a snapshot of every partition begun after the ingest (rows folded)', () => stats().every((s) => s.lastSnapshot !== null && s.lastSnapshot.at > after + 1))
  await ref2.engine.snapshotNow()
  const del = await c.app.inject({ method: 'DELETE', url: '/events?user_id=u3', headers: adminHeaders })
  const want = await ref2.app.inject({ method: 'DELETE', url: '/events?user_id=u3', headers: adminHeaders })
  t.equal(del.statusCode, 200, del.body)
  t.same(del.json(), want.json(), 'the reference\'s count')
  t.ok(del.json().deleted > 10)
  const sums = (m: Record<string, number>) => ({ requests: m.total_requests, tokens: m.total_tokens, prompt: m.prompt_tokens, cost: m.total_cost, errors: m.error_count })
  for (const url of ['/analytics/metrics', '/analytics/metrics?start_time=2026-01-01T00:00:00Z&end_time=2026-01-02T00:00:00Z']) {
    const got = (await c.app.inject({ url, headers: adminHeaders })).json()
    const exp = (await ref2.app.inject({ url, headers: adminHeaders })).json()
    t.same(sums(got), sums(exp), `${url}: counts and sums equal the reference`)
  }
  t.same(await search(c, 'user_id=u3'), [], 'search finds none')
})

t.test('seq chunks, hit merging, bounded work and malformed requests', async (t) => {
  t.same(decodeSeqs(encodeSeqs([1, 2, 10, 1000])), [1, 2, 10, 1000], 'seqs round-trip as deltas')
  t.throws(() => decodeSeqs({}), /must be an array/)
  t.throws(() => decodeSeqs([1, -2]), /non-negative integer/)
  const merged = mergeHits([{ k: [9, 5], s: [3, 8], t: [1, 1] }, { k: [9, 7], s: [4, 2], t: [2, 2] }, { k: [5], s: [8], t: [1] }], 3)
  t.same(merged.map((x) => [x.key, x.seq]), [[9, 4], [9, 3], [7, 2]], 'key desc, seq desc, first limit')
  t.same(mergeHits([{ k: [5], s: [8], t: [1] }, { k: [5], s: [8], t: [1] }], 10).length, 1, 'a seq answered twice is kept once')
  t.throws(() => mergeHits([{ k: [1], s: [] }], 1), /one length/)
  t.same(decodeSearch(searchRequest({ start: 0, end: Infinity, user_id: 'x' }, 'cost', { key: 5, seq: 2 }, Infinity)), { q: { start: 0, end: Infinity, user_id: 'x' }, sort: 'cost', after: { key: 5, seq: 2 }, limit: Infinity })
  t.throws(() => decodeSearch(null), /not an object/)
  t.throws(() => decodeSearch({ sort: 'size' }), /sort must be/)
  t.throws(() => decodeSearch({ sort: 'time', after: { key: 'x', seq: 1 } }), /after must be/)
  t.throws(() => decodeSearch({ sort: 'time', after: null, limit: 0 }), /limit must be/)
  t.same(await readBySeq([3, 1, 3], async (s) => (s === 1 ? undefined : s * 10), 2), [30, undefined, 30], 'in the order asked, the same seq read once')
  await t.rejects(bounded([async () => 1, async () => { throw new Error('boom') }, async () => 3], 2), /boom/, 'a failure rejects the whole')
})
