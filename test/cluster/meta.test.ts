/**
 * ClusterMeta (src/cluster/meta.ts): nodes of one process, each with its own data dir and its own
 * NATS connection, attached to the same KV buckets, see the same projects, API keys, rules and
 * alert events: a change made on one is applied (and announced to its listeners) on the others;
 * a write resolves once its own node applied it; a project id is unique cluster-wide (a
 * duplicate, even a concurrent one, is a 409); a delete's tombstone travels; alert sequence
 * numbers continue on a new recording node; a node started later with an empty data dir, or
 * restarted on a stale one, mirrors the buckets exactly.
 */
import t from 'tap'
import type { Test } from 'tap'
import { connect, type NatsConnection } from '@nats-io/transport-node'
import { Kvm } from '@nats-io/kv'
import { startNats } from '../helpers/nats.js'
import { openStores, type Stores } from '../../src/store/db.js'
import { ProjectStore, type ProjectChange } from '../../src/store/projects.js'
import { ApiKeyStore } from '../../src/store/api-keys.js'
import { RuleStore, type Rule } from '../../src/store/rules.js'
import { AlertEventStore } from '../../src/store/alert-events.js'
import { ClusterMeta } from '../../src/cluster/meta.js'
import { digest, digestKey } from '../../src/keys.js'
import { silentLog } from '../../src/log.js'
import type { LLMScopeError } from '../../src/errors.js'
import type { AlertTransition } from '../../src/alerts/types.js'

t.setTimeout(120_000)

const T0 = Date.parse('2026-03-01T12:00:00.000Z')
const META = 'mt-meta'
const ALERTS = 'mt-alerts'

interface Node {
  name: string
  nc: NatsConnection
  stores: Stores
  projects: ProjectStore
  apiKeys: ApiKeyStore
  rules: RuleStore
  alertEvents: AlertEventStore
  meta: ClusterMeta
  projectChanges: ProjectChange[]
  ruleLists: Array<readonly Rule[]>
  close(): Promise<void>
}

async function startNode(t: Test, name: string, url: string, dir: string, now = T0): Promise<Node> {
  const nc = await connect({ servers: url })
  const stores = openStores(dir)
  const projects = new ProjectStore(stores.projects, now)
  const apiKeys = new ApiKeyStore(stores.apiKeys)
  const rules = new RuleStore(stores.rules)
  const alertEvents = new AlertEventStore(stores.alertEvents)
  const projectChanges: ProjectChange[] = []
  const ruleLists: Array<readonly Rule[]> = []
  projects.onChange((c) => projectChanges.push(c))
  rules.onChange((l) => ruleLists.push(l))
  const meta = new ClusterMeta({ nc, metaBucket: META, alertsBucket: ALERTS, log: silentLog })
  await meta.attach({ projects, apiKeys, rules, alertEvents })
  let closed = false
  const close = async () => {
    if (closed) return
    closed = true
    await meta.stop()
    await alertEvents.flushed()
    await stores.close()
    await nc.close()
  }
  t.teardown(close)
  return { name, nc, stores, projects, apiKeys, rules, alertEvents, meta, projectChanges, ruleLists, close }
}

