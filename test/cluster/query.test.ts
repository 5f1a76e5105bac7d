/**
 * QueryResponder and askPartition (src/cluster/query.ts) on a real nats-server: an answer split
 * in chunks arrives whole; a partition nobody serves is a quick 503; a partition let go while
 * a query waits on it answers 503 "being handed over" at once, never silence that leaves the
 * coordinator waiting out its timeout.
 */
import t from 'tap'
import { connect } from '@nats-io/transport-node'
import { startNats } from '../helpers/nats.js'
import { clusterNames } from '../../src/cluster/names.js'
import { askPartition, CHUNK_BYTES, QueryResponder } from '../../src/cluster/query.js'
import { silentLog } from '../../src/log.js'

t.setTimeout(120_000)

const TIMEOUT_MS = 10_000

t.test('responder and coordinator', async (t) => {
  const nats = await startNats()
  t.teardown(() => nats.stop())
  const nc = await connect({ servers: nats.urls })
  t.teardown(() => nc.close())
  const names = clusterNames('qt')

  let held = null as (() => void) | null
  const responder = new QueryResponder({
    nc,
    names,
    node: 'n1',
    log: silentLog,
    handle: async (p, r) => {
      const req = r.req as { kind: string }
      if (req.kind === 'hold') await new Promise<void>((resolve) => (held = resolve))
      if (req.kind === 'big') return { p, text: 'x'.repeat(CHUNK_BYTES * 2 + 17) }
      return { p, upTo: r.upTo }
    }
  })
  t.teardown(() => responder.close())

  responder.serve(1)
  t.same(responder.serving, [1])
  t.same(await askPartition(nc, names, 1, { upTo: 7, req: { kind: 'plain' } }, TIMEOUT_MS), { p: 1, upTo: 7 }, 'a plain answer')
  const big = (await askPartition(nc, names, 1, { upTo: 0, req: { kind: 'big' } }, TIMEOUT_MS)) as { text: string }
  t.equal(big.text.length, CHUNK_BYTES * 2 + 17, 'an answer in three chunks arrives whole')

  let started = Date.now()
  await t.rejects(askPartition(nc, names, 2, { upTo: 0, req: { kind: 'plain' } }, TIMEOUT_MS), { code: 'LLMS_ERR_UNAVAILABLE', message: /partition 2 has no live owner/ }, 'nobody serves partition 2: 503')
  t.ok(Date.now() - started < TIMEOUT_MS / 2, `at once, not after the timeout (${Date.now() - started} ms)`)

  // Let go while a query waits on it: a 503 naming the partition, at once.
  started = Date.now()
  const asked = askPartition(nc, names, 1, { upTo: 0, req: { kind: 'hold' } }, TIMEOUT_MS)
  const settled = asked.then(
    () => 'answered',
    (err: Error & { code?: string }) => `${err.code}: ${err.message}`
  )
  while (held === null) await new Promise((r) => setTimeout(r, 10))
  await responder.unserve(1)
  t.same(responder.serving, [], 'no longer serving')
  held!()
  const outcome = await settled
  t.match(outcome, /^LLMS_ERR_UNAVAILABLE: partition 1 is being handed over/, 'the query in flight gets a 503 naming the partition')
  t.ok(Date.now() - started < TIMEOUT_MS / 2, `at once, not after the timeout (${Date.now() - started} ms)`)
  await responder.unserve(1)
  t.pass('unserve twice is harmless')
})
