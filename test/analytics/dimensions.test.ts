/**
 * Dimension dictionaries (src/analytics/dimensions.ts) and the dimension words of rows in
 * SeriesStore (scanRows, snapshots, retention), against naive references.
 */
import t from 'tap'
import fc from 'fast-check'
import {
  DEFAULT_DIMENSION_LIMITS,
  DimensionDictionary,
  metadataValue,
  NULL_ID,
  OTHER_ID,
  OTHER_VALUE,
  ValueDictionary,
  type DimensionLimits,
} from '../../src/analytics/dimensions.js'
import { SeriesStore, type RowDims } from '../../src/analytics/series.js'
import type { Row } from '../../src/analytics/row.js'
import { DAY, HOUR, MIN, pointSpec, resolvePoint, rowArb } from './fixtures/naive.js'

const limits = (over: Partial<DimensionLimits>): DimensionLimits => ({ ...DEFAULT_DIMENSION_LIMITS, ...over })
const enc = (d: DimensionDictionary, user: string | null, session: string | null, tags: string[] | null, meta: Record<string, unknown> | null): RowDims =>
  d.encode(user, session, tags, meta, { user: -1, session: -1, attrs: -1 })

/** An attribute set decoded to readable pairs: ["tag=a", "metadata.k=v"], sorted. */
function decodeSet(d: DimensionDictionary, id: number, metaKeys: string[]): string[] | undefined {
  const set = d.attrSet(id)
  if (set === undefined) return undefined
  const out: string[] = []
  for (let i = 0; i < set.length; i += 2) {
    const dim = set[i]
    if (dim === 0) out.push(`tag=${d.tags.value(set[i + 1])}`)
    else out.push(`metadata.${metaKeys[dim - 1]}=${d.metaValues(dim - 1).value(set[i + 1])}`)
  }
  return out.sort()
}

t.test('metadataValue: strings as themselves, numbers and booleans as JSON text, others none', async (t) => {
  t.equal(metadataValue('search'), 'search')
  t.equal(metadataValue(''), '')
  t.equal(metadataValue(42), '42')
  t.equal(metadataValue(1.5), '1.5')
  t.equal(metadataValue(-3), '-3')
  t.equal(metadataValue(1e21), '1e+21')
  t.equal(metadataValue(-0), '0')
  t.equal(metadataValue(true), 'true')
  t.equal(metadataValue(false), 'false')
  t.equal(metadataValue(NaN), null)
  t.equal(metadataValue(Infinity), null)
  t.equal(metadataValue(null), null)
  t.equal(metadataValue(undefined), null)
  t.equal(metadataValue({ a: 1 }), null)
  t.equal(metadataValue(['a']), null)
  t.equal(metadataValue(10n), null)
})

t.test('ValueDictionary: ids from 2 in first-seen order, NULL and OTHER, the cap', async (t) => {
  const d = new ValueDictionary(2)
  t.equal(NULL_ID, 0)
  t.equal(OTHER_ID, 1)
  t.equal(d.id('a'), 2)
  t.equal(d.id('b'), 3)
  t.equal(d.id('a'), 2, 'a value keeps its id')
  t.equal(d.capped, false, 'not capped while no value was refused')
  t.equal(d.id('c'), OTHER_ID, 'past the cap: (other)')
  t.equal(d.capped, true)
  t.equal(d.id('b'), 3, 'kept values still find their id after the cap')
  t.equal(d.find('c'), undefined, 'a refused value is never found')
  t.equal(d.find('a'), 2)
  t.equal(d.size, 2)
  t.equal(d.value(NULL_ID), null)
  t.equal(d.value(OTHER_ID), OTHER_VALUE)
  t.equal(OTHER_VALUE, '(other)')
  t.equal(d.value(2), 'a')
  t.equal(d.value(3), 'b')
  t.same(d.toJSON(), { values: ['a', 'b'], capped: true })
  const back = ValueDictionary.fromJSON(JSON.parse(JSON.stringify(d.toJSON())), 2, 'x')
  t.same(back.toJSON(), d.toJSON())
  t.equal(back.id('a'), 2)
  t.equal(back.id('z'), OTHER_ID)
  // Restored with a larger cap: new values get the next ids.
  const wider = ValueDictionary.fromJSON(d.toJSON(), 5, 'x')
  t.equal(wider.id('c'), 4)
  t.throws(() => ValueDictionary.fromJSON({ values: [1], capped: false }, 5, 'x'), /not a string/)
  t.throws(() => ValueDictionary.fromJSON({ values: [] }, 5, 'x'), /malformed/)
  t.throws(() => ValueDictionary.fromJSON(null, 5, 'x'), /malformed/)
})

