/**
 * kill -9 of an LLMScope node under load (DESIGN §9, issue 12 Deliver 5): 3 nats-server (R3)
 * and 3 nodes; a load loop ingests through two of them while the third is killed. The survivors
 * keep answering 202 (ingestion does not wait for partition owners), own every partition again
 * within two lease times, and then count exactly the acknowledged events. A query during the
 * takeover — and during the rebalance when the node comes back — is exact or a 503 naming a
 * partition, never a partial figure.
 */
import t, { type Test } from 'tap'
import { FILE_TIMEOUT_MS } from '../helpers/server.js'
import { count, get, startCluster, startLoad, until, type Cluster, type LoadLoop } from '../helpers/cluster.js'

t.setTimeout(FILE_TIMEOUT_MS)

const LEASE_S = 3
/** Slack on top of two lease times for polling /ready and a busy 2-core machine. */
const SLACK_MS = 2000
const RANGE = 'start_time=2026-11-05T00:00:00Z&end_time=2026-11-06T00:00:00Z'

interface Probe {
  ok: number
  unavailable: number
  bad: string[]
  /** The longest a query took to answer (200 or 503), and its answer. */
  slowestMs: number
  slowest: string
}

/**
 * Asks `/analytics/metrics` of the nodes `urls()` in a loop until `done()`: each answer must be
 * a 200 counting at least every event acknowledged before it was asked and at most every event
 * sent by the time it came back, or a 503 LLMS_ERR_UNAVAILABLE naming a partition.
 */
async function probe(urls: () => string[], bounds: { acked: () => number; sent: () => number }, done: () => boolean): Promise<Probe> {
  const p: Probe = { ok: 0, unavailable: 0, bad: [], slowestMs: 0, slowest: '' }
  let k = 0
  while (!done()) {
    const list = urls()
    const url = list[k++ % list.length]!
    const before = bounds.acked()
    let r: { status: number; body: any }
    const asked = Date.now()
    try {
      r = await get(url, `/analytics/metrics?${RANGE}`)
    } catch (err) {
      p.bad.push(`${url}: no answer (${(err as Error).message})`)
      continue
    }
    if (Date.now() - asked > p.slowestMs) {
      p.slowestMs = Date.now() - asked
      p.slowest = `${r.status} ${String(r.body?.message ?? '').slice(0, 300)}`
    }
    const after = bounds.sent()
    if (r.status === 200) {
      if (r.body.total_requests < before || r.body.total_requests > after) p.bad.push(`${url}: 200 with ${r.body.total_requests} requests, not within [${before}, ${after}]`)
      else p.ok++
    } else if (r.status === 503 && r.body?.code === 'LLMS_ERR_UNAVAILABLE' && /partition/i.test(String(r.body?.message)) && /\d/.test(String(r.body?.message))) {
      p.unavailable++
    } else {
      p.bad.push(`${url}: ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`)
    }
  }
  return p
}

/** Every survivor counts exactly the acknowledged events, tokens included. */
async function checkExact(t: Test, cluster: Cluster, load: LoadLoop, what: string) {
  for (const i of cluster.live()) {
    let r = await get(cluster.url(i), `/analytics/metrics?${RANGE}`)
    // Ownership is settled (waitAllOwned), but allow a partition's owner a moment to start answering.
    await until(async () => (r = await get(cluster.url(i), `/analytics/metrics?${RANGE}`)).status === 200, `node ${i} to answer 200`, 30_000).catch(() => {})
    if (r.status !== 200) t.comment(`node ${i} /ready: ${JSON.stringify((await cluster.ready(i)).body)}\nits warnings and errors:\n${cluster.problems(i).join('\n')}`)
    t.equal(r.status, 200, `${what}: node ${i} answers 200 (${r.status} ${JSON.stringify(r.body).slice(0, 300)})`)
    t.equal(r.body.total_requests, load.stats.acked.length, `${what}: node ${i} counts exactly the ${load.stats.acked.length} acknowledged events`)
    t.equal(r.body.prompt_tokens, load.stats.ackedTokens, `${what}: node ${i} sums exactly their prompt tokens`)
  }
}

