/**
 * kill -9 of the JetStream stream leader under load (DESIGN §9, issue 12 Deliver 5): 3
 * nats-server (R3) and 3 LLMScope nodes; a load loop ingests through every node while the
 * nats-server leading the event stream is killed. Some requests may answer 503 during the
 * election (never anything else); ingestion then resumes, and nothing acknowledged is lost:
 * the count is at least every acknowledged event and at most those plus the events of refused
 * requests (a refused batch may have been partly stored), and every acknowledged id answers.
 */
import t from 'tap'
import { FILE_TIMEOUT_MS } from '../helpers/server.js'
import { get, startCluster, startLoad, until } from '../helpers/cluster.js'

t.setTimeout(FILE_TIMEOUT_MS)

const RANGE = 'start_time=2026-11-05T00:00:00Z&end_time=2026-11-06T00:00:00Z'

t.test('kill -9 of the stream leader under load: 503s at most, then ingestion resumes, nothing acknowledged lost', async (t) => {
  const cluster = await startCluster({ nats: 3, nodes: 3, leaseS: 3, partitions: 8 })
  t.teardown(() => cluster.stop())
  const all = () => cluster.live().map((i) => cluster.url(i))

  const load = startLoad({ urls: all, clients: 4, batch: 10, models: 12 })
  t.teardown(() => load.stop())
  await until(() => load.stats.acked.length >= 300, '300 acknowledged events before the kill')

  const leader = await cluster.streamLeader()
  t.ok(leader !== undefined, `the stream has a leader (${leader})`)
  const victim = cluster.nats.servers.find((s) => s.name === leader)!
  await victim.kill('SIGKILL')
  const killedAt = Date.now()
  const atKill = load.stats.acked.length

  // A new leader among the two left, and ingestion going on through it.
  let newLeader: string | undefined
  await until(async () => {
    newLeader = await cluster.streamLeader()
    return newLeader !== undefined && newLeader !== leader
  }, 'a new stream leader')
  await until(() => load.stats.acked.length >= atKill + 300, '300 more acknowledged events after the kill')
  t.comment(`new leader ${newLeader}; 300 events acknowledged ${Date.now() - killedAt} ms after the kill`)
  const stats = await load.stop()
  const statuses = [...stats.statuses.keys()].sort()
  t.ok(statuses.every((s) => s === 202 || s === 503), `only 202 and 503 answers (${JSON.stringify([...stats.statuses])} ${stats.samples.join(' | ')})`)
  t.comment(`answers: ${JSON.stringify([...stats.statuses])}`)

  // Every node counts at least every acknowledged event, at most those plus the refused ones.
  // Queries may answer 503 while partitions' owners catch up after the election: wait (bounded) for 200s.
  await until(async () => (await Promise.all(cluster.live().map((i) => get(cluster.url(i), `/analytics/metrics?${RANGE}`)))).every((r) => r.status === 200), 'every node to answer queries after the election').catch((err: Error) => t.comment(err.message))
  t.comment(`every node answers queries ${Date.now() - killedAt} ms after the kill`)
  for (const i of cluster.live()) {
    const r = await get(cluster.url(i), `/analytics/metrics?${RANGE}`)
    if (r.status !== 200) t.comment(`node ${i} (${cluster.nodeId(i)}) /ready: ${JSON.stringify((await cluster.ready(i)).body)}\nits warnings and errors:\n${cluster.problems(i).join('\n')}`)
    t.equal(r.status, 200, `node ${i} answers 200 (${r.status} ${JSON.stringify(r.body).slice(0, 300)})`)
    t.ok(r.body.total_requests >= stats.acked.length, `node ${i}: ${r.body.total_requests} requests counted, at least the ${stats.acked.length} acknowledged`)
    t.ok(r.body.total_requests <= stats.acked.length + stats.unackedEvents, `node ${i}: at most the acknowledged plus the ${stats.unackedEvents} refused`)
    if (stats.unackedEvents === 0) t.equal(r.body.prompt_tokens, stats.ackedTokens, `node ${i}: exactly the acknowledged prompt tokens`)
  }

  // Caught up, every node says so: /ready's lag comes back to 0 (it is not 0 while a partition's reader is down).
  await until(async () => (await Promise.all(cluster.live().map((i) => cluster.ready(i)))).every((r) => r.body?.cluster?.lag === 0), 'lag 0 on every node').catch((err: Error) => t.comment(err.message))
  for (const i of cluster.live()) t.equal((await cluster.ready(i)).body?.cluster?.lag, 0, `node ${i}: lag 0 once caught up`)
  for (const i of cluster.live()) {
    const lines = cluster.problems(i, 1000).filter((l) => /partition (consumer|fetch)/.test(l))
    if (lines.length > 0) t.comment(`node ${i}: the partition readers' recovery:\n${lines.slice(-6).join('\n')}`)
  }

  // Every acknowledged event answers by id; those acknowledged around the kill all checked.
  const ids = stats.acked
  const around = ids.slice(Math.max(0, atKill - 100), atKill + 200)
  const sample = [...around, ...Array.from({ length: 50 }, (_, k) => ids[Math.floor((k * ids.length) / 50)]!)]
  const missing: string[] = []
  for (let k = 0; k < sample.length; k++) {
    const r = await get(cluster.url(cluster.live()[k % cluster.live().length]!), `/events/${sample[k]}`)
    if (r.status !== 200) missing.push(`${sample[k]}: ${r.status}`)
  }
  t.strictSame(missing, [], `every one of ${sample.length} acknowledged ids (all those around the kill) answers 200`)

  // The killed server comes back and the stream stays writable.
  await victim.restart()
  const again = startLoad({ urls: all, clients: 2, batch: 5 })
  t.teardown(() => again.stop())
  await until(() => again.stats.acked.length >= 50, 'ingestion after the old leader rejoined')
  await again.stop()
})
