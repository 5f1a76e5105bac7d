/**
 * cluster/kv-leader.ts on a three-server NATS cluster and an R3 bucket: the listing is the
 * leader's subject list (delete markers included, told apart by a leader read), a read returns
 * the revision a compare-and-set expects, a purge leaves no marker, and a compare-and-set on a
 * purged key fails. Asked through each of the three servers, the answers are the same.
 */
import t from 'tap'
import { connect, type NatsConnection } from '@nats-io/transport-node'
import { Kvm } from '@nats-io/kv'
import { StorageType } from '@nats-io/jetstream'
import { startNats } from '../helpers/nats.js'
import { leaderGet, leaderKeys, liveKeys, purgeKeys } from '../../src/cluster/kv-leader.js'

t.setTimeout(180_000)

const nats = await startNats({ servers: 3 })
t.teardown(() => nats.stop())

const conns: NatsConnection[] = []
for (const url of nats.urls) conns.push(await connect({ servers: url, timeout: 10_000 }))
t.teardown(() => Promise.all(conns.map((c) => c.close())))

t.test('listing, reading and purging through the leader', async (t) => {
  const kv = await new Kvm(conns[0]!).create('kvleader', { history: 1, replicas: 3, storage: StorageType.File })
  const revA = await kv.put('d.a', JSON.stringify({ n: 1 }))
  await kv.put('d.b', JSON.stringify({ n: 2 }))
  await kv.put('s.a.0.0', JSON.stringify({ d: [1] }))
  await kv.put('s.a.1.0', JSON.stringify({ d: [2] }))
  await kv.put('s.z.0.0', JSON.stringify({ d: [3] }))
  await kv.delete('d.b')

  for (const [i, nc] of conns.entries()) {
    const view = await new Kvm(nc).open('kvleader')
    t.same((await leaderKeys(view, 'd.*')).sort(), ['d.a', 'd.b'], `server ${i}: the leader lists both header keys (one holds a delete marker)`)
    t.same(await liveKeys(view), ['d.a', 's.a.0.0', 's.a.1.0', 's.z.0.0'], `server ${i}: the live keys leave the marker out`)
    t.equal(await leaderGet(view, 'd.b'), null, `server ${i}: a marker reads as nothing`)
    t.equal(await leaderGet(view, 'd.nothing'), null, `server ${i}: a key never written reads as nothing`)
    const a = await leaderGet(view, 'd.a')
    t.equal(a?.revision, revA, `server ${i}: the revision of the put`)
    t.same(a?.json(), { n: 1 }, `server ${i}: the value`)
  }

  t.equal(await purgeKeys(kv, 's.a.>'), 2, 'purging a chunk set removes its two messages')
  t.equal(await purgeKeys(kv, 'd.b'), 1, 'purging a deleted key removes its marker')
  t.same((await leaderKeys(kv, '>')).sort(), ['d.a', 's.z.0.0'], 'nothing of them is listed any more')
  t.equal(await purgeKeys(kv, 's.a.>'), 0, 'purging again removes nothing')

  const revA2 = await kv.update('d.a', JSON.stringify({ n: 3 }), revA)
  t.ok(revA2 > revA, 'a compare-and-set at the leader-read revision succeeds')
  await purgeKeys(kv, 'd.a')
  await t.rejects(kv.update('d.a', JSON.stringify({ n: 4 }), revA2), 'a compare-and-set on a purged key fails')
  t.equal(await leaderGet(kv, 'd.a'), null, 'and the key stays gone')
  t.same(await liveKeys(kv), ['s.z.0.0'], 'only the untouched key is left')
})
