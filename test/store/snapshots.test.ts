import t from 'tap'
import { encodeSnapshot, decodeSnapshot, SNAPSHOT_VERSION, PLAIN_VERSION, SHA256_VERSION } from '../../src/store/snapshots.js'

const payload = { seq: 42, createdAt: 7, aggregators: [{ project: 'default', model: 'm', state: { v: 1, cols: new Float64Array([1.5, 2]) } }], alerts: { v: 1 } }

t.test('a snapshot round-trips, typed arrays included', async (t) => {
  const r = decodeSnapshot(encodeSnapshot(payload))
  t.ok(r.ok)
  if (r.ok) {
    t.same(r.payload, payload)
    t.type((r.payload.aggregators[0].state as { cols: unknown }).cols, Float64Array)
  }
})

t.test('damage, foreign bytes and unknown versions are reported, never misread', async (t) => {
  t.same(decodeSnapshot(undefined), { ok: false, reason: 'no snapshot' })
  t.match(decodeSnapshot(Buffer.from('hello world, definitely not a snapshot at all')), { ok: false, reason: /bad magic/ })
  const buf = encodeSnapshot(payload)
  // The CRC, the length word, the payload's first and last bytes.
  for (const at of [8, 12, 16, 40, buf.length - 1]) {
    const bad = Buffer.from(buf)
    bad[at] ^= 1
    t.match(decodeSnapshot(bad), { ok: false, reason: /checksum/ }, `flip at ${at}`)
  }
  t.match(decodeSnapshot(Buffer.concat([buf, Buffer.from([0])])), { ok: false, reason: /checksum/ }, 'a byte too many')
  t.match(decodeSnapshot(buf.subarray(0, buf.length - 1)), { ok: false, reason: /checksum/ }, 'a byte short')
  t.match(decodeSnapshot(encodeSnapshot(payload, SNAPSHOT_VERSION + 1)), { ok: false, reason: /version/ })
  t.match(decodeSnapshot(encodeSnapshot({ ...payload, seq: -0.5 } as typeof payload)), { ok: false, reason: /malformed/ })
  t.match(decodeSnapshot(buf.subarray(0, 20)), { ok: false })
})

t.test('an older-format snapshot is refused by version, whatever its checksum says', async (t) => {
  const older = encodeSnapshot(payload, SHA256_VERSION - 1)
  t.match(decodeSnapshot(older), { ok: false, reason: new RegExp(`version ${SHA256_VERSION - 1} is not ${SNAPSHOT_VERSION}`) })
})

t.test('typed arrays are read as views of the stored bytes, every type, whatever lies before them', async (t) => {
  // Odd-sized strings and arrays before each one: v8's own layout would put most at unaligned offsets.
  const state = {
    a: 'x',
    f64: new Float64Array([1.5, -2, Number.MAX_VALUE]),
    b: 'yyy',
    u8: new Uint8Array([1, 2, 3]),
    u32: new Uint32Array([7, 8, 2 ** 32 - 1]),
    c: [1, 'z'],
    i16: new Int16Array([-1, 300]),
    u16: new Uint16Array([65535]),
    i32: new Int32Array([-5]),
    f32: new Float32Array([0.5]),
    i8: new Int8Array([-128]),
    c8: new Uint8ClampedArray([255]),
    big: new BigInt64Array([-5n]),
    ubig: new BigUint64Array([2n ** 64n - 1n]),
    buf: Buffer.from('bytes'),
    empty: new Float64Array(0),
    // A view into a larger buffer, at an offset: only its own bytes are stored.
    sub: new Float64Array([9, 10, 11, 12]).subarray(1, 3)
  }
  const p = { ...payload, aggregators: [{ project: 'default', model: 'm', state }] }
  // As lmdb-js's get hands it over: a buffer of its own, at offset 0.
  const buf = Buffer.from(encodeSnapshot(p))
  t.equal(buf.readUInt32LE(4), SNAPSHOT_VERSION)
  const r = decodeSnapshot(buf)
  t.ok(r.ok)
  if (!r.ok) return
  const back = r.payload.aggregators[0].state as typeof state
  t.same(back, state)
  for (const [k, v] of Object.entries(back)) {
    if (!ArrayBuffer.isView(v)) continue
    t.equal(v.constructor, (state as Record<string, unknown>)[k]!.constructor, `${k}: same type`)
    t.equal(v.buffer, buf.buffer, `${k}: a view of the stored bytes, not a copy`)
  }
  t.equal(back.sub.length, 2)
  // Stored at an odd offset (not how LMDB hands it over), it still reads the same, by copies.
  const odd = Buffer.alloc(buf.length + 1)
  buf.copy(odd, 1)
  const r2 = decodeSnapshot(odd.subarray(1))
  t.ok(r2.ok)
  if (r2.ok) t.same(r2.payload.aggregators[0].state, state)
})

