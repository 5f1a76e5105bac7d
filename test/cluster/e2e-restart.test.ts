/**
 * A node restarted from an empty data dir catches up from the object-store snapshot, not from
 * the start of the stream (DESIGN §9, issue 12 Deliver 5). 3 nats-server (R3) and one LLMScope
 * node that owns every partition and snapshots every second: once every partition holding events
 * has a snapshot in `${name}-snapshots` written after the last acknowledgement, the node is
 * killed (-9), its data dir emptied, and it starts again. Its /ready says `restored_from:
 * "snapshot"`, and it answers exactly what it answered before, including events acknowledged
 * after the snapshot (from the stream tail).
 */
import t from 'tap'
import { FILE_TIMEOUT_MS } from '../helpers/server.js'
import { get, post, startCluster, until } from '../helpers/cluster.js'
import { partitionOf } from '../../src/cluster/names.js'

t.setTimeout(FILE_TIMEOUT_MS)

const RANGE = 'start_time=2026-11-05T00:00:00Z&end_time=2026-11-06T00:00:00Z'
const QUERIES = [`/analytics/metrics?${RANGE}`, `/analytics/costs?${RANGE}`, `/analytics/timeseries?interval=1h&${RANGE}`, `/analytics/breakdown?by=user_id&${RANGE}`]
const MODELS = Array.from({ length: 10 }, (_, i) => `m${i}`)

function batch(n: number, offset: number) {
  return Array.from({ length: n }, (_, k) => {
    const i = offset + k
    return {
      timestamp: new Date(Date.parse('2026-11-05T00:00:00Z') + i * 60_013).toISOString(),
      model: MODELS[i % MODELS.length],
      prompt_tokens: 10 + (i % 90),
      completion_tokens: i % 7,
      latency_ms: 20 + ((i * 37) % 900),
      user_id: `u${i % 5}`
    }
  })
}

t.test('a node restarted from an empty data dir restores from the object-store snapshot, then the stream tail', async (t) => {
  const cluster = await startCluster({ nats: 3, nodes: 1, leaseS: 3, partitions: 8, env: { LLMSCOPE_SNAPSHOT_INTERVAL_S: '1' } })
  t.teardown(() => cluster.stop())
  const url = cluster.url(0)

  let sent = 0
  for (let b = 0; b < 10; b++) {
    const r = await post(url, '/events/batch', batch(100, sent))
    t.equal(r.status, 202, `batch ${b}: 202`)
    sent += 100
  }
  const lastAck = Date.now()
  const partitionsWithEvents = [...new Set(MODELS.map((m) => partitionOf('default', m, cluster.partitions)))]

  // Every partition with events has a snapshot written after the last acknowledgement.
  await until(async () => {
    const times = await cluster.snapshotTimes()
    return partitionsWithEvents.every((p) => (times.get(p) ?? 0) > lastAck)
  }, `snapshots of partitions ${partitionsWithEvents.join(',')} in the object store`)

  // A few more events after the snapshot: the new owner must read them from the stream tail.
  t.equal((await post(url, '/events/batch', batch(37, sent))).status, 202, 'events after the snapshot: 202')
  sent += 37

  const before = await Promise.all(QUERIES.map((q) => get(url, q)))
  t.equal(before[0]!.body.total_requests, sent, `before: every one of the ${sent} events counted`)

  await cluster.restartNode(0, { emptyDataDir: true })
  const owners = await cluster.waitAllOwned()
  const ready = owners.get(0)!
  t.equal(ready.restored_from, 'snapshot', `/ready after the restart: restored_from "snapshot" (${JSON.stringify(ready)})`)
  await until(async () => (await cluster.ready(0)).body?.cluster?.lag === 0, 'lag 0 behind the stream')

  const url2 = cluster.url(0)
  for (let k = 0; k < QUERIES.length; k++) {
    const got = await get(url2, QUERIES[k]!)
    t.equal(got.status, 200, `after: ${QUERIES[k]}`)
    t.strictSame(got.body, before[k]!.body, `after the restart from an empty data dir: ${QUERIES[k]} unchanged`)
  }
})
