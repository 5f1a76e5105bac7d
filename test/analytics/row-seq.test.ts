/**
 * Rows carry their event's log position (seq) exactly: through scanRows, snapshots, row-range
 * parts and retention's compaction; seqs at or past 2^32 go through the high-word escape.
 */
import t from 'tap'
import fc from 'fast-check'
import { SeriesStore, type SeriesSnapshot } from '../../src/analytics/series.js'
import type { Row } from '../../src/analytics/row.js'

const MIN = 60_000
const HOUR = 3_600_000
const TWO_32 = 2 ** 32

const row = (ts: number, seq: number, over: Partial<Row> = {}): Row => ({ ts, promptTokens: 3, completionTokens: 4, totalTokens: 7, cachedTokens: 0, reasoningTokens: 0, latencyUs: 1000, costNanos: 9, error: false, unpriced: false, seq, ...over })

/** Every row's (ts, seq) as the store gives them back, sorted by seq. */
function seqsOf(store: SeriesStore, start = -Infinity, end = Infinity): Array<[number, number]> {
  const out: Array<[number, number]> = []
  store.scanRows(start, end, (_v, _f, _u, _s, _a, ts, seq) => out.push([ts, seq]))
  return out.sort((a, b) => a[1] - b[1])
}

t.test('seqs read back exactly, below and past 2^32, across chunks and minutes', async (t) => {
  const seqs = [0, 1, 2 ** 31, TWO_32 - 1, TWO_32, TWO_32 + 1, 2 ** 40 + 12345, Number.MAX_SAFE_INTEGER - 9000, 7]
  const store = new SeriesStore()
  const want: Array<[number, number]> = []
  let refused = 0
  // 9,000 rows: past the first chunk's growth and across three chunks; high seqs in each chunk.
  for (let i = 0; i < 9000; i++) {
    const seq = i % 1000 === 0 ? seqs[(i / 1000) % seqs.length] + i : i * 3 + 11
    const r = row(i * 997, seq, i % 7 === 0 ? { cachedTokens: 2, totalTokens: 9 } : i % 11 === 0 ? { promptTokens: 2 ** 30, totalTokens: 2 ** 30 + 4 } : {})
    if (!store.record(r)) refused++
    want.push([r.ts, seq])
  }
  t.equal(refused, 0)
  want.sort((a, b) => a[1] - b[1])
  t.same(seqsOf(store), want, 'scanRows gives every seq exactly')
  const back = SeriesStore.fromSnapshot(store.toSnapshot())
  t.same(seqsOf(back), want, 'a snapshot keeps every seq exactly')
  // Row-range parts (the delta snapshots) carry them too.
  const parts: SeriesSnapshot[] = []
  for (let hi = store.size; hi > 0; hi -= 4096) parts.push(store.toSnapshotRows(Math.max(0, hi - 4096), hi))
  t.same(seqsOf(SeriesStore.fromSnapshots(parts)), want, 'parts keep every seq exactly')
  // Retention's compaction copies rows into a new store: seqs (and the high words) move with them.
  const cut = 4500 * 997
  store.retain({ before: cut, maxRows: 0, now: 0 })
  const kept = want.filter(([ts]) => Math.floor(ts / HOUR) * HOUR >= Math.floor(cut / HOUR) * HOUR)
  t.ok(store.coarseHours > 0)
  t.same(seqsOf(store, store.coarseBefore), kept, 'a retention fold keeps the seqs of the rows it keeps')
})

t.test('a seq must be a safe non-negative integer; absent is 0', async (t) => {
  const store = new SeriesStore()
  t.notOk(store.record(row(0, -1)))
  t.notOk(store.record(row(0, 1.5)))
  t.notOk(store.record(row(0, 2 ** 53)))
  const { seq: _seq, ...noSeq } = row(MIN, 0)
  t.ok(store.record(noSeq))
  t.equal(store.rejected, 3)
  t.same(seqsOf(store), [[MIN, 0]])
})

t.test('property: any seqs round-trip through scanRows and snapshots', async (t) => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 3 * HOUR }), fc.oneof(fc.nat(), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }))), { maxLength: 200 }), (rs) => {
      const store = new SeriesStore()
      for (const [ts, seq] of rs) store.record(row(ts, seq))
      const want = rs.map(([ts, seq]) => [ts, seq] as [number, number]).sort((a, b) => a[1] - b[1] || a[0] - b[0])
      const got = seqsOf(store).sort((a, b) => a[1] - b[1] || a[0] - b[0])
      const back = seqsOf(SeriesStore.fromSnapshot(store.toSnapshot())).sort((a, b) => a[1] - b[1] || a[0] - b[0])
      return JSON.stringify(got) === JSON.stringify(want) && JSON.stringify(back) === JSON.stringify(want)
    }),
    { numRuns: 100 }
  )
  t.pass('property held')
})

t.test('an older series snapshot (no seq column) is refused with its reason, never read with made-up seqs', async (t) => {
  const store = new SeriesStore()
  store.record(row(0, 5))
  const snap = store.toSnapshot() as unknown as Record<string, unknown>
  const { seq: _seq, ...v3 } = snap
  t.throws(() => SeriesStore.fromSnapshot({ ...v3, version: 3 }), /unsupported version 3 \(this build reads version 4 only: older rows carry no log position\)/)
  t.throws(() => SeriesStore.fromSnapshot({ ...snap, seq: undefined }), /column seq is missing/)
  t.throws(() => SeriesStore.fromSnapshot({ ...snap, seq: [-1] }), /row 0 breaks the Row contract/)
})