t.test('a version-8 payload whose arrays point outside it is unreadable, not misread', async (t) => {
  const buf = encodeSnapshot({ ...payload, aggregators: [{ project: 'default', model: 'm', state: { cols: new Float64Array(4) } }] })
  // Cut the arrays' bytes, then make the checksum and length agree again: the damage is in the structure.
  const { crc32 } = await import('node:zlib')
  const cut = Buffer.from(buf.subarray(0, buf.length - 16))
  cut.writeUInt32LE(crc32(cut.subarray(16)), 8)
  cut.writeUInt32LE(cut.length - 16, 12)
  t.match(decodeSnapshot(cut), { ok: false, reason: /unreadable: typed array out of bounds/ })
})

t.test('a snapshot of version 7 (typed arrays inside the serialisation) is still read', async (t) => {
  t.equal(PLAIN_VERSION, SNAPSHOT_VERSION - 1)
  const v7 = encodeSnapshot(payload, PLAIN_VERSION)
  t.equal(v7.readUInt32LE(4), PLAIN_VERSION)
  const r = decodeSnapshot(v7)
  t.ok(r.ok)
  if (r.ok) t.same(r.payload, payload)
  const bad = Buffer.from(v7)
  bad[v7.length - 1] ^= 1
  t.match(decodeSnapshot(bad), { ok: false, reason: /checksum/ })
})

t.test('a snapshot of the last SHA-256 version is still read, and its damage still found', async (t) => {
  t.equal(SHA256_VERSION, PLAIN_VERSION - 1)
  const v6 = encodeSnapshot(payload, SHA256_VERSION)
  t.equal(v6.readUInt32LE(4), SHA256_VERSION)
  t.equal(v6.length, encodeSnapshot(payload, PLAIN_VERSION).length + 24, 'a 32-byte digest where version 7 has CRC and length')
  const r = decodeSnapshot(v6)
  t.ok(r.ok)
  if (r.ok) t.same(r.payload, payload)
  for (const at of [8, 39, 40, v6.length - 1]) {
    const bad = Buffer.from(v6)
    bad[at] ^= 1
    t.match(decodeSnapshot(bad), { ok: false, reason: /checksum/ }, `flip at ${at}`)
  }
  t.match(decodeSnapshot(v6.subarray(0, 30)), { ok: false, reason: /checksum/ }, 'shorter than its digest')
})

t.test('series segments with coarse hours (retention) round-trip through the store', async (t) => {
  const { openStores } = await import('../../src/store/db.js')
  const { SnapshotStore } = await import('../../src/store/snapshots.js')
  const { SeriesStore } = await import('../../src/analytics/series.js')
  const store = new SeriesStore()
  const HOUR = 3_600_000
  for (let i = 0; i < 200; i++) {
    store.record({ ts: i * 0.25 * HOUR, promptTokens: i, completionTokens: 1, totalTokens: i + 1, cachedTokens: 0, reasoningTokens: 0, latencyUs: 1000 + i, costNanos: 3 * i, error: false, unpriced: false })
  }
  store.retain({ before: 24 * HOUR, maxRows: 0, now: 0 })
  t.equal(store.size, 200 - 96)
  const dir = t.testdir()
  const stores = openStores(dir)
  const snaps = new SnapshotStore(stores.meta)
  const coarse = store.toSnapshotRows(0, 0, { coarse: true })
  const rows = store.toSnapshotRows(0, store.size)
  const write = [{ id: 0, data: () => coarse }, { id: 1, data: () => rows }]
  await snaps.write({ seq: 200, createdAt: 0, aggregators: [{ project: 'default', model: 'm', state: { v: 3, model: 'm', series: [{ provider: 'p', rejected: 0, first: 0, next: 2, write }] } }], alerts: null })
  const read = snaps.read()
  t.ok(read.ok)
  if (read.ok) {
    const s = (read.payload.aggregators[0].state as { series: Array<{ parts: unknown[] }> }).series[0]
    t.equal(s.parts.length, 2)
    const back = SeriesStore.fromSnapshots(s.parts)
    t.equal(back.size, store.size)
    t.equal(back.coarseHours, store.coarseHours)
    t.same(back.aggregate(-Infinity, Infinity), store.aggregate(-Infinity, Infinity))
    t.same(back.timeseries(0, 60 * HOUR, HOUR), store.timeseries(0, 60 * HOUR, HOUR))
  }
  await stores.close()
})
