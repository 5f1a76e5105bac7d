/**
 * DELETE /events in cluster mode (DESIGN §7, §9): 3 nats-server (R3 stream) and 2 LLMScope
 * nodes, and a single-node server given the same events and the same deletes. After a delete by
 * user through one node: it answers the single node's `deleted`; every analytics answer from
 * both nodes equals the single node's; GET /events/:id of every deleted event is 404 on both;
 * search and export never list them; their stream messages are gone (read from the stream
 * itself) and no tombstone is left in KV. A second delete runs while the other node is killed
 * (its partitions change owner mid-delete) and completes. A third is a tombstone left in KV as
 * a node that died right after recording it would leave it: the node holding the alerts lease
 * completes it. After the killed node restarts (same data dir, its local snapshot copies from
 * before the deletes), nothing deleted comes back.
 */
import t from 'tap'
import { connect } from '@nats-io/transport-node'
import { jetstreamManager, JetStreamApiError } from '@nats-io/jetstream'
import { Kvm } from '@nats-io/kv'
import { FILE_TIMEOUT_MS, type Server } from '../helpers/server.js'
import { OWNER_KEY, count, get, ownerHeaders, post, startCluster, until, type Cluster, startReference } from '../helpers/cluster.js'
import { seqOfEventId } from '../../src/events.js'
import { partitionOf } from '../../src/cluster/names.js'
import { ForgetTombstones } from '../../src/cluster/tombstones.js'
import { liveKeys } from '../../src/cluster/kv-leader.js'

t.setTimeout(FILE_TIMEOUT_MS)

function rng(seed: number): () => number {
  return () => {
    seed |= 0
    seed = (seed + 0x6d2b79f5) | 0
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

const MODELS = ['gpt-4o', 'gpt-4o-mini', 'gpt-4', 'claude-3-5-sonnet-20241022', 'claude-3-5-haiku-20241022', 'llmscope-test-unpriced']
const START = Date.parse('2026-11-01T00:00:00Z')
const RANGE = 'start_time=2026-11-01T00:00:00Z&end_time=2026-11-04T00:00:00Z'

function makeEvents(n: number): Record<string, unknown>[] {
  const r = rng(4321)
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)]!
  return Array.from({ length: n }, () => {
    const prompt = Math.floor(r() * 3000)
    const e: Record<string, unknown> = {
      timestamp: new Date(START + Math.floor(r() * 2 * 86_400_000)).toISOString(),
      model: pick(MODELS),
      prompt_tokens: prompt,
      completion_tokens: Math.floor(r() * 600),
      latency_ms: r() < 0.5 ? Math.floor(r() * 4000) : Math.round(r() * 40_000) / 10,
      user_id: `u${Math.floor(r() * 8)}`
    }
    if (r() < 0.6) e.session_id = `s${Math.floor(r() * 25)}`
    if (r() < 0.6) e.metadata = { feature: pick(['search', 'chat', 'report']), plan: r() < 0.5 ? 'pro' : 'free' }
    if (r() < 0.3) e.tags = [pick(['prod', 'eval', 'batch'])]
    if (r() < 0.1) e.status = 'error'
    if (r() < 0.2) e.cached_tokens = Math.floor(prompt * r())
    return e
  })
}

const QUERIES = [
  `/analytics/metrics?${RANGE}`,
  `/analytics/metrics?${RANGE}&user_id=u3`,
  `/analytics/metrics?${RANGE}&metadata.feature=search`,
  `/analytics/costs?${RANGE}`,
  `/analytics/timeseries?interval=1h&${RANGE}`,
  '/analytics/timeseries?interval=5m&start_time=2026-11-01T06:00:00Z&end_time=2026-11-01T12:00:00Z&model=gpt-4o',
  `/analytics/breakdown?by=user_id&${RANGE}`,
  `/analytics/breakdown?by=session_id&limit=5&${RANGE}`,
  `/analytics/breakdown?by=model&${RANGE}`,
  `/analytics/breakdown?by=tag&sort=tokens&${RANGE}`,
  `/analytics/breakdown?by=metadata.plan&${RANGE}&status=error`,
  '/analytics/dimensions'
]

