import t from 'tap'
import { encodeSnapshot, decodeSnapshot, SNAPSHOT_VERSION } from '../../src/store/snapshots.js'

const payload = { seq: 42, createdAt: 7, aggregators: [{ model: 'm', state: { v: 1, cols: new Float64Array([1.5, 2]) } }], alerts: { v: 1 } }

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
  for (const at of [12, 40, buf.length - 1]) {
    const bad = Buffer.from(buf)
    bad[at] ^= 1
    t.match(decodeSnapshot(bad), { ok: false, reason: /checksum/ }, `flip at ${at}`)
  }
  t.match(decodeSnapshot(encodeSnapshot(payload, SNAPSHOT_VERSION + 1)), { ok: false, reason: /version/ })
  t.match(decodeSnapshot(encodeSnapshot({ ...payload, seq: -0.5 } as typeof payload)), { ok: false, reason: /malformed/ })
  t.match(decodeSnapshot(buf.subarray(0, 20)), { ok: false })
})