t.test('encode: NULL for absent dimensions, ids from 2, caps to OTHER with capped flags', async (t) => {
  const d = new DimensionDictionary(limits({ maxValues: 2, maxMetaKeys: 1, maxMetaValues: 2, maxAttrSets: 3 }))
  t.same(enc(d, null, null, null, null), { user: NULL_ID, session: NULL_ID, attrs: NULL_ID })
  t.same(enc(d, null, null, [], {}), { user: NULL_ID, session: NULL_ID, attrs: NULL_ID }, 'empty tags and metadata: the null set')
  t.same(enc(d, null, null, null, { nested: { a: 1 }, list: [1], nil: null }), { user: 0, session: 0, attrs: 0 }, 'non-scalar metadata is no dimension')
  t.equal(d.metaKeysCapped, false, 'non-scalar values take no metadata key slot')
  t.same(d.describe(), [], 'nothing seen, nothing described')
  t.same(enc(d, 'u1', 's1', ['a'], null), { user: 2, session: 2, attrs: 2 })
  t.same(enc(d, 'u2', null, null, { feature: 'search' }), { user: 3, session: 0, attrs: 3 })
  t.same(enc(d, 'u3', 's1', ['a'], null), { user: OTHER_ID, session: 2, attrs: 2 }, 'third user past a cap of 2')
  t.equal(d.users.capped, true)
  t.equal(d.sessions.capped, false)
  // Second metadata key: past the key cap of 1; the event's set is its tags only.
  t.same(enc(d, null, null, ['a'], { other: 'x' }), { user: 0, session: 0, attrs: 2 })
  t.equal(d.metaKeysCapped, true)
  t.equal(d.metaKeyIndex('feature'), 0)
  t.equal(d.metaKeyIndex('other'), -1)
  // Values of the kept key: 2 then (other).
  const chat = enc(d, null, null, null, { feature: 'chat' }).attrs
  t.equal(chat, 4, 'a new set')
  t.equal(d.attrSetsCapped, false)
  const capped = enc(d, null, null, null, { feature: 'summary' })
  t.equal(d.metaValues(0).capped, true, 'a third feature value is past the cap of 2')
  t.equal(capped.attrs, OTHER_ID, 'a fourth distinct set is past the set cap of 3')
  t.equal(d.attrSetsCapped, true)
  t.equal(d.attrSet(OTHER_ID), undefined, 'an (other) set is unknown')
  t.same(Array.from(d.attrSet(NULL_ID)!), [], 'the null set is empty')
  t.same(decodeSet(d, 2, ['feature']), ['tag=a'])
  t.same(decodeSet(d, 3, ['feature']), ['metadata.feature=search'])
  t.same(decodeSet(d, 4, ['feature']), ['metadata.feature=chat'])
  t.equal(d.attrSets, 3)
  t.same(d.describe(), [
    { name: 'user_id', values: 2, capped: true },
    { name: 'session_id', values: 1, capped: false },
    { name: 'tag', values: 1, capped: false },
    { name: 'metadata.feature', values: 2, capped: true },
  ])
})

t.test('a metadata value past its cap is (other) inside a known set', async (t) => {
  const d = new DimensionDictionary(limits({ maxMetaValues: 1 }))
  const a = enc(d, null, null, ['x'], { k: 'v1' }).attrs
  const b = enc(d, null, null, ['x'], { k: 'v2' }).attrs
  const c = enc(d, null, null, ['x'], { k: 'v3' }).attrs
  t.not(a, b)
  t.equal(b, c, 'every value past the cap is the same (other) id: one set')
  t.same(decodeSet(d, b, ['k']), ['metadata.k=(other)', 'tag=x'])
})

