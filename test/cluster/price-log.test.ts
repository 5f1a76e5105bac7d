/**
 * The cluster price book's records (src/cluster/price-log.ts) in the meta bucket: nodes writing
 * at once get distinct, gap-free positions (a create of `price.<pos>` is the compare-and-set);
 * every node applies every record in position order, whatever order the writes landed in; a write
 * resolves once its own node applied it; a node started later loads them all; waitPos waits for a
 * position and answers 503 when it does not come.
 */
import t from 'tap'
import type { Test } from 'tap'
import { connect } from '@nats-io/transport-node'
import { Kvm } from '@nats-io/kv'
import { startNats } from '../helpers/nats.js'
import { openStores } from '../../src/store/db.js'
import { ProjectStore } from '../../src/store/projects.js'
import { ApiKeyStore } from '../../src/store/api-keys.js'
import { RuleStore } from '../../src/store/rules.js'
import { AlertEventStore } from '../../src/store/alert-events.js'
import { ClusterMeta } from '../../src/cluster/meta.js'
import { ClusterPriceLog, PRICE_PREFIX, type BookRecord } from '../../src/cluster/price-log.js'
import { silentLog } from '../../src/log.js'

t.setTimeout(120_000)

const nats = await startNats({ servers: 1 })
t.teardown(() => nats.stop())
const setup = await connect({ servers: nats.urls[0]! })
const kvm = new Kvm(setup)
await kvm.create('pl-meta', { history: 1 })
await kvm.create('pl-alerts', { history: 1 })
t.teardown(() => setup.close())

async function node(t: Test) {
  const nc = await connect({ servers: nats.urls[0]! })
  const stores = openStores(t.testdir())
  const prices = new ClusterPriceLog({ log: silentLog })
  const seen: BookRecord[] = []
  const meta = new ClusterMeta({ nc, metaBucket: 'pl-meta', alertsBucket: 'pl-alerts', log: silentLog })
  await meta.attach({ projects: new ProjectStore(stores.projects, 0), apiKeys: new ApiKeyStore(stores.apiKeys), rules: new RuleStore(stores.rules), alertEvents: new AlertEventStore(stores.alertEvents), more: [{ prefix: PRICE_PREFIX, store: prices }] })
  prices.onRecord((r) => seen.push(r))
  t.teardown(async () => {
    prices.stop()
    await meta.stop()
    await stores.close()
    await nc.close()
  })
  return { prices, seen, meta }
}

const version = (pos: number, model: string): BookRecord => ({ pos, op: 'put', id: `pv_${model}`, value: { v: 1, kind: 'version', id: `pv_${model}`, project: 'default', provider: 'openai', model, rev: pos, rates: { input: 1, output: 2, cached_input: 1, cache_write: 1, reasoning: 2 }, effective_from: 0, created_at: 0 } })

t.test('concurrent appends: distinct positions, no gaps, same order everywhere', async (t) => {
  const a = await node(t)
  const b = await node(t)
  const writes = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : b).prices.append((rev) => version(rev, `m${i}`))))
  const revs = writes.map((r) => r.pos).sort((x, y) => x - y)
  t.same(revs, Array.from({ length: 20 }, (_, i) => i + 1), 'positions 1..20, each once')
  // Each write resolved once its node applied it.
  for (let i = 0; i < 20; i++) t.ok((i % 2 === 0 ? a : b).prices.pos >= writes[i]!.pos, `write ${i} applied on its node`)
  await a.prices.waitPos(20)
  await b.prices.waitPos(20)
  t.same(a.seen.map((r) => r.pos), revs, 'applied in position order')
  t.same(b.seen, a.seen, 'both nodes applied the same records in the same order')
  t.same(new Set(a.seen.map((r) => ((r as { value: { model: string } }).value.model))).size, 20)

  const drop = await b.prices.append((pos) => ({ pos, op: 'remove', id: 'pv_m3' }))
  t.equal(drop.pos, 21)
  await a.prices.waitPos(21)
  t.same(a.seen.at(-1), drop)

  t.test('a node started later loads every record', async (t) => {
    const c = await node(t)
    t.equal(c.prices.pos, 21)
    t.same(c.prices.records(), a.prices.records())
  })

  t.test('waitPos answers 503 when the position does not come', async (t) => {
    await t.rejects(a.prices.waitPos(1000, 100), { statusCode: 503, code: 'LLMS_ERR_UNAVAILABLE' })
  })
})

t.test('out-of-order and malformed records', async (t) => {
  const log = new ClusterPriceLog({ log: silentLog })
  const got: number[] = []
  log.onRecord((r) => got.push(r.pos))
  log.applyRemote('2', version(2, 'b'))
  t.equal(log.pos, 0, 'position 2 waits for 1')
  const w = log.waitPos(2, 5_000)
  log.applyRemote('1', version(1, 'a'))
  await w
  t.same(got, [1, 2])
  log.applyRemote('1', version(1, 'a'))
  t.same(got, [1, 2], 'a record seen twice is applied once')
  log.applyRemote('3', { op: 'nope', pos: 3, id: 'x' })
  log.applyRemote('4', version(5, 'x'))
  log.applyRemote('x', version(3, 'x'))
  t.equal(log.pos, 2, 'unreadable records are never applied')
  await t.rejects(log.append((rev) => version(rev, 'z')), /no backing/)
})