function comparable(e: any): string {
  const { id: _id, seq: _seq, received_at: _r, ...rest } = e
  return JSON.stringify(rest)
}

async function ingest(urlOf: (k: number) => string, events: Record<string, unknown>[], size = 50): Promise<string[]> {
  const ids: string[] = []
  for (let k = 0; k * size < events.length; k++) {
    const r = await post(urlOf(k), '/events/batch', events.slice(k * size, (k + 1) * size))
    if (r.status !== 202) throw new Error(`POST /events/batch: ${r.status} ${JSON.stringify(r.body)}`)
    ids.push(...(r.body.event_ids as string[]))
  }
  return ids
}

async function del(url: string, query: string): Promise<{ status: number; body: any }> {
  const r = await fetch(`${url}/events?${query}`, { method: 'DELETE', headers: { 'x-api-key': OWNER_KEY }, signal: AbortSignal.timeout(120_000) })
  const text = await r.text()
  let body: any = text
  try {
    body = JSON.parse(text)
  } catch {}
  return { status: r.status, body }
}

/** Every event of a search, all pages. */
async function searchAll(url: string, query: string): Promise<any[]> {
  const out: any[] = []
  let cursor: string | null = null
  do {
    const r = await get(url, `/events?${query}&limit=1000${cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`}`)
    if (r.status !== 200) throw new Error(`GET /events?${query}: ${r.status} ${JSON.stringify(r.body)}`)
    out.push(...r.body.events)
    cursor = r.body.next_cursor
  } while (cursor !== null)
  return out
}

async function exportLines(url: string, query: string): Promise<any[]> {
  const r = await fetch(`${url}/events?${query}&format=ndjson`, { headers: ownerHeaders(), signal: AbortSignal.timeout(60_000) })
  const text = await r.text()
  if (r.status !== 200) throw new Error(`export: ${r.status} ${text.slice(0, 300)}`)
  return text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l))
}

/** The stream's message count, and which of `seqs` it still holds. */
async function streamHolds(cluster: Cluster, seqs: number[]): Promise<{ messages: number; held: number[] }> {
  const nc = await connect({ servers: cluster.nats.urls, timeout: 5000, reconnect: false })
  try {
    const jsm = await jetstreamManager(nc)
    const info = await jsm.streams.info(cluster.stream)
    const held: number[] = []
    for (const seq of seqs) {
      try {
        const m = await jsm.streams.getMessage(cluster.stream, { seq })
        if (m !== null) held.push(seq)
      } catch (err) {
        if (!(err instanceof JetStreamApiError) || !/no message found/i.test(err.message)) throw err
      }
    }
    return { messages: info.state.messages, held }
  } finally {
    await nc.close()
  }
}

/** Keys left in the tombstone bucket. */
async function tombstoneKeys(cluster: Cluster): Promise<string[]> {
  const nc = await connect({ servers: cluster.nats.urls, timeout: 5000, reconnect: false })
  try {
    return await liveKeys(await new Kvm(nc).open(`${cluster.name}-forget`))
  } finally {
    await nc.close()
  }
}

t.test('a delete by user through one node is exact on every node, gone from the stream, and stays gone', async (t) => {
  const single: Server = await startReference(t)
  const cluster: Cluster = await startCluster({ nats: 3, nodes: 2, env: { LLMSCOPE_SNAPSHOT_INTERVAL_S: '2' } })
  t.teardown(() => cluster.stop())

  const events = makeEvents(600)
  await ingest(() => single.url, events)
  const ids = await ingest((k) => cluster.url(k % 2), events)
  const total = events.length

  /** Every analytics answer, search and export from both nodes equals the single node's, which counts `left` events. */
  const sameAsSingle = async (when: string, left: number) => {
    t.equal((await get(single.url, `/analytics/metrics?${RANGE}`)).body.total_requests, left, `${when}: the single node counts the ${left} events left`)
    for (const q of QUERIES) {
      const want = await get(single.url, q)
      t.equal(want.status, 200, `single ${q}`)
      for (let k = 0; k < 2; k++) {
        const got = await get(cluster.url(k), q)
        t.strictSame(got.body, want.body, `${when}: node ${k} ${q} equals the single node`)
      }
    }
    const want = (await searchAll(single.url, `${RANGE}&sort=cost`)).map(comparable)
    for (let k = 0; k < 2; k++) t.strictSame((await searchAll(cluster.url(k), `${RANGE}&sort=cost`)).map(comparable), want, `${when}: node ${k} search equals the single node`)
    const wantExport = (await exportLines(single.url, RANGE)).map(comparable)
    for (let k = 0; k < 2; k++) t.strictSame((await exportLines(cluster.url(k), RANGE)).map(comparable), wantExport, `${when}: node ${k} export equals the single node`)
  }

  /** The deleted events are in no answer, nor in the stream, nor in KV. */
  const goneEverywhere = async (when: string, deleted: string[], user: string) => {
    for (let k = 0; k < 2; k++) {
      let found = 0
      for (const id of deleted) if ((await get(cluster.url(k), `/events/${id}`)).status !== 404) found++
      t.equal(found, 0, `${when}: node ${k} answers 404 for each of the ${deleted.length} deleted events`)
      t.strictSame(await searchAll(cluster.url(k), `${RANGE}&user_id=${user}`), [], `${when}: node ${k} search by ${user} finds nothing`)
      const listed = new Set((await searchAll(cluster.url(k), RANGE)).map((e) => e.id))
      t.ok(deleted.every((id) => !listed.has(id)), `${when}: node ${k} search lists none of them`)
      const exported = new Set((await exportLines(cluster.url(k), RANGE)).map((e) => e.id))
      t.ok(deleted.every((id) => !exported.has(id)), `${when}: node ${k} export holds none of them`)
    }
    const stream = await streamHolds(cluster, deleted.map((id) => seqOfEventId(id)!))
    t.strictSame(stream.held, [], `${when}: the stream holds none of their messages`)
    t.strictSame(await tombstoneKeys(cluster), [], `${when}: no tombstone left in KV`)
    return stream.messages
  }

  // --- Delete 1: user u3, through node 1, everything in place.
  const u3 = (await searchAll(cluster.url(0), `${RANGE}&user_id=u3`)).map((e) => e.id as string)
  t.ok(u3.length > 30, `u3 has events (${u3.length})`)
  t.ok(u3.every((id) => ids.includes(id)), 'found by their cluster ids')
  const wantDel = await del(single.url, 'user_id=u3')
  t.equal(wantDel.status, 200, 'single: DELETE 200')
  const t0 = Date.now()
  const got = await del(cluster.url(1), 'user_id=u3')
  t.comment(`cluster delete of ${u3.length} events: ${Date.now() - t0} ms`)
  t.equal(got.status, 200, `cluster: DELETE 200 (${JSON.stringify(got.body)})`)
  t.strictSame(got.body, { deleted: u3.length }, 'cluster: deleted = the events the search found')
  t.strictSame(got.body, wantDel.body, 'cluster: the single node\'s answer')
  const deletes = await get(cluster.url(1), '/events/deletes')
  t.match(deletes.body.deletes?.[0], { state: 'done', matched: u3.length, deleted: u3.length }, 'GET /events/deletes on the front node: done, with its counts')
  await sameAsSingle('after delete 1', total - u3.length)
  const left = await goneEverywhere('after delete 1', u3, 'u3')
  t.equal(left, total - u3.length, 'the stream holds every other event')

  // --- Delete 2: user u5, through node 1, while node 0 is killed: its partitions change owner mid-delete.
  const u5 = (await searchAll(cluster.url(1), `${RANGE}&user_id=u5`)).map((e) => e.id as string)
  t.ok(u5.length > 30, `u5 has events (${u5.length})`)
  t.equal((await del(single.url, 'user_id=u5')).status, 200, 'single: DELETE u5')
  const t1 = Date.now()
  const running = del(cluster.url(1), 'user_id=u5')
  await cluster.killNode(0)
  let second = await running
  let attempts = 1
  // Killed before every partition listed its matches: nothing was removed; running it again completes it.
  for (; second.status === 503 && attempts <= 20; attempts++) {
    t.match(second.body.message, /partition/, `a 503 names the partition (${second.body.message})`)
    await new Promise((r) => setTimeout(r, 1000))
    second = await del(cluster.url(1), 'user_id=u5')
  }
  t.comment(`delete of ${u5.length} events across a node kill: ${Date.now() - t1} ms`)
  t.equal(second.status, 200, `DELETE u5 completes (${JSON.stringify(second.body)})`)
  if (attempts === 1) t.equal(second.body.deleted, u5.length, 'it deleted every event of u5, across the owner change')
  else t.ok(second.body.deleted <= u5.length, `after ${attempts} attempts it answers the events that were left (${second.body.deleted})`)

  // --- Delete 3: user u6, recorded in KV by a node that died at once ("ghost"); node 1 holds the alerts lease and completes it.
  await cluster.waitAllOwned()
  const u6Events = await searchAll(cluster.url(1), `${RANGE}&user_id=u6`)
  const u6 = u6Events.map((e) => e.id as string)
  t.ok(u6.length > 30, `u6 has events (${u6.length})`)
  t.equal((await del(single.url, 'user_id=u6')).status, 200, 'single: DELETE u6')
  const bySeq = new Map<number, number[]>()
  for (const e of u6Events) {
    const p = partitionOf('default', e.model, cluster.partitions)
    bySeq.set(p, [...(bySeq.get(p) ?? []), e.seq])
  }
  const t2 = Date.now()
  const nc = await connect({ servers: cluster.nats.urls, timeout: 5000, reconnect: false })
  try {
    await new ForgetTombstones(new Kvm(nc), `${cluster.name}-forget`).write({ id: 'del_ghost0000000001', project: 'default', node: 'ghost', started_at: Date.now(), up_to: Math.max(...u6Events.map((e) => e.seq)), fh: 'test' }, bySeq)
  } finally {
    await nc.close()
  }
  await until(async () => (await tombstoneKeys(cluster)).length === 0, 'the unfinished delete completed by the alerts-lease holder', 90_000)
  t.comment(`a ghost's delete of ${u6.length} events completed by the janitor after ${Date.now() - t2} ms`)
  t.ok(cluster.nodes[1]!.lines().some((l) => /a delete was left unfinished by its node: completing it/.test(l)), 'node 1 logged that it completed the ghost\'s delete')
  t.strictSame(await searchAll(cluster.url(1), `${RANGE}&user_id=u6`), [], 'node 1: u6 finds nothing')

  await cluster.restartNode(0)
  // Balanced again (half the partitions each: the restarted node took its share back from its local copies), caught up.
  await until(async () => {
    const owners = await cluster.waitAllOwned()
    return [0, 1].every((i) => count(owners.get(i)?.owned) === cluster.partitions / 2 && owners.get(i)?.lag === 0)
  }, 'both nodes owning half the partitions, lag 0')
  await sameAsSingle('after deletes 2 and 3 and a restart', total - u3.length - u5.length - u6.length)
  const left2 = await goneEverywhere('after deletes 2 and 3 and a restart', [...u3, ...u5, ...u6], 'u5')
  t.equal(left2, total - u3.length - u5.length - u6.length, 'the stream holds every event not deleted')
  t.strictSame(await searchAll(cluster.url(0), `${RANGE}&user_id=u6`), [], 'node 0: u6 finds nothing')
})