t.test('keys that are never dimensions (per-call identifiers) take no slot and are unknown to memory', async (t) => {
  const d = new DimensionDictionary(limits({ maxMetaKeys: 1 }))
  t.ok(DEFAULT_DIMENSION_LIMITS.notDimensions.includes('trace_id'))
  t.same(enc(d, null, null, null, { trace_id: 'abc', span_id: 'x' }), { user: 0, session: 0, attrs: 0 })
  t.equal(d.metaKeyIndex('trace_id'), -1)
  t.equal(d.metaKeysCapped, false, 'an excluded key does not hit the key cap')
  t.equal(d.metaKeyUnknown('trace_id'), true, 'a filter on it must read the log')
  t.equal(d.metaKeyUnknown('feature'), false, 'a key never seen under the cap: no event has it')
  const w = enc(d, null, null, null, { trace_id: 'abc', feature: 'search' })
  t.same(decodeSet(d, w.attrs, ['feature']), ['metadata.feature=search'], 'the one slot went to the next key')
  t.equal(d.metaKeyUnknown('feature'), false)
  enc(d, null, null, null, { tier: 'gold' })
  t.equal(d.metaKeysCapped, true)
  t.equal(d.metaKeyUnknown('tier'), true, 'past the key cap: unknown to memory')
  t.same(d.describe().map((x) => x.name), ['metadata.feature'])
  const custom = new DimensionDictionary(limits({ notDimensions: ['request_id'] }))
  enc(custom, null, null, null, { request_id: 'r1', trace_id: 't1' })
  t.equal(custom.metaKeyIndex('request_id'), -1)
  t.equal(custom.metaKeyIndex('trace_id'), 0, 'the list is configurable: trace_id is a dimension here')
})

t.test('attribute sets: one id whatever order the tags and keys came in', async (t) => {
  const d = new DimensionDictionary()
  const first = enc(d, null, null, ['a', 'b', 'c'], { x: 1, y: true, z: 'q' }).attrs
  t.equal(enc(d, null, null, ['c', 'a', 'b'], { z: 'q', y: true, x: 1 }).attrs, first)
  t.equal(enc(d, null, null, ['b', 'c', 'a'], { y: true, x: 1, z: 'q' }).attrs, first)
  t.not(enc(d, null, null, ['a', 'b'], { x: 1, y: true, z: 'q' }).attrs, first, 'a subset is another set')
  t.not(enc(d, null, null, ['a', 'b', 'c'], { x: 2, y: true, z: 'q' }).attrs, first, 'another value is another set')
  t.equal(enc(d, null, null, ['a', 'b', 'c'], { x: '1', y: 'true', z: 'q' }).attrs, first, 'a number and its JSON text are one value')
  t.same(decodeSet(d, first, ['x', 'y', 'z']), ['metadata.x=1', 'metadata.y=true', 'metadata.z=q', 'tag=a', 'tag=b', 'tag=c'])
})

interface Ev {
  user: string | null
  session: string | null
  tags: string[] | null
  meta: Record<string, unknown> | null
}

const evArb: fc.Arbitrary<Ev> = fc.record({
  user: fc.option(fc.constantFrom('u0', 'u1', 'u2', 'u3', 'u4', 'ü5', '')),
  session: fc.option(fc.constantFrom('s0', 's1', 's2', 's3')),
  tags: fc.option(fc.uniqueArray(fc.constantFrom('a', 'b', 'c', 'd', 'e'), { maxLength: 4 })),
  meta: fc.option(
    fc.dictionary(fc.constantFrom('k1', 'k2', 'k3', 'k4'), fc.oneof(fc.constantFrom('x', 'y', 'z', 'w'), fc.integer({ min: -2, max: 3 }), fc.boolean(), fc.constant(null), fc.constant({ n: 1 }))),
  ),
})

