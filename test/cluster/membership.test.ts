/**
 * Node membership and partition leases (src/cluster/membership.ts) against a real nats-server:
 * several Membership instances in this process, each on its own connection, short leases.
 *
 * Every wait is for a condition (polled every 20 ms, bounded); a sampler checks the safety
 * properties the whole time: no partition served by two nodes, at most one alerts holder; and
 * acquire/release intervals are recorded so overlaps between nodes are found even between samples.
 */
import t from 'tap'
import type { Test } from 'tap'
import { connect, type NatsConnection } from '@nats-io/transport-node'
import { Kvm, type KV } from '@nats-io/kv'
import { startNats, type NatsCluster } from '../helpers/nats.js'
import { assignPartitions, hrwScore, Membership } from '../../src/cluster/membership.js'
import { silentLog } from '../../src/log.js'

const LEASE_MS = 2000
const P = 12

t.setTimeout(170_000)

// ── pure assignment ─────────────────────────────────────────────────────────────────────────

t.test('assignPartitions: every partition gets a node, loads differ by one at most, same map whatever the order', async (t) => {
  for (const partitions of [1, 2, 7, 12, 16, 64, 1024]) {
    for (const n of [1, 2, 3, 4, 5, 9]) {
      const nodes = Array.from({ length: n }, (_, i) => `node-${i}`)
      const map = assignPartitions(nodes, partitions)
      t.equal(map.length, partitions)
      const load = new Map(nodes.map((x) => [x, 0]))
      for (const owner of map) {
        if (owner === null) throw new Error('unassigned')
        load.set(owner, load.get(owner)! + 1)
      }
      const loads = [...load.values()]
      if (Math.max(...loads) - Math.min(...loads) > 1) t.fail(`P=${partitions} N=${n}: loads ${loads.join(',')}`)
      t.same(assignPartitions([...nodes].reverse(), partitions), map, `P=${partitions} N=${n}: order does not matter`)
    }
  }
  t.same(assignPartitions([], 3), [null, null, null], 'no nodes: nobody')
  t.same(assignPartitions(['a', 'a', 'b'], 4), assignPartitions(['b', 'a'], 4), 'duplicates ignored')
  t.not(hrwScore('a', 1), hrwScore('a', 2))
  t.not(hrwScore('a', 1), hrwScore('b', 1))
})

t.test('assignPartitions: a node joining or leaving moves few partitions', async (t) => {
  const partitions = 64
  const three = assignPartitions(['a', 'b', 'c'], partitions)
  const four = assignPartitions(['a', 'b', 'c', 'd'], partitions)
  const moved = three.filter((o, p) => four[p] !== o).length
  // The ideal is 16 (d's share); bounded loads add a few cascades, never a reshuffle.
  t.ok(moved >= 16 && moved <= 28, `joining moved ${moved} of ${partitions}`)
  const two = assignPartitions(['a', 'b'], partitions)
  const kept = three.filter((o, p) => o !== 'c' && two[p] !== o).length
  t.ok(kept <= 8, `leaving moved ${kept} partitions that were not c's`)
})

// ── against nats-server ─────────────────────────────────────────────────────────────────────

interface Interval {
  node: string
  p: number
  /** acquire called (the lease is held from before this). */
  start: number
  /** release resolved, or the node crashed (null: still open). */
  end: number | null
}

/** A test bed: one bucket, nodes made on demand, a record of acquire/release, a safety sampler. */
class Bed {
  readonly nodes = new Map<string, Membership>()
  readonly conns: NatsConnection[] = []
  readonly intervals: Interval[] = []
  readonly releases: { node: string; p: number; reason: string; at: number }[] = []
  readonly acquires: { node: string; p: number; at: number }[] = []
  readonly violations: string[] = []
  readonly crashed = new Set<string>()
  readonly stopped = new Set<string>()
  /** acquire throws for these (node:p), once each. */
  readonly failOnce = new Set<string>()
  /** acquire of (node:p) waits for this promise. */
  readonly gates = new Map<string, Promise<void>>()
  /** release throws for these nodes (after its bookkeeping). */
  readonly failRelease = new Set<string>()
  /** Each node's own connection. */
  readonly nc = new Map<string, NatsConnection>()
  #sampler: NodeJS.Timeout | null = null
  kv!: KV

