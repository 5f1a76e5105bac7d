/**
 * The dimension dictionaries in a snapshot: their long arrays are stored as pieces beside the
 * manifest (each encoded in its own slice of the write, so no single encode holds the event
 * loop for a project's 100,000 values), under a fresh generation each write. What it pins: a
 * round trip is exact, the manifest no longer carries the arrays, a write never overwrites the
 * stored manifest's pieces and removes them once its own manifest commits, and a damaged or
 * missing piece makes the snapshot unusable (rebuilt from the log), never half-read.
 */
import t from 'tap'
import { openStores } from '../../src/store/db.js'
import { SnapshotStore, type SnapshotPayload } from '../../src/store/snapshots.js'

/** A project's dictionaries as DimensionDictionary.toJSON makes them, `users` values long. */
function dims(users: number, salt: string) {
  return {
    v: 1,
    users: { values: Array.from({ length: users }, (_, i) => (i % 97 === 5 ? null : `user-${salt}-${i}`)), capped: false },
    sessions: { values: Array.from({ length: Math.floor(users / 2) }, (_, i) => `s-${i}`), capped: true },
    tags: { values: ['a', 'b'], capped: false },
    metaKeys: ['feature'],
    metaKeysCapped: false,
    metaValues: [{ values: ['chat', 'search'], capped: false }],
    sets: Array.from({ length: Math.min(9000, users) }, (_, i) => [0, 2 + (i % 2), 1, 2 + (i % 9)]),
    setsCapped: false
  }
}

const payload = (dimensions: Record<string, unknown>, seq = 10): SnapshotPayload => ({ seq, createdAt: 1, aggregators: [], alerts: { v: 1 }, dimensions })

const dimsKeys = (db: ReturnType<typeof openStores>['meta']) =>
  [...(db.getKeys({}) as Iterable<unknown>)].filter((k): k is [string, number, number] => Array.isArray(k) && k[0] === 'dims')

t.test('dictionaries round-trip exactly, their long arrays beside a small manifest', async (t) => {
  const stores = openStores(t.testdir())
  t.teardown(() => stores.close())
  const want = { default: dims(30_000, 'x'), other: dims(100, 'y') }
  await new SnapshotStore(stores.meta).write(payload(structuredClone(want)))
  const manifest = stores.meta.get('snapshot')!
  t.ok(manifest.length < 100_000, `the manifest holds no long array (${manifest.length} bytes)`)
  t.ok(dimsKeys(stores.meta).length >= 4, 'the long arrays are stored as pieces')
  const r = new SnapshotStore(stores.meta).read()
  t.ok(r.ok)
  if (r.ok) {
    t.same(r.payload.dimensions, want)
    t.equal(r.payload.dimsGen, undefined, 'the generation stays inside the store')
  }
})

t.test('each write takes a fresh generation and removes the previous one at its commit', async (t) => {
  const stores = openStores(t.testdir())
  t.teardown(() => stores.close())
  const snapshots = new SnapshotStore(stores.meta)
  await snapshots.write(payload({ default: dims(20_000, 'a') }))
  const first = new Set(dimsKeys(stores.meta).map((k) => k[1]))
  t.equal(first.size, 1)
  await snapshots.write(payload({ default: dims(25_000, 'b') }, 11))
  const second = new Set(dimsKeys(stores.meta).map((k) => k[1]))
  t.equal(second.size, 1, 'only the new generation is left')
  t.not([...second][0], [...first][0], 'the stored generation was not overwritten')
  const r = new SnapshotStore(stores.meta).read()
  t.ok(r.ok)
  if (r.ok) t.same(r.payload.dimensions, { default: dims(25_000, 'b') })
  // Dictionaries that shrank below a piece: no pieces left at all.
  await snapshots.write(payload({ default: dims(10, 'c') }, 12))
  t.same(dimsKeys(stores.meta), [])
  const small = new SnapshotStore(stores.meta).read()
  t.ok(small.ok && small.payload.seq === 12)
  if (small.ok) t.same(small.payload.dimensions, { default: dims(10, 'c') })
})

t.test('a damaged or missing piece makes the snapshot unusable, naming it', async (t) => {
  const stores = openStores(t.testdir())
  t.teardown(() => stores.close())
  await new SnapshotStore(stores.meta).write(payload({ default: dims(30_000, 'z') }))
  const [key] = dimsKeys(stores.meta)
  const buf = Buffer.from(stores.meta.get(key as unknown as string)!)
  buf[buf.length - 3] ^= 1
  await stores.meta.put(key as unknown as string, buf)
  t.match(new SnapshotStore(stores.meta).read(), { ok: false, reason: /dimension piece .*checksum/ })
  await stores.meta.remove(key as unknown as string)
  t.match(new SnapshotStore(stores.meta).read(), { ok: false, reason: /no snapshot dimension piece/ })
})