t.test('encode then decode gives back every dimension (caps as (other)), and a JSON round trip changes nothing', async (t) => {
  fc.assert(
    fc.property(
      fc.array(evArb, { maxLength: 60 }),
      fc.record({ maxValues: fc.integer({ min: 1, max: 6 }), maxMetaKeys: fc.integer({ min: 0, max: 4 }), maxMetaValues: fc.integer({ min: 1, max: 6 }), maxAttrSets: fc.integer({ min: 1, max: 40 }) }),
      fc.integer({ min: 0, max: 60 }),
      (events, lim, cut) => {
        let d = new DimensionDictionary(limits(lim))
        // The naive model: first-seen lists per dictionary, capped.
        const seen = { users: [] as string[], sessions: [] as string[], tags: [] as string[] }
        const metaKeys: string[] = []
        const metaValues = new Map<string, string[]>()
        const sets: string[] = []
        let usersCapped = false
        let keysCapped = false
        const kept = (list: string[], v: string, cap: number): string => {
          if (list.includes(v)) return v
          if (list.length >= cap) return OTHER_VALUE
          list.push(v)
          return v
        }
        events.forEach((e, i) => {
          // Half way (at `cut`): a JSON round trip of the dictionary; later events must not notice.
          if (i === cut) {
            const json = JSON.parse(JSON.stringify(d.toJSON()))
            const back = DimensionDictionary.fromJSON(json, limits(lim))
            if (JSON.stringify(back.toJSON()) !== JSON.stringify(d.toJSON())) throw new Error('round trip changed the dictionary')
            if (JSON.stringify(back.describe()) !== JSON.stringify(d.describe())) throw new Error('round trip changed describe()')
            d = back
          }
          const w = enc(d, e.user, e.session, e.tags, e.meta)
          // user and session
          const wantUser = e.user === null ? null : kept(seen.users, e.user, lim.maxValues)
          if (e.user !== null && wantUser === OTHER_VALUE) usersCapped = true
          if (d.users.value(w.user) !== wantUser) throw new Error(`user ${e.user}: ${d.users.value(w.user)} want ${wantUser}`)
          const wantSession = e.session === null ? null : kept(seen.sessions, e.session, lim.maxValues)
          if (d.sessions.value(w.session) !== wantSession) throw new Error(`session ${e.session}: ${d.sessions.value(w.session)} want ${wantSession}`)
          // the attribute set
          const pairs: string[] = []
          for (const tag of e.tags ?? []) pairs.push(`tag=${kept(seen.tags, tag, lim.maxValues)}`)
          for (const [k, v] of Object.entries(e.meta ?? {})) {
            const mv = metadataValue(v)
            if (mv === null) continue
            if (!metaKeys.includes(k)) {
              if (metaKeys.length >= lim.maxMetaKeys) {
                keysCapped = true
                continue
              }
              metaKeys.push(k)
              metaValues.set(k, [])
            }
            pairs.push(`metadata.${k}=${kept(metaValues.get(k)!, mv, lim.maxMetaValues)}`)
          }
          pairs.sort()
          const key = pairs.join('|')
          let wantSet: string[] | undefined = pairs
          if (pairs.length > 0 && !sets.includes(key)) {
            if (sets.length >= lim.maxAttrSets) wantSet = undefined
            else sets.push(key)
          }
          const got = decodeSet(d, w.attrs, metaKeys)
          if (JSON.stringify(got) !== JSON.stringify(wantSet)) throw new Error(`event ${i} set ${JSON.stringify(got)} want ${JSON.stringify(wantSet)}`)
          if (pairs.length === 0 && w.attrs !== NULL_ID) throw new Error('no attributes must be the null set')
        })
        if (d.users.capped !== usersCapped) throw new Error(`users capped ${d.users.capped} want ${usersCapped}`)
        if (d.metaKeysCapped !== keysCapped) throw new Error(`metadata keys capped ${d.metaKeysCapped} want ${keysCapped}`)
        if (d.attrSets !== sets.length) throw new Error(`sets ${d.attrSets} want ${sets.length}`)
        const names = d.describe().map((x) => x.name)
        const wantNames = [...(seen.users.length > 0 ? ['user_id'] : []), ...(seen.sessions.length > 0 ? ['session_id'] : []), ...(seen.tags.length > 0 ? ['tag'] : []), ...metaKeys.map((k) => `metadata.${k}`)]
        if (JSON.stringify(names) !== JSON.stringify(wantNames)) throw new Error(`describe ${names} want ${wantNames}`)
      },
    ),
    { numRuns: 300 },
  )
  t.pass('property held')
})

t.test('a version 1 dictionary (an array per attribute set) restores as the same dictionary', async (t) => {
  const d = new DimensionDictionary()
  const a = enc(d, 'u1', 's1', ['x', 'y'], { k: 'v', n: 2 })
  const b = enc(d, 'u2', null, ['y'], null)
  const c = enc(d, null, null, null, { k: 'w' })
  const json = d.toJSON()
  t.equal(json.v, 2)
  t.same(json.setSizes, [8, 2, 2], 'a word count per set')
  t.equal(json.setWords.length, 12)
  // The same dictionary as version 1 wrote it.
  const { setWords, setSizes, ...rest } = json
  const sets: number[][] = []
  let at = 0
  for (const n of setSizes) sets.push(setWords.slice(at, (at += n)))
  const v1 = DimensionDictionary.fromJSON({ ...rest, v: 1, sets })
  for (const back of [v1, DimensionDictionary.fromJSON(structuredClone(json))]) {
    t.same(back.toJSON(), json, 'the same snapshot form')
    t.same(Array.from(back.attrSet(a.attrs)!), Array.from(d.attrSet(a.attrs)!))
    t.equal(enc(back, 'u1', 's1', ['y', 'x'], { n: 2, k: 'v' }).attrs, a.attrs, 'a known set finds its id')
    t.equal(enc(back, 'u2', null, ['y'], null).attrs, b.attrs)
    t.equal(enc(back, null, null, null, { k: 'w' }).attrs, c.attrs)
    t.equal(enc(back, null, null, ['z'], null).attrs, c.attrs + 1, 'a new set the next id')
  }
})