  constructor(
    readonly urls: string[],
    readonly bucket: string
  ) {}

  async init(): Promise<void> {
    const nc = await connect({ servers: this.urls })
    this.conns.push(nc)
    this.kv = await new Kvm(nc).create(this.bucket, { history: 1, ttl: LEASE_MS })
    this.#sampler = setInterval(() => this.sample(), 20)
  }

  running(): Membership[] {
    return [...this.nodes.entries()].filter(([id]) => !this.crashed.has(id) && !this.stopped.has(id)).map(([, m]) => m)
  }

  sample(): void {
    const holders = this.running().filter((m) => m.holdsAlerts())
    if (holders.length > 1) this.violations.push(`alerts held by ${holders.map((m) => m.nodeId).join(', ')}`)
    const seen = new Map<number, string>()
    for (const m of this.nodes.values()) {
      if (this.crashed.has(m.nodeId)) continue
      for (const p of m.owned()) {
        const other = seen.get(p)
        if (other !== undefined) this.violations.push(`partition ${p} served by ${other} and ${m.nodeId}`)
        seen.set(p, m.nodeId)
      }
    }
  }

  async add(id: string): Promise<Membership> {
    const nc = await connect({ servers: this.urls })
    this.conns.push(nc)
    this.nc.set(id, nc)
    const m: Membership = new Membership({
      nc,
      bucket: this.bucket,
      nodeId: id,
      partitions: P,
      leaseMs: LEASE_MS,
      log: silentLog,
      acquire: async (p) => {
        const iv: Interval = { node: id, p, start: performance.now(), end: null }
        this.acquires.push({ node: id, p, at: iv.start })
        // Loading a snapshot takes a moment.
        await new Promise((r) => setTimeout(r, 5 + Math.random() * 20))
        await this.gates.get(`${id}:${p}`)
        if (this.failOnce.delete(`${id}:${p}`)) {
          iv.end = performance.now()
          this.intervals.push(iv)
          throw new Error('snapshot unreadable')
        }
        this.intervals.push(iv)
      },
      release: async (p, reason) => {
        const at = performance.now()
        this.releases.push({ node: id, p, reason, at })
        if (this.crashed.has(id)) this.violations.push(`release(${p}, ${reason}) called on crashed ${id}`)
        // Writing a snapshot takes a moment.
        await new Promise((r) => setTimeout(r, 5 + Math.random() * 20))
        const iv = this.intervals.find((i) => i.node === id && i.p === p && i.end === null)
        if (iv === undefined) this.violations.push(`release(${p}, ${reason}) on ${id} without a served interval`)
        else iv.end = performance.now()
        if (this.failRelease.has(id)) throw new Error('snapshot write failed')
      }
    })
    this.nodes.set(id, m)
    await m.start()
    return m
  }

  async stopNode(id: string): Promise<void> {
    await this.nodes.get(id)!.stop()
    this.stopped.add(id)
  }

  crash(id: string): void {
    this.nodes.get(id)!.crash()
    this.crashed.add(id)
    const now = performance.now()
    for (const iv of this.intervals) if (iv.node === id && iv.end === null) iv.end = now
  }

  /** Partition → the running nodes serving it. */
  served(): Map<number, string[]> {
    const out = new Map<number, string[]>()
    for (const m of this.running()) for (const p of m.owned()) out.set(p, [...(out.get(p) ?? []), m.nodeId])
    return out
  }

  /** Every partition served by exactly one running node, loads ±1, exactly one alerts holder, views agree. */
  balanced(): boolean {
    const run = this.running()
    const served = this.served()
    if (served.size !== P || [...served.values()].some((n) => n.length !== 1)) return false
    const loads = run.map((m) => m.owned().size)
    if (Math.max(...loads) - Math.min(...loads) > 1) return false
    if (run.filter((m) => m.holdsAlerts()).length !== 1) return false
    const ids = run.map((m) => m.nodeId).sort()
    return run.every((m) => {
      if (m.nodes().join() !== ids.join()) return false
      for (const [p, owner] of m.owners()) if (owner !== served.get(p)![0]) return false
      return true
    })
  }

