/**
 * Topology.sync: read-your-writes with an O(1) idle check (a count of 'events' messages not yet
 * applied by their aggregator or rollup). Pins: every acknowledged event is counted by the
 * query that follows, whether ingest is idle or still flowing; a project deleted with messages
 * still queued (its readers drop them) does not leave sync waiting or wrong afterwards.
 */
import t from 'tap'
import { metrics } from '../../src/queries.js'
import { events, topology } from './topology-helpers.js'

const count = (topo: Parameters<typeof metrics>[0], project = 'default') => metrics(topo, { start: -Infinity, end: Infinity, project }).totals.requests

t.test('each query after an acknowledged ingest counts it, ingest idle or still flowing', async (t) => {
  const { topo } = await topology(t)
  let acked = 0
  const inflight: Array<Promise<unknown>> = []
  for (let round = 0; round < 20; round++) {
    const batch = events(150, 100 + round)
    await topo.router.ingest(batch)
    acked += batch.length
    // More in flight while we read: sync waits for what was acknowledged, not for these.
    inflight.push(topo.router.ingest(events(50, 500 + round)))
    await topo.sync()
    const seen = count(topo)
    t.ok(seen >= acked, `round ${round}: ${seen} counted, ${acked} acknowledged before the query`)
  }
  await Promise.all(inflight)
  await topo.sync()
  t.equal(count(topo), acked + 20 * 50, 'everything, once all is acknowledged')
  t.end()
})

t.test('a project deleted with events still queued leaves sync exact and quick', async (t) => {
  const { topo } = await topology(t)
  await topo.router.ingest(events(400, 7, 'gone'))
  // Not synced: the project's readers may still hold events messages when they are retired.
  const pending = topo.router.ingest(events(400, 8, 'gone'))
  await pending
  await topo.deleteProject('gone')
  await topo.sync()
  await topo.sync()
  const kept = events(300, 9, 'kept')
  await topo.router.ingest(kept)
  await topo.sync()
  t.equal(count(topo, 'kept'), kept.length, 'a later project is read exactly')
  t.equal(count(topo, 'gone'), 0, 'the deleted project holds nothing')
  t.end()
})