t.test('fromJSON refuses what it cannot read, naming it', async (t) => {
  const good = new DimensionDictionary()
  enc(good, 'u', 's', ['a'], { k: 1 })
  const json = good.toJSON()
  t.throws(() => DimensionDictionary.fromJSON(null), /unknown version/)
  t.throws(() => DimensionDictionary.fromJSON({ ...json, v: 3 }), /unknown version/)
  t.throws(() => DimensionDictionary.fromJSON({ ...json, users: { values: 'x', capped: false } }), /users: malformed/)
  t.throws(() => DimensionDictionary.fromJSON({ ...json, metaKeys: ['k', 'j'] }), /malformed metadata/)
  t.throws(() => DimensionDictionary.fromJSON({ ...json, setWords: [0, 2, 1], setSizes: [3] }), /malformed attribute set/)
  t.throws(() => DimensionDictionary.fromJSON({ ...json, setWords: [0, 2], setSizes: [4] }), /malformed attribute set/, 'sizes past the words')
  t.throws(() => DimensionDictionary.fromJSON({ ...json, setWords: [0, 2, 0, 3], setSizes: [2] }), /malformed attribute set/, 'words left over')
  t.throws(() => DimensionDictionary.fromJSON({ ...json, setWords: [0, -2], setSizes: [2] }), /malformed attribute set/, 'not a word')
  t.throws(() => DimensionDictionary.fromJSON({ ...json, setSizes: undefined }), /malformed metadata or sets/)
  // Version 1 (snapshot format 6 and earlier): one array per set.
  const { setWords: _w, setSizes: _s, ...rest } = json
  t.throws(() => DimensionDictionary.fromJSON({ ...rest, v: 1, sets: [[0, 2, 1]] }), /malformed attribute set/)
  t.throws(() => DimensionDictionary.fromJSON({ ...rest, v: 1 }), /malformed metadata or sets/)
  t.throws(() => DimensionDictionary.fromJSON({ ...json, metaKeys: [7] }), /not a string/)
  // Restored with smaller caps than its contents: everything kept stays, nothing new is added.
  const small = DimensionDictionary.fromJSON(JSON.parse(JSON.stringify(json)), limits({ maxValues: 1, maxMetaValues: 1 }))
  t.equal(small.users.find('u'), 2)
  t.equal(enc(small, 'v', null, null, null).user, OTHER_ID)
})

// ---------------------------------------------------------------------------------------------
// Rows with dimension words in SeriesStore

interface DimRow {
  row: Row
  dims: RowDims | undefined
}

const dimsArb: fc.Arbitrary<RowDims | undefined> = fc.option(
  fc.record({
    user: fc.oneof(fc.constantFrom(0, 1, 2, 3), fc.integer({ min: 0, max: 2 ** 32 - 1 })),
    session: fc.oneof(fc.constantFrom(0, 1, 2), fc.integer({ min: 0, max: 2 ** 32 - 1 })),
    attrs: fc.oneof(fc.constantFrom(0, 1, 2, 5), fc.integer({ min: 0, max: 2 ** 32 - 1 })),
  }),
  { nil: undefined },
)
const dimRowArb: fc.Arbitrary<DimRow> = fc.record({ row: rowArb(), dims: dimsArb })
const denseDimRowArb: fc.Arbitrary<DimRow> = fc.record({ row: rowArb({ dense: true }), dims: dimsArb })