  /** Intervals of one partition on different nodes that overlap. */
  overlaps(): string[] {
    const out: string[] = []
    const now = performance.now()
    for (let i = 0; i < this.intervals.length; i++) {
      for (let j = i + 1; j < this.intervals.length; j++) {
        const a = this.intervals[i]!
        const b = this.intervals[j]!
        if (a.p !== b.p || a.node === b.node) continue
        if (a.start < (b.end ?? now) && b.start < (a.end ?? now)) out.push(`p${a.p}: ${a.node} ${fmt(a)} and ${b.node} ${fmt(b)}`)
      }
    }
    return out
  }

  async close(): Promise<void> {
    if (this.#sampler !== null) clearInterval(this.#sampler)
    await Promise.allSettled(this.running().map((m) => m.stop()))
    await this.kv?.destroy().catch(() => {})
    await Promise.allSettled(this.conns.map((nc) => nc.close()))
  }
}

const fmt = (i: Interval) => `[${i.start.toFixed(0)}, ${i.end?.toFixed(0) ?? 'open'}]`

/** Resolves once `cond()` holds; fails after `ms` with `what`. */
async function waitFor(what: string, cond: () => boolean, ms: number): Promise<number> {
  const t0 = performance.now()
  while (!cond()) {
    if (performance.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for: ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
  return performance.now() - t0
}

let nats: NatsCluster
t.before(async () => {
  nats = await startNats({ servers: 1 })
})
t.teardown(() => nats?.stop())

let bedNo = 0
async function bed(t: Test): Promise<Bed> {
  const b = new Bed(nats.urls, `mtest${++bedNo}-cluster`)
  await b.init()
  t.teardown(() => b.close())
  return b
}

t.test('three nodes: every partition served by one node, ±1, one alerts holder; stop hands over within two lease times', async (t) => {
  const b = await bed(t)
  await Promise.all(['a', 'b', 'c'].map((id) => b.add(id)))
  await waitFor('3 nodes balanced', () => b.balanced(), 4 * LEASE_MS)
  const desired = assignPartitions(['a', 'b', 'c'], P)
  for (const [p, nodes] of b.served()) t.equal(nodes[0], desired[p], `p${p} on its HRW owner`)
  const stats = b.nodes.get('a')!.stats()
  t.same(stats.nodes, ['a', 'b', 'c'])
  t.same(stats.unowned, [])
  t.equal(stats.partitions, P)
  t.equal(stats.lost, 0)

  // Renewals keep leases past the TTL.
  const r0 = stats.renewals
  await waitFor('a renewed twice', () => b.nodes.get('a')!.stats().renewals >= r0 + 2 * stats.owned.length, 2 * LEASE_MS)
  t.ok(b.balanced(), 'still balanced after renewals past one lease')

  // stop(): release(p, 'stop') for each of b's partitions, then the others take them.
  const bOwned = [...b.nodes.get('b')!.owned()]
  const bAlerts = b.nodes.get('b')!.holdsAlerts()
  const stopAt = performance.now()
  await b.stopNode('b')
  await b.nodes.get('b')!.stop() // safe twice
  // Releases before the stop (a rebalance still settling when 'balanced' was first seen) are not the question.
  const rel = b.releases.filter((r) => r.node === 'b' && r.at >= stopAt)
  t.same(rel.map((r) => r.p).sort((x, y) => x - y), bOwned.sort((x, y) => x - y), 'release called for each of b\'s partitions')
  t.ok(rel.every((r) => r.reason === 'stop'), 'with reason stop')
  t.same([...b.nodes.get('b')!.owned()], [], 'b serves nothing')
  t.equal(b.nodes.get('b')!.holdsAlerts(), false)
  const took = await waitFor('a and c balanced', () => b.balanced(), 2 * LEASE_MS)
  t.ok(took <= 2 * LEASE_MS, `taken over in ${took.toFixed(0)} ms`)
  t.comment(`stop → balanced on 2 nodes in ${took.toFixed(0)} ms (alerts was on b: ${bAlerts})`)
  for (const p of bOwned) {
    const next = b.acquires.find((a) => a.p === p && a.node !== 'b' && a.at > stopAt - 1000)
    const mine = rel.find((r) => r.p === p)!
    t.ok(next !== undefined && next.at > mine.at, `p${p}: taken by ${next?.node} after b's release`)
  }
  t.same(b.nodes.get('a')!.nodes(), ['a', 'c'], 'b\'s heartbeat deleted')
  t.same(b.overlaps(), [], 'no partition served by two nodes at once')
  t.same(b.violations, [])
})

t.test('crash: the others take over after the TTL; release never called on the crashed node', async (t) => {
  const b = await bed(t)
  await Promise.all(['a', 'b', 'c'].map((id) => b.add(id)))
  await waitFor('3 nodes balanced', () => b.balanced(), 4 * LEASE_MS)
  // Crash the alerts holder, so the alerts lease moves too.
  const victim = b.running().find((m) => m.holdsAlerts())!.nodeId
  const lost = [...b.nodes.get(victim)!.owned()]
  const crashAt = performance.now()
  b.crash(victim)
  const took = await waitFor('2 nodes balanced after the crash', () => b.balanced(), 3 * LEASE_MS)
  t.ok(took <= 2 * LEASE_MS, `taken over in ${took.toFixed(0)} ms (lease ${LEASE_MS})`)
  t.comment(`crash → balanced on 2 nodes in ${took.toFixed(0)} ms`)
  for (const p of lost) {
    const next = b.acquires.find((a) => a.p === p && a.node !== victim && a.at > crashAt)
    t.ok(next !== undefined, `p${p} acquired by ${next?.node}`)
    // Not before the crashed node's lease could have expired (its last renewal ≥ crash − lease/3).
    t.ok(next!.at - crashAt >= LEASE_MS / 2, `p${p} not taken while the dead lease lived (${(next!.at - crashAt).toFixed(0)} ms)`)
  }
  // Releases before the crash (a rebalance still settling when 'balanced' was first seen) are not the question.
  t.same(b.releases.filter((r) => r.node === victim && r.at >= crashAt), [], 'release never called on the crashed node')
  t.same(b.overlaps(), [], 'no overlap (the crashed node counts as serving until its crash)')
  t.same(b.violations, [])
})

t.test('nodes join one by one: each join rebalances a few at a time to the HRW map, never two owners at once', async (t) => {
  const b = await bed(t)
  await b.add('a')
  await waitFor('a serves everything', () => b.balanced(), 2 * LEASE_MS)
  const members = ['a']
  for (const joiner of ['b', 'c', 'd']) {
    const before = new Map([...b.served()].map(([p, n]) => [p, n[0]!]))
    const joinAt = performance.now()
    await b.add(joiner)
    members.push(joiner)
    const took = await waitFor(`${members.length} nodes balanced`, () => b.balanced(), 4 * LEASE_MS)
    t.comment(`${joiner} joins → balanced on ${members.length} nodes in ${took.toFixed(0)} ms`)
    const desired = assignPartitions(members, P)
    for (const [p, nodes] of b.served()) if (nodes[0] !== desired[p]) t.fail(`p${p} on ${nodes[0]}, its HRW owner is ${desired[p]}`)
    const handovers = b.releases.filter((r) => r.at > joinAt)
    t.ok(handovers.every((r) => r.reason === 'rebalance'), 'released for rebalance')
    const moved = [...before].filter(([p, n]) => desired[p] !== n).map(([p]) => p)
    t.same(handovers.map((r) => r.p).sort((x, y) => x - y), moved.sort((x, y) => x - y), `${joiner}: exactly the partitions whose owner changed moved, once each`)
    // A few at a time: at most 2 released and not yet taken per node, this one included (20 ms
    // of slack: the releasing node sees the new lease on its watch, this record sees the new
    // owner's acquire, on another connection).
    let most = 0
    for (const r of handovers) {
      const earlier = handovers.filter((o) => o !== r && o.node === r.node && o.at <= r.at && !b.acquires.some((a) => a.p === o.p && a.node === joiner && a.at < r.at + 20))
      most = Math.max(most, 1 + earlier.length)
    }
    t.ok(most <= 2, `${joiner}: at most ${most} handovers in flight per node (${handovers.length} in all)`)
  }
  t.same(b.overlaps(), [], 'no partition served by two nodes at once')
  t.same(b.violations, [])
})

t.test('lost lease: another holder written over ours → release(p, "lost") at once; expired key retaken (no delete marker on 2.9)', async (t) => {
  const b = await bed(t)
  let open!: () => void
  b.gates.set('a:7', new Promise<void>((r) => (open = r)))
  const a = await b.add('a')
  await waitFor('a serves everything but p7, whose acquire is under way', () => a.owned().size === P - 1 && a.holdsAlerts() && b.acquires.some((x) => x.p === 7), 2 * LEASE_MS)
  // An intruder overwrites p3 and p7 (as if a's leases had expired and someone took them).
  const t0 = performance.now()
  await b.kv.put('lease.p3', JSON.stringify({ node: 'intruder', at: Date.now() }))
  await b.kv.put('lease.p7', JSON.stringify({ node: 'intruder', at: Date.now() }))
  await waitFor('a lets p3 go', () => !a.owned().has(3) && a.stats().lost === 2, LEASE_MS)
  t.ok(performance.now() - t0 < LEASE_MS / 2, 'at once, from the watch')
  t.same(b.releases.map((r) => [r.p, r.reason]), [[3, 'lost']])
  t.equal(a.owners().get(3), 'intruder')
  t.same(a.stats().unowned, [3, 7], 'a holder without a heartbeat is not an owner')
  // p7 was lost while being acquired: released as lost once its acquire finishes, never served.
  open()
  await waitFor('p7 released as lost', () => b.releases.some((r) => r.p === 7), LEASE_MS)
  t.same(b.releases.map((r) => [r.p, r.reason]), [[3, 'lost'], [7, 'lost']])
  t.notOk(a.owned().has(7))
  // Nobody renews the intruder's keys: they expire (silently on NATS 2.9) and a takes them back.
  await waitFor('a serves p3 and p7 again', () => a.owned().has(3) && a.owned().has(7), 3 * LEASE_MS)
  t.equal(a.owners().get(3), 'a')
  t.same(b.violations, [])
})

t.test('an expired lease is taken a guard period after it is found expired: its holder, late under load, may not have counted it lost yet', async (t) => {
  const b = await bed(t)
  // A holder that never renews: its key expires one lease after the server received it.
  const putAt = performance.now()
  await b.kv.put('lease.p4', JSON.stringify({ node: 'ghost', at: Date.now() }))
  await b.kv.put('node.ghost', JSON.stringify({ node: 'ghost', at: Date.now() }))
  const a = await b.add('a')
  await waitFor('a serves p4 after the ghost\'s lease expired', () => a.owned().has(4), 4 * LEASE_MS)
  const took = b.acquires.find((x) => x.p === 4)!.at - putAt
  // The server expires the key ≥ LEASE_MS after the put was sent; the guard period is lease/10.
  t.ok(took >= LEASE_MS + LEASE_MS / 10, `taken ${took.toFixed(0)} ms after the ghost's last write (≥ ${LEASE_MS + LEASE_MS / 10})`)
  t.same(b.overlaps(), [])
  t.same(b.violations, [])
})

t.test('cut off from NATS: leases lost by the node\'s own clock before the others take them', async (t) => {
  const b = await bed(t)
  await Promise.all(['a', 'b', 'c'].map((id) => b.add(id)))
  await waitFor('3 nodes balanced', () => b.balanced(), 4 * LEASE_MS)
  const victim = b.running().find((m) => m.holdsAlerts())!
  const id = victim.nodeId
  const had = [...victim.owned()]
  b.failRelease.add(id)
  const cutAt = performance.now()
  await b.nc.get(id)!.close()
  await waitFor('the cut-off node serves nothing', () => victim.owned().size === 0 && !victim.holdsAlerts(), 2 * LEASE_MS)
  const gone = performance.now() - cutAt
  t.ok(gone <= LEASE_MS, `lost within the lease (${gone.toFixed(0)} ms)`)
  // Releases before the cut (a rebalance still settling when 'balanced' was first seen) are not the question.
  const after = b.releases.filter((r) => r.node === id && r.at >= cutAt)
  t.same(after.map((r) => r.p).sort((x, y) => x - y), had.sort((x, y) => x - y), 'release called for each')
  t.ok(after.every((r) => r.reason === 'lost'), 'as lost (and a throwing release changes nothing)')
  t.equal(victim.stats().lost, had.length + 1, 'partitions and the alerts lease')
  // The others see its heartbeat and leases expire and share its partitions.
  b.stopped.add(id)
  await waitFor('the 2 others balanced', () => b.balanced(), 3 * LEASE_MS)
  t.same(b.overlaps(), [], 'released before anyone else acquired')
  const gaps = after.map((r) => (b.acquires.find((x) => x.p === r.p && x.node !== id && x.at > cutAt)?.at ?? Infinity) - r.at)
  t.comment(`smallest gap between the cut-off node's release and the next acquire: ${Math.min(...gaps).toFixed(0)} ms`)
  t.same(b.violations, [])
  b.stopped.delete(id)
  await victim.stop()
  b.stopped.add(id)
})

t.test('acquire throws: the lease is given back, release not called, taken again later', async (t) => {
  const b = await bed(t)
  b.failOnce.add('a:5')
  const a = await b.add('a')
  await waitFor('a serves everything but p5', () => a.owned().size === P - 1 && !a.owned().has(5), 2 * LEASE_MS)
  await waitFor('p5 lease deleted', () => a.owners().get(5) === null, LEASE_MS)
  await waitFor('a serves p5 after its backoff', () => a.owned().has(5), 3 * LEASE_MS)
  t.equal(b.acquires.filter((x) => x.p === 5).length, 2, 'acquire called twice for p5')
  t.same(b.releases, [], 'release never called')
  t.same(b.violations, [])
})

t.test('options and lifecycle: bad options throw naming the option; a missing bucket fails start; stop before start is safe', async (t) => {
  const nc = await connect({ servers: nats.urls })
  t.teardown(() => nc.close())
  const base = { nc, bucket: 'nope-cluster', nodeId: 'a', partitions: 4, leaseMs: 2000, log: silentLog, acquire: async () => {}, release: async () => {} }
  t.throws(() => new Membership({ ...base, nodeId: 'a.b' }), /nodeId/)
  t.throws(() => new Membership({ ...base, partitions: 0 }), /partitions/)
  t.throws(() => new Membership({ ...base, leaseMs: 10 }), /leaseMs/)
  const m = new Membership(base)
  await t.rejects(m.start(), /nope-cluster/)
  await m.stop()
  const idle = new Membership(base)
  await idle.stop()
  await idle.stop()
  t.same(idle.nodes(), [])
  t.equal(idle.holdsAlerts(), false)
  await t.rejects(idle.start(), /already stopped/)

  // Stopped while starting: start settles, nothing is taken, no heartbeat is left behind.
  const kv = await new Kvm(nc).create('early-cluster', { history: 1, ttl: LEASE_MS })
  t.teardown(() => kv.destroy().catch(() => {}))
  let acquired = 0
  const early = new Membership({ ...base, bucket: 'early-cluster', acquire: async () => void acquired++ })
  const starting = early.start()
  await early.stop()
  await starting
  t.equal(acquired, 0, 'nothing acquired')
  t.not((await kv.get('node.a'))?.operation, 'PUT', 'heartbeat deleted')
  t.same(early.nodes(), [])
  t.same(early.stats().owned, [])
})