/** Resolves once `cond()` holds; fails the wait after `ms`. */
async function waitFor(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

async function rejectsWith(t: Test, p: Promise<unknown>, code: string, status: number, what: string) {
  try {
    await p
    t.fail(`${what}: expected ${code}`)
  } catch (err) {
    const e = err as LLMScopeError
    t.equal(e.code, code, what)
    t.equal(e.statusCode, status, what)
  }
}

function transition(rule: Rule, state: 'firing' | 'resolved', at: number): AlertTransition {
  return { rule, state, reminder: false, reason: 'condition', value: 0.5, samples: 10, since: at, at }
}

t.test('nodes sharing the buckets mirror each other', async (t) => {
  const nats = await startNats({ servers: 1 })
  t.teardown(() => nats.stop())
  const url = nats.urls[0]!
  {
    const nc = await connect({ servers: url })
    const kvm = new Kvm(nc)
    await kvm.create(META, { history: 1 })
    await kvm.create(ALERTS, { history: 1 })
    await nc.close()
  }
  const dirA = t.testdir({ a: {}, b: {}, c: {}, x: {} })
  const a = await startNode(t, 'a', url, `${dirA}/a`, T0)
  const b = await startNode(t, 'b', url, `${dirA}/b`, T0 + 60_000)

  await t.test('a missing bucket fails attach, and the stores stay on their data dir', async (t) => {
    const nc = await connect({ servers: url })
    t.teardown(() => nc.close())
    const stores = openStores(`${dirA}/x`)
    t.teardown(() => stores.close())
    const projects = new ProjectStore(stores.projects, T0)
    const meta = new ClusterMeta({ nc, metaBucket: 'no-such-bucket', alertsBucket: ALERTS, log: silentLog })
    await t.rejects(meta.attach({ projects, apiKeys: new ApiKeyStore(stores.apiKeys), rules: new RuleStore(stores.rules), alertEvents: new AlertEventStore(stores.alertEvents) }))
    await projects.create({ id: 'local-only' }, T0)
    t.ok(projects.exists('local-only'), 'written to LMDB as on a single node')
    await t.rejects(meta.attach({ projects, apiKeys: new ApiKeyStore(stores.apiKeys), rules: new RuleStore(stores.rules), alertEvents: new AlertEventStore(stores.alertEvents) }), /stopped/, 'not twice')
  })

  await t.test('`default` is written once, by the first node, and every node holds that one', async (t) => {
    t.equal(a.projects.get('default')?.created_at, new Date(T0).toISOString())
    t.equal(b.projects.get('default')?.created_at, new Date(T0).toISOString(), 'B took the bucket\'s, not its own')
  })

  await t.test('a project made on A: on A when create resolves, then listed and announced on B; a duplicate on B is a 409', async (t) => {
    const p = await a.projects.create({ id: 'team-x', name: 'Team X' }, T0 + 1000)
    t.same(p, { id: 'team-x', name: 'Team X', created_at: new Date(T0 + 1000).toISOString() })
    t.ok(a.projects.exists('team-x'), 'read-your-writes on A')
    t.same(a.projectChanges.at(-1), { type: 'created', project: p }, 'A announced it (from its watcher)')
    await waitFor(() => b.projects.exists('team-x'), 'team-x on B')
    t.same(b.projects.list().map((x) => x.id), ['default', 'team-x'])
    t.same(b.projectChanges.filter((c) => c.type === 'created').map((c) => (c as { project: { id: string } }).project.id), ['team-x'])
    await rejectsWith(t, b.projects.create({ id: 'team-x' }, T0 + 2000), 'LLMS_ERR_CONFLICT', 409, 'duplicate on B')
  })

  await t.test('the same id created on A and B at once: exactly one wins, the other is a 409, both hold the winner', async (t) => {
    const results = await Promise.allSettled([a.projects.create({ id: 'race', name: 'from A' }, T0 + 3000), b.projects.create({ id: 'race', name: 'from B' }, T0 + 3000)])
    const ok = results.filter((r) => r.status === 'fulfilled')
    const failed = results.filter((r) => r.status === 'rejected')
    t.equal(ok.length, 1, 'one create succeeded')
    t.equal(failed.length, 1, 'one was refused')
    t.equal(((failed[0] as PromiseRejectedResult).reason as LLMScopeError).statusCode, 409)
    const winner = (ok[0] as PromiseFulfilledResult<{ name: string }>).value.name
    await waitFor(() => a.projects.get('race')?.name === winner && b.projects.get('race')?.name === winner, 'both hold the winner')
    t.pass(`winner: ${winner}`)
  })

  await t.test('a key made on A authenticates on B; revoked on B, it is refused on B at once and on A once applied', async (t) => {
    const { key, info } = await a.apiKeys.create({ scope: 'read', project: 'team-x', name: 'reader' }, T0 + 4000)
    const d = digestKey(digest(key))
    t.equal(a.apiKeys.lookup(d)?.id, info.id, 'on A when create resolves')
    await waitFor(() => b.apiKeys.lookup(d) !== undefined, 'key on B')
    t.same(b.apiKeys.lookup(d), { id: info.id, scope: 'read', project: 'team-x', digest: digest(key), source: 'api' })
    t.same(b.apiKeys.get(info.id), info)
    t.equal(b.apiKeys.countIn('team-x'), 1, 'caps count the mirrored keys')
    t.equal(await b.apiKeys.revoke(info.id), true)
    t.equal(b.apiKeys.lookup(d), undefined, 'refused on B at once')
    await waitFor(() => a.apiKeys.lookup(d) === undefined, 'revoked on A')
    t.equal(a.apiKeys.size, 0)
    t.equal(await a.apiKeys.revoke(info.id), false, 'a second revoke finds nothing')
  })

  await t.test('a rule made on A reaches B\'s listeners; a change on B and a delete on A travel back and forth', async (t) => {
    const rule = await a.rules.create({ name: 'cost', condition: 'cost_per_hour', threshold: 5, enabled: true, window_seconds: 300, comparator: 'gt', cooldown_seconds: 60, min_samples: 1 }, T0 + 5000, 'team-x')
    t.same(a.rules.get(rule.id), rule, 'on A when create resolves')
    await waitFor(() => b.ruleLists.some((l) => l.some((r) => r.id === rule.id)), 'B heard the rule')
    t.same(b.rules.get(rule.id), rule)
    t.equal(b.rules.countIn('team-x'), 1)
    const changed = await b.rules.update(rule.id, { threshold: 9 }, T0 + 6000)
    t.equal(changed?.threshold, 9)
    t.equal(b.rules.get(rule.id)?.threshold, 9, 'on B when update resolves')
    await waitFor(() => a.rules.get(rule.id)?.threshold === 9, 'change on A')
    t.equal(await a.rules.remove(rule.id), true)
    t.equal(a.rules.get(rule.id), undefined, 'gone on A when remove resolves')
    await waitFor(() => b.rules.get(rule.id) === undefined, 'gone on B')
    t.same(b.ruleLists.at(-1), [], 'B\'s listeners heard the empty list')
  })

  await t.test('alert events recorded on A are listed on B with their delivery; B continues the sequence', async (t) => {
    const rule = await a.rules.create({ name: 'errors', condition: 'error_rate', threshold: 0.1, enabled: true, window_seconds: 300, comparator: 'gte', cooldown_seconds: 60, min_samples: 1 }, T0 + 7000, 'team-x')
    const r1 = a.alertEvents.record(transition(rule, 'firing', T0 + 8000), 'pending')
    const r2 = a.alertEvents.record(transition(rule, 'resolved', T0 + 9000), 'none')
    t.same([r1.id, r2.id], ['aev_0', 'aev_1'])
    a.alertEvents.setDelivery(r1.id, { status: 'delivered', attempts: 1, status_code: 200, error: null }, T0 + 8500)
    await a.alertEvents.flushed()
    t.equal(a.alertEvents.get(r1.id)?.delivery.status, 'delivered', 'A keeps its newest write (an older echo does not undo it)')
    await waitFor(() => b.alertEvents.get(r1.id)?.delivery.status === 'delivered' && b.alertEvents.size === 2, 'records and delivery on B')
    t.same(b.alertEvents.get(r1.id), a.alertEvents.get(r1.id))
    t.same(b.alertEvents.list({ project: 'team-x', limit: 10 }).map((r) => r.id), ['aev_1', 'aev_0'], 'newest first')
    t.same(b.alertEvents.list({ project: 'default', limit: 10 }), [], 'another project sees none')
    t.same(b.alertEvents.list({ ruleId: rule.id, since: T0 + 9000, limit: 10 }).map((r) => r.id), ['aev_1'])
    t.same(b.alertEvents.latestByRule().get(rule.id), { state: 'resolved', since: T0 + 9000, at: T0 + 9000, value: 0.5 })
    // The evaluating node changes: B catches up with the bucket, then records after A's highest.
    await b.meta.caughtUp()
    const r3 = b.alertEvents.record(transition(rule, 'firing', T0 + 10_000), 'none')
    t.equal(r3.id, 'aev_2', 'the sequence continues on B')
    await waitFor(() => a.alertEvents.get('aev_2') !== undefined, 'B\'s record on A')
    t.same(a.alertEvents.list({ limit: 10 }).map((r) => r.id), ['aev_2', 'aev_1', 'aev_0'])
  })

  await t.test('a project delete: the tombstone reaches B (deleting, then deleted); a re-create on B replaces it', async (t) => {
    const key = await a.apiKeys.create({ scope: 'ingest', project: 'race' }, T0 + 11_000)
    await waitFor(() => b.apiKeys.get(key.info.id) !== undefined, 'key on B')
    const mark = b.projectChanges.length
    await a.projects.beginDelete('race', T0 + 12_000)
    t.notOk(a.projects.exists('race'))
    t.same(a.projects.purging(), ['race'])
    await waitFor(() => b.projects.isPurging('race'), 'tombstone on B')
    t.notOk(b.projects.exists('race'))
    await rejectsWith(t, b.projects.create({ id: 'race' }, T0 + 12_500), 'LLMS_ERR_CONFLICT', 409, 'no create while purging, on B either')
    t.equal(await a.apiKeys.deleteProject('race'), 1)
    await waitFor(() => b.apiKeys.get(key.info.id) === undefined, 'its keys gone on B')
    await a.projects.finishDelete('race')
    t.notOk(a.projects.isPurging('race'))
    await waitFor(() => !b.projects.isPurging('race') && b.projects.isDeleted('race'), 'purge done on B')
    t.same(b.projectChanges.slice(mark), [{ type: 'deleting', id: 'race' }, { type: 'deleted', id: 'race' }])
    const again = await b.projects.create({ id: 'race', name: 'back' }, T0 + 13_000)
    t.equal(again.name, 'back')
    t.notOk(b.projects.isDeleted('race'), 'the tombstone is replaced')
    await waitFor(() => a.projects.get('race')?.name === 'back', 're-created on A')
    t.same(a.projectChanges.at(-1), { type: 'created', project: again })
    await t.rejects(a.projects.beginDelete('default', T0), { code: 'LLMS_ERR_CONFLICT' }, 'default stays undeletable')
  })

  await t.test('a third node started later with an empty data dir sees everything', async (t) => {
    const gone = await a.projects.create({ id: 'gone' }, T0 + 14_000)
    await a.projects.beginDelete(gone.id, T0 + 15_000)
    await a.projects.finishDelete(gone.id)
    const { key } = await a.apiKeys.create({ scope: 'owner', project: null }, T0 + 16_000)
    const c = await startNode(t, 'c', url, `${dirA}/c`, T0 + 3_600_000)
    t.same(c.projects.list(), a.projects.list(), 'the same projects, `default` with its first date')
    t.ok(c.projects.isDeleted('gone'), 'and the tombstones')
    t.same(c.apiKeys.list(), a.apiKeys.list())
    t.equal(c.apiKeys.lookup(digestKey(digest(key)))?.scope, 'owner', 'a key made before it started authenticates')
    t.same(c.rules.list(), a.rules.list())
    t.same(c.ruleLists.at(-1), a.rules.list(), 'its rule listeners heard the loaded rules')
    t.same(c.alertEvents.list({ limit: 100 }), a.alertEvents.list({ limit: 100 }))
    t.equal(c.alertEvents.record(transition(a.rules.list()[0]!, 'resolved', T0 + 17_000), 'none').id, 'aev_3', 'it would continue the sequence')
    await c.alertEvents.flushed()
  })

  await t.test('a node restarted on a stale data dir drops what the cluster removed meanwhile and learns what it made', async (t) => {
    const kept = await b.apiKeys.create({ scope: 'read', project: 'team-x' }, T0 + 18_000)
    await waitFor(() => a.apiKeys.get(kept.info.id) !== undefined, 'key on A')
    await b.close()
    t.equal(await a.apiKeys.revoke(kept.info.id), true)
    await a.projects.create({ id: 'while-down' }, T0 + 19_000)
    const rule = a.rules.list()[0]!
    await a.rules.remove(rule.id)
    // Without their delete markers, the revoked key and the removed rule are simply absent from the buckets.
    t.ok((await a.meta.compact(0)) >= 2, 'delete markers purged')
    const b2 = await startNode(t, 'b2', url, `${dirA}/b`, T0 + 7_200_000)
    t.equal(b2.apiKeys.lookup(digestKey(digest(kept.key))), undefined, 'the key revoked while it was down is refused')
    t.ok(b2.projects.exists('while-down'))
    t.same(b2.projectChanges.filter((c) => c.type === 'created').map((c) => (c as { project: { id: string } }).project.id), ['while-down'], 'announced what is new to its data dir')
    t.equal(b2.rules.get(rule.id), undefined, 'the removed rule is gone')
    t.same(b2.projects.list(), a.projects.list())
    t.same(b2.apiKeys.list(), a.apiKeys.list())

    // A project's purge (the engine's part): its rules and alert events go on every node.
    await a.projects.create({ id: 'doomed' }, T0 + 20_000)
    const r = await a.rules.create({ name: 'latency', condition: 'avg_latency', threshold: 1000, enabled: true, window_seconds: 300, comparator: 'gt', cooldown_seconds: 60, min_samples: 1 }, T0 + 21_000, 'doomed')
    const ev = a.alertEvents.record(transition(r, 'firing', T0 + 22_000), 'none')
    await waitFor(() => b2.rules.countIn('doomed') === 1 && b2.alertEvents.get(ev.id) !== undefined, 'doomed rule and alert event on B')
    t.equal(await a.rules.removeProject('doomed'), 1)
    t.equal(await a.alertEvents.removeRules(new Set([r.id])), 1)
    t.equal(a.rules.countIn('doomed'), 0, 'gone on A when removeProject resolves')
    t.equal(a.alertEvents.get(ev.id), undefined)
    await waitFor(() => b2.rules.countIn('doomed') === 0 && b2.alertEvents.get(ev.id) === undefined, 'gone on B')
    t.same(b2.alertEvents.list({ limit: 100 }), a.alertEvents.list({ limit: 100 }))
  })
})