/** One visited row as comparable text. */
const line = (v: ArrayLike<number>, flags: number, u: number, s: number, a: number, ts: number) => `${ts}|${Array.from(v).join(',')}|${flags}|${u},${s},${a}`
const want = (r: DimRow) =>
  line(
    [r.row.promptTokens, r.row.completionTokens, r.row.totalTokens, r.row.cachedTokens, r.row.reasoningTokens, r.row.latencyUs, r.row.costNanos],
    (r.row.error ? 1 : 0) | (r.row.unpriced ? 2 : 0),
    r.dims?.user ?? 0,
    r.dims?.session ?? 0,
    r.dims?.attrs ?? 0,
    r.row.ts,
  )

function scanned(store: SeriesStore, start: number, end: number): string[] | false {
  const out: string[] = []
  const ok = store.scanRows(start, end, (v, flags, u, s, a, ts) => out.push(line(v, flags, u, s, a, ts)))
  return ok ? out.sort() : false
}
const naive = (rows: readonly DimRow[], start: number, end: number) => rows.filter((r) => start <= r.row.ts && r.row.ts < end).map(want).sort()

t.test('scanRows reads back every row in range with its values, flags and dimension words, before and after a snapshot', async (t) => {
  fc.assert(
    fc.property(fc.oneof(fc.array(dimRowArb, { maxLength: 120 }), fc.array(denseDimRowArb, { maxLength: 120 })), fc.array(fc.tuple(pointSpec, pointSpec), { minLength: 1, maxLength: 6 }), (rows, ranges) => {
      const store = new SeriesStore()
      for (const r of rows) if (!store.record(r.row, r.dims)) throw new Error(`row refused: ${JSON.stringify(r)}`)
      const snap = store.toSnapshot()
      const restored = SeriesStore.fromSnapshot(snap)
      // The msgpack-like plain form (arrays instead of typed arrays) reads the same.
      const plain = SeriesStore.fromSnapshot(JSON.parse(JSON.stringify(snap, (_k, v) => (ArrayBuffer.isView(v) ? Array.from(v as Uint32Array) : v))))
      if (rows.some((r) => r.dims !== undefined && (r.dims.user | r.dims.session | r.dims.attrs) !== 0) && snap.dims === undefined) throw new Error('the snapshot dropped the dimension words')
      const all = [[-Infinity, Infinity] as [number, number], ...ranges.map(([a, b]) => [resolvePoint(a, rows.map((r) => r.row)), resolvePoint(b, rows.map((r) => r.row))] as [number, number])]
      for (const [s, e] of all) {
        const expect = naive(rows, s, e)
        for (const [name, st] of [['store', store], ['restored', restored], ['plain', plain]] as const) {
          if (!st.rowsAvailable(s, e)) throw new Error(`${name}: rows unavailable without retention`)
          const got = scanned(st, s, e)
          if (JSON.stringify(got) !== JSON.stringify(expect)) throw new Error(`${name} [${s}, ${e}): ${JSON.stringify(got)} !== ${JSON.stringify(expect)}`)
        }
      }
    }),
    { numRuns: 200 },
  )
  t.pass('property held')
})

t.test('a snapshot of rows without any dimension carries no dims column, and reads back zeros', async (t) => {
  const store = new SeriesStore()
  store.record({ ts: 5, promptTokens: 1, completionTokens: 2, totalTokens: 3, cachedTokens: 0, reasoningTokens: 0, latencyUs: 7, costNanos: 9, error: false, unpriced: false })
  store.record({ ts: 6, promptTokens: 1, completionTokens: 2, totalTokens: 3, cachedTokens: 0, reasoningTokens: 0, latencyUs: 7, costNanos: 9, error: true, unpriced: false }, { user: 0, session: 0, attrs: 0 })
  const snap = store.toSnapshot()
  t.equal(snap.dims, undefined)
  t.same(scanned(SeriesStore.fromSnapshot(snap), 0, 10), ['5|1,2,3,0,0,7,9|0|0,0,0', '6|1,2,3,0,0,7,9|1|0,0,0'])
  t.throws(() => SeriesStore.fromSnapshot({ ...snap, dims: new Uint32Array(5) }), /dims/)
})