t.test('kill -9 of a node under load: no acknowledged event lost, partitions owned again within two lease times, answers exact', async (t) => {
  const cluster = await startCluster({ nats: 3, nodes: 3, leaseS: LEASE_S, partitions: 8, env: { LLMSCOPE_SNAPSHOT_INTERVAL_S: '2' } })
  t.teardown(() => cluster.stop())
  const before = await cluster.waitAllOwned()
  const victimOwned = count(before.get(0)!.owned)
  t.ok(victimOwned > 0, `the node to be killed owns partitions (${JSON.stringify(before.get(0)!.owned)})`)

  const survivors = () => [cluster.url(1), cluster.url(2)]
  const load = startLoad({ urls: survivors, clients: 4, batch: 10, models: 12 })
  t.teardown(() => load.stop())
  await until(() => load.stats.acked.length >= 300, '300 acknowledged events before the kill')

  await cluster.killNode(0)
  const killedAt = Date.now()
  let owned = false
  let ownedAt = 0
  const waited: string[] = []
  const [takeover, probes] = await Promise.all([
    cluster.waitAllOwned(undefined, waited).then(
      (m) => {
        owned = true
        ownedAt = Date.now()
        return m
      },
      (err) => {
        owned = true
        throw err
      }
    ),
    probe(survivors, { acked: () => load.stats.acked.length, sent: () => load.sent() }, () => owned)
  ])
  // Measured when waitAllOwned saw it, not after the probe's last query (which may still be waiting on a partition).
  const tookMs = ownedAt - killedAt
  t.comment(`partitions owned again ${tookMs} ms after the kill (lease ${LEASE_S} s); queries meanwhile: ${probes.ok} exact, ${probes.unavailable} 503, slowest ${probes.slowestMs} ms (${probes.slowest}); the probe's last query came back ${Date.now() - ownedAt} ms after that`)
  t.comment(`what the test saw while it waited:\n  ${waited.join('\n  ')}`)
  t.comment(`what the survivors logged since the kill:\n${[1, 2].map((i) => `node ${i}:\n  ${cluster.timeline(i, killedAt).join('\n  ')}`).join('\n')}`)
  t.ok(tookMs <= 2 * LEASE_S * 1000 + SLACK_MS, `every partition owned again within two lease times (${tookMs} ms)`)
  t.strictSame(probes.bad, [], 'every query during the takeover was exact or a 503 naming a partition')
  t.equal([...takeover.values()].reduce((s, c) => s + count(c.owned), 0), cluster.partitions, 'the two survivors own every partition')

  const atOwned = load.stats.acked.length
  await until(() => load.stats.acked.length >= atOwned + 200, '200 more acknowledged events after the takeover')
  await load.stop()
  t.strictSame([...load.stats.statuses.keys()], [202], `the survivors acknowledged every request (${JSON.stringify([...load.stats.statuses])} ${load.stats.samples.join(' | ')})`)
  await checkExact(t, cluster, load, 'after the takeover')

  // Every acknowledged id answers from a survivor (a sample: each is one request).
  const ids = load.stats.acked
  const missing: string[] = []
  for (let k = 0; k < 50; k++) {
    const id = ids[Math.floor((k * ids.length) / 50)]!
    const r = await get(cluster.url(1 + (k % 2)), `/events/${id}`)
    if (r.status !== 200) missing.push(`${id}: ${r.status}`)
  }
  t.strictSame(missing, [], 'GET /events/:id of 50 acknowledged events spread over the run: all 200')

  // The node comes back (its data dir kept): partitions rebalance; queries meanwhile exact or 503.
  const load2 = startLoad({ urls: survivors, clients: 2, batch: 5, day: '2026-11-05' })
  t.teardown(() => load2.stop())
  let back = false
  const restart = cluster.restartNode(0).then(async () => {
    await cluster.waitAllOwned()
    back = true
  })
  const base = load.stats.acked.length
  const probes2 = await probe(survivors, { acked: () => base + load2.stats.acked.length, sent: () => base + load2.sent() }, () => back)
  await restart
  await load2.stop()
  t.comment(`queries during the rebalance: ${probes2.ok} exact, ${probes2.unavailable} 503`)
  t.strictSame(probes2.bad, [], 'queries during the rebalance: exact or a 503 naming a partition')
  const all = load.stats.acked.length + load2.stats.acked.length
  for (const i of cluster.live()) {
    let r = await get(cluster.url(i), `/analytics/metrics?${RANGE}`)
    await until(async () => (r = await get(cluster.url(i), `/analytics/metrics?${RANGE}`)).status === 200, `node ${i} to answer 200`, 30_000).catch(() => {})
    t.equal(r.body.total_requests, all, `after the rebalance: node ${i} counts all ${all} acknowledged events`)
    t.equal(r.body.prompt_tokens, load.stats.ackedTokens + load2.stats.ackedTokens, `after the rebalance: node ${i} sums their prompt tokens`)
  }
})
