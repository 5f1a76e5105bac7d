/**
 * Dictionaries after a delete: a blanked value's string is gone (from find, from value, from the
 * JSON a snapshot stores), its id is never given again, it no longer counts as kept (nor
 * against the cap); unreferenced attribute sets are dropped and the tag and metadata values no
 * set holds any more are blanked, those another set holds are kept.
 */
import t from 'tap'
import { DimensionDictionary, ValueDictionary, OTHER_ID, type ReferencedIds } from '../../src/analytics/dimensions.js'
import type { RowDims } from '../../src/analytics/series.js'

t.test('ValueDictionary.blank: string erased, id never reused, cap counts kept values', async (t) => {
  const d = new ValueDictionary(2)
  t.equal(d.id('alice'), 2)
  t.equal(d.id('bob'), 3)
  t.equal(d.id('carol'), OTHER_ID, 'capped')
  t.ok(d.blank(2))
  t.notOk(d.blank(2), 'twice: no-op')
  t.notOk(d.blank(OTHER_ID))
  t.notOk(d.blank(9))
  t.equal(d.find('alice'), undefined)
  t.equal(d.value(2), null)
  t.equal(d.size, 1)
  t.equal(d.ids, 2)
  t.equal(d.blanked, 1)
  t.equal(d.id('carol'), 4, 'room again under the cap; a new id')
  t.equal(d.id('alice'), OTHER_ID, 'alice again: past the cap now')
  const json = d.toJSON()
  t.same(json, { values: [null, 'bob', 'carol'], capped: true })
  t.notOk(JSON.stringify(json).includes('alice'))
  const back = ValueDictionary.fromJSON(json, 2, 'users')
  t.equal(back.find('bob'), 3)
  t.equal(back.find('carol'), 4)
  t.equal(back.value(2), null)
  t.equal(back.size, 2)
  t.equal(back.blanked, 1)
  const seen: Array<[string, number]> = []
  back.forEach((v, id) => seen.push([v, id]))
  t.same(seen, [['bob', 3], ['carol', 4]])
  t.throws(() => ValueDictionary.fromJSON({ values: ['x', 'x'], capped: false }, 5, 'users'), /given twice/)
})

function encode(dims: DimensionDictionary, user: string | null, tags: string[] | null, meta: Record<string, unknown> | null): RowDims {
  return dims.encode(user, null, tags, meta, { user: 0, session: 0, attrs: 0 })
}

const refsOf = (dims: DimensionDictionary, rows: RowDims[]): ReferencedIds => {
  const refs = { users: new Uint8Array(dims.users.ids + 2), sessions: new Uint8Array(dims.sessions.ids + 2), attrs: new Uint8Array(dims.attrSets + 2) }
  for (const r of rows) {
    refs.users[r.user] = 1
    refs.sessions[r.session] = 1
    refs.attrs[r.attrs] = 1
  }
  return refs
}

t.test('blankUnreferenced: sets dropped, their values blanked unless another set holds them', async (t) => {
  const dims = new DimensionDictionary()
  const a = { ...encode(dims, 'victim', ['secret', 'shared'], { feature: 'private', plan: 'pro' }) }
  const b = { ...encode(dims, 'other', ['shared'], { plan: 'pro' }) }
  const c = { ...encode(dims, 'victim', ['secret'], null) }
  t.equal(dims.findSet(['shared', 'secret'], { plan: 'pro', feature: 'private' }), a.attrs, 'findSet: any order, no id made')
  t.equal(dims.findSet(['nope'], null), undefined)
  t.equal(dims.findSet(null, null), 0)
  t.same(dims.valuesOf(['secret'], { feature: 'private', x: {} }).length, 2)
  // Delete a and c: b is the only row left.
  const out = dims.blankUnreferenced({ users: [a.user, c.user], sessions: [], attrs: [a.attrs, c.attrs], values: [] }, refsOf(dims, [b]))
  t.same(out, { users: 1, sessions: 0, sets: 2, values: 2 })
  t.equal(dims.users.find('victim'), undefined)
  t.equal(dims.tags.find('secret'), undefined)
  t.equal(dims.metaValues(dims.metaKeyIndex('feature')).find('private'), undefined)
  t.not(dims.tags.find('shared'), undefined, 'b still holds it')
  t.not(dims.metaValues(dims.metaKeyIndex('plan')).find('pro'), undefined)
  t.same(dims.attrSet(a.attrs), new Uint32Array(0), 'a dropped set holds nothing')
  t.same(dims.describe(), [
    { name: 'user_id', values: 1, capped: false },
    { name: 'tag', values: 1, capped: false },
    { name: 'metadata.plan', values: 1, capped: false }
  ], 'a key left without values is not listed')
  const json = JSON.stringify(dims.toJSON())
  for (const s of ['victim', 'secret', 'private']) t.notOk(json.includes(s), `${s} is not in the snapshot form`)
  // Restored: the same answers; the same event again gets new ids, never the old ones.
  const back = DimensionDictionary.fromJSON(JSON.parse(json))
  t.same(back.describe(), dims.describe())
  const again = encode(back, 'victim', ['secret', 'shared'], { feature: 'private', plan: 'pro' })
  t.ok(again.user > Math.max(a.user, b.user), 'a new user id')
  t.ok(again.attrs > Math.max(a.attrs, b.attrs, c.attrs), 'a new set id')
  t.equal(back.findSet(['secret', 'shared'], { feature: 'private', plan: 'pro' }), again.attrs)
  t.equal(encode(back, 'other', ['shared'], { plan: 'pro' }).attrs, b.attrs, 'a kept set keeps its id')
})

t.test('blankUnreferenced keeps what rows still reference', async (t) => {
  const dims = new DimensionDictionary()
  const a = { ...encode(dims, 'u1', ['t1'], null) }
  const b = { ...encode(dims, 'u1', ['t1'], null) }
  const out = dims.blankUnreferenced({ users: [a.user], sessions: [], attrs: [a.attrs], values: [[0, dims.tags.find('t1')!]] }, refsOf(dims, [b]))
  t.same(out, { users: 0, sessions: 0, sets: 0, values: 0 })
  t.equal(dims.users.find('u1'), a.user)
  t.equal(dims.tags.find('t1'), 2)
})