t.test('rowsAvailable is false (and scanRows visits nothing) over an hour folded by retain(); exact elsewhere', async (t) => {
  fc.assert(
    fc.property(
      fc.array(fc.record({ row: fc.record({ ts: fc.integer({ min: 0, max: 3 * DAY - 1 }), lat: fc.integer({ min: 0, max: 1e6 }) }), dims: dimsArb }), { minLength: 1, maxLength: 150 }),
      fc.integer({ min: 0, max: 3 * 24 }),
      fc.array(fc.tuple(fc.integer({ min: -HOUR, max: 3 * DAY + HOUR }), fc.integer({ min: 0, max: DAY })), { minLength: 1, maxLength: 8 }),
      fc.option(fc.integer({ min: 0, max: 3 * DAY - 1 }), { nil: undefined }),
      (raw, beforeHour, ranges, late) => {
        const rows: DimRow[] = raw.map(({ row, dims }) => ({
          row: { ts: row.ts, promptTokens: 1, completionTokens: 2, totalTokens: 3, cachedTokens: 0, reasoningTokens: 0, latencyUs: row.lat, costNanos: 11, error: false, unpriced: false },
          dims,
        }))
        const store = new SeriesStore()
        for (const r of rows) store.record(r.row, r.dims)
        const before = beforeHour * HOUR
        store.retain({ before, maxRows: 0, now: 4 * DAY })
        // A late row into a folded hour is counted there without a row.
        if (late !== undefined) {
          const r: DimRow = { row: { ...rows[0].row, ts: late }, dims: { user: 7, session: 8, attrs: 9 } }
          store.record(r.row, r.dims)
          rows.push(r)
        }
        const foldedHours = new Set(rows.filter((r) => r.row.ts < before).map((r) => Math.floor(r.row.ts / HOUR)))
        for (const [s, e] of [[-Infinity, Infinity], ...ranges.map(([a, len]) => [a, a + len])] as Array<[number, number]>) {
          let overlaps = false
          for (const h of foldedHours) if (h * HOUR < e && (h + 1) * HOUR > s) overlaps = true
          if (store.rowsAvailable(s, e) === overlaps) throw new Error(`[${s}, ${e}) rowsAvailable ${!overlaps ? 'false' : 'true'}, folded hours ${[...foldedHours]}`)
          let visited = 0
          const got = store.scanRows(s, e, () => visited++)
          if (overlaps) {
            if (got !== false || visited !== 0) throw new Error(`[${s}, ${e}) over a folded hour: scanRows ${got}, visited ${visited}`)
          } else {
            const expect = naive(rows, s, e)
            const have = scanned(store, s, e)
            if (JSON.stringify(have) !== JSON.stringify(expect)) throw new Error(`[${s}, ${e}): ${JSON.stringify(have)} !== ${JSON.stringify(expect)}`)
          }
        }
        // A snapshot keeps the folded hours folded and the raw rows' words.
        const back = SeriesStore.fromSnapshot(store.toSnapshot())
        for (const [s, len] of ranges) {
          const e = s + len
          if (back.rowsAvailable(s, e) !== store.rowsAvailable(s, e)) throw new Error(`[${s}, ${e}) rowsAvailable differs after a snapshot`)
          if (JSON.stringify(scanned(back, s, e)) !== JSON.stringify(scanned(store, s, e))) throw new Error(`[${s}, ${e}) scan differs after a snapshot`)
        }
      },
    ),
    { numRuns: 200 },
  )
  t.pass('property held')
})

t.test('an hour folded by retain: only ranges touching it are refused', async (t) => {
  const store = new SeriesStore()
  const row = (ts: number): Row => ({ ts, promptTokens: 1, completionTokens: 1, totalTokens: 2, cachedTokens: 0, reasoningTokens: 0, latencyUs: 5, costNanos: 1, error: false, unpriced: false })
  store.record(row(HOUR + 5 * MIN), { user: 2, session: 0, attrs: 0 })
  store.record(row(3 * HOUR + 1), { user: 3, session: 2, attrs: 4 })
  t.equal(store.retain({ before: 2 * HOUR, maxRows: 0, now: DAY }), 1)
  t.equal(store.rowsAvailable(HOUR, 2 * HOUR), false)
  t.equal(store.rowsAvailable(2 * HOUR - 1, 2 * HOUR + 1), false, 'its last millisecond')
  t.equal(store.rowsAvailable(HOUR - 1, HOUR), true, 'the millisecond before it')
  t.equal(store.rowsAvailable(0, HOUR), true, 'no folded hour with rows')
  t.equal(store.rowsAvailable(2 * HOUR, 4 * HOUR), true)
  t.equal(store.rowsAvailable(-Infinity, Infinity), false)
  t.same(scanned(store, 2 * HOUR, 4 * HOUR), ['10800001|1,1,2,0,0,5,1|0|3,2,4'])
  t.equal(scanned(store, 0, 4 * HOUR), false)
})
