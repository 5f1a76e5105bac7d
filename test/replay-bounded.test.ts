/**
 * Regression: replay-bounded — a restart that replays the log (no snapshot, or a snapshot it
 * cannot read) keeps only a few chunks in the pipeline. The replay loop reads the log without
 * yielding and waited only while the cost stage's count of pending events was high, but that
 * count grew when the stage took a message from its mailbox, which it cannot do while the loop
 * runs: the whole log went into the mailbox first (at 10M events the process passed the 4 GB
 * heap limit and died), and priced events then piled up in the aggregators' mailboxes as well.
 */
import t from 'tap'
import { Engine } from '../src/engine.js'
import { silentLog } from '../src/log.js'
import { crashedLog, DAY, T0 } from './helpers/crashed-log.js'

const N = 150_000
const BATCH = 1_000
const REPLAY_CHUNK = 8192

t.test('a replay of 150,000 events holds a few chunks at a time, and answers as before', async (t) => {
  const { config, clock, want } = await crashedLog(t.testdir(), N, { batch: BATCH, models: 4 })
  const second = new Engine({ config, logger: silentLog, clock, inlinePricing: true, alertTickMs: 0 })
  t.teardown(() => second.destroy())
  // The most events anywhere in the pipeline, sampled after each chunk the replay hands over
  // (the cost stage's mailbox and queue, and every aggregator's mailbox, in messages).
  let mostPending = 0
  let mostAggregatorDepth = 0
  const stage = second.topology.costStage
  const sample = () => {
    mostPending = Math.max(mostPending, stage.pendingEvents)
    for (const a of second.topology.aggregators()) mostAggregatorDepth = Math.max(mostAggregatorDepth, a.depth)
  }
  const send = stage.send.bind(stage)
  stage.send = (m) => {
    const ok = send(m)
    sample()
    return ok
  }
  const r = await second.recover()
  t.equal(r.replayed, N)
  t.ok(mostPending > 0, 'the sampler saw the replay')
  t.ok(mostPending <= 5 * REPLAY_CHUNK + BATCH, `at most five chunks pending at once (saw ${mostPending} of ${N} events)`)
  t.ok(stage.stats.maxDepth <= 5, `the cost stage's mailbox held at most five messages (held ${stage.stats.maxDepth})`)
  t.ok(mostAggregatorDepth <= 64, `aggregator mailboxes stayed short (longest ${mostAggregatorDepth} messages)`)
  t.same(await second.analytics.metrics({ project: 'default', start: T0, end: T0 + DAY }), want, 'the replayed state answers as before the crash')
})
