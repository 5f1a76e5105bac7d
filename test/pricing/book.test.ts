/**
 * The price book: which price an event gets (versions, boundaries, revisions, reprices, the
 * override layer, name matching) and what it costs. Every expected cost is worked out by hand
 * in the comment next to it: 1 token at $1 per 1M tokens = 1 µ$ = 1000 nanos.
 */
import t from 'tap'
import fc from 'fast-check'
import {
  MATCH_EXACT,
  MATCH_EXACT_ANY,
  MATCH_FAMILY,
  MATCH_FAMILY_ANY,
  MATCH_NONE,
  MATCH_SUFFIX,
  MATCH_SUFFIX_ANY,
  PriceBook,
  SCHEDULE_MEMO_MAX,
  fillRates,
  genaiRates,
  matchRank,
  priceEvent,
  priceInputOf,
  repriceCovers,
  stepAt,
  type PriceVersion,
  type Rates,
  type RepriceRecord
} from '../../src/pricing/book.js'
import { computeCost } from '../../src/pricing/compute-cost.js'
import type { StoredEvent } from '../../src/events.js'

const MAR = Date.parse('2025-03-01T00:00:00Z')
const JUN = Date.parse('2025-06-01T00:00:00Z')
const JUL = Date.parse('2025-07-01T00:00:00Z')

let ids = 0
function version(book: PriceBook, over: Partial<PriceVersion> & { rates: Rates }): PriceVersion {
  const v: PriceVersion = { id: `pv_${++ids}`, project: 'p', provider: 'openai', model: 'gpt-4o', effective_from: MAR, created_at: 0, rev: book.nextRev(), ...over }
  book.addVersion(v)
  return v
}

function event(over: Partial<StoredEvent> = {}): StoredEvent {
  return {
    seq: 1, id: 'evt_1', ts: JUL, recv: JUL, model: 'gpt-4o', provider: 'openai', prompt: 1000, completion: 500, total: 1500, cached: 0, reasoning: 0,
    latency: 1, ttft: null, error: false, cost: null, meta: null, project: 'p', user: null, session: null, tags: null, ...over
  }
}

const cost = (book: PriceBook, over: Partial<StoredEvent>) => priceEvent(event(over), book)

t.test('versions by event time: exactly at effective_from the new version, 1 ms before the old, before any version genai-prices', async (t) => {
  const book = new PriceBook()
  version(book, { rates: fillRates({ input: 2, output: 8 }), effective_from: MAR })
  version(book, { rates: fillRates({ input: 4, output: 16 }), effective_from: JUN })
  const rev = book.rev
  // v2: 1000 × 4 + 500 × 16 = 4000 + 8000 = 12000 µ$
  t.same(cost(book, { ts: JUN, priceRev: rev }), { costNanos: 12_000_000, unpriced: false })
  // v1: 1000 × 2 + 500 × 8 = 2000 + 4000 = 6000 µ$
  t.same(cost(book, { ts: JUN - 1, priceRev: rev }), { costNanos: 6_000_000, unpriced: false })
  t.same(cost(book, { ts: MAR, priceRev: rev }), { costNanos: 6_000_000, unpriced: false })
  // genai-prices gpt-4o $2.5 / $10: 1000 × 2.5 + 500 × 10 = 2500 + 5000 = 7500 µ$
  t.same(cost(book, { ts: MAR - 1, priceRev: rev }), { costNanos: 7_500_000, unpriced: false })
  // Another project has no versions: genai-prices.
  t.same(cost(book, { ts: JUL, priceRev: rev, project: 'other' }), { costNanos: 7_500_000, unpriced: false })
})

t.test('layers: a project version beats the config override layer, which beats genai-prices', async (t) => {
  const book = new PriceBook()
  book.addOverrideLayer({ rev: 0, created_at: 0, overrides: { 'gpt-4o': { input_mtok: 1, output_mtok: 3 } } })
  version(book, { rates: fillRates({ input: 2, output: 8 }), effective_from: JUN })
  const rev = book.rev
  // Version: 1000 × 2 + 500 × 8 = 6000 µ$
  t.equal(cost(book, { ts: JUN, priceRev: rev }).costNanos, 6_000_000)
  // Before the version, the override layer (from the start of time): 1000 × 1 + 500 × 3 = 2500 µ$
  t.equal(cost(book, { ts: JUN - 1, priceRev: rev }).costNanos, 2_500_000)
  t.equal(cost(book, { ts: 0, priceRev: rev }).costNanos, 2_500_000)
  // The override layer prices every project.
  t.equal(cost(book, { ts: JUL, priceRev: rev, project: 'other' }).costNanos, 2_500_000)
  // A model neither prices: genai-prices gpt-4: 1000 × 30 + 500 × 60 = 30000 + 30000 = 60000 µ$
  t.equal(cost(book, { ts: JUL, priceRev: rev, model: 'gpt-4' }).costNanos, 60_000_000)
  // A model nothing prices at all.
  t.same(cost(book, { ts: JUL, priceRev: rev, model: 'no-such-model' }), { costNanos: 0, unpriced: true })
  // A caller's cost wins over all of them.
  t.same(cost(book, { ts: JUL, priceRev: rev, cost: 0.25 }), { costNanos: 250_000_000, unpriced: false })
})

t.test('override layers by revision: a changed config set prices new events, old events keep theirs', async (t) => {
  const book = new PriceBook()
  book.addOverrideLayer({ rev: 0, created_at: 0, overrides: { 'gpt-4o': { input_mtok: 1, output_mtok: 3 } } })
  const r1 = book.nextRev()
  book.addOverrideLayer({ rev: r1, created_at: 0, overrides: { 'gpt-4o': { input_mtok: 2, output_mtok: 6 } } })
  // Accepted at rev 0: 1000 × 1 + 500 × 3 = 2500 µ$
  t.equal(cost(book, { priceRev: 0 }).costNanos, 2_500_000)
  // Accepted at rev 1: 1000 × 2 + 500 × 6 = 5000 µ$
  t.equal(cost(book, { priceRev: r1 }).costNanos, 5_000_000)
  // A later layer without the model: genai-prices again for events accepted from then on (7500 µ$).
  const r2 = book.nextRev()
  book.addOverrideLayer({ rev: r2, created_at: 0, overrides: {} })
  t.equal(cost(book, { priceRev: r2 }).costNanos, 7_500_000)
  t.equal(cost(book, { priceRev: r1 }).costNanos, 5_000_000)
  t.equal(book.overrideLayer(r1)?.rev, r1)
  t.equal(book.overrideLayer()?.rev, r2)
})

t.test('revisions: a version added later does not price an event accepted earlier, unless a covering reprice exists', async (t) => {
  const book = new PriceBook()
  const v1 = version(book, { rates: fillRates({ input: 2, output: 8 }), effective_from: MAR })
  const accepted = book.rev
  const v2 = version(book, { rates: fillRates({ input: 4, output: 16 }), effective_from: JUN })
  // The event (July) was accepted before v2 existed: v1's 6000 µ$, though v2 is in force at its time.
  t.equal(cost(book, { ts: JUL, priceRev: accepted }).costNanos, 6_000_000)
  t.equal(book.effectiveRev('p', 'gpt-4o', JUL, accepted), accepted)
  // A reprice of another model, or of a range that does not hold the event, changes nothing.
  const rOther: RepriceRecord = { id: 'rp_1', project: 'p', start: MAR, end: Date.parse('2026-01-01'), model: 'gpt-4', rev: book.nextRev(), created_at: 0 }
  book.addReprice(rOther)
  const rBefore: RepriceRecord = { id: 'rp_2', project: 'p', start: MAR, end: JUL, model: null, rev: book.nextRev(), created_at: 0 }
  book.addReprice(rBefore)
  t.equal(cost(book, { ts: JUL, priceRev: accepted }).costNanos, 6_000_000, 'end is exclusive')
  // A reprice of the project covering it: v2's 1000 × 4 + 500 × 16 = 12000 µ$.
  const r = book.nextRev()
  book.addReprice({ id: 'rp_3', project: 'p', start: JUL, end: JUL + 1, model: 'gpt-4o', rev: r, created_at: 0 })
  t.equal(book.effectiveRev('p', 'gpt-4o', JUL, accepted), r)
  t.equal(cost(book, { ts: JUL, priceRev: accepted }).costNanos, 12_000_000)
  // A reprice of another project does not reach this one.
  t.equal(cost(book, { ts: JUL + 1, priceRev: accepted }).costNanos, 6_000_000)
  // An event in the reprice's range before v2's effective_from: the reprice gives it the book at r, still v1.
  t.equal(cost(book, { ts: JUN - 1, priceRev: accepted }).costNanos, 6_000_000)
  // Accepted after the reprice: priced at its own rev (v2), the reprice is older.
  t.equal(book.effectiveRev('p', 'gpt-4o', JUL, r + 1), r + 1)
  t.equal(book.repriceEpoch('p'), r)
  t.equal(book.repriceEpoch('other'), 0)
  t.same(book.reprices('p').map((x) => x.id), ['rp_1', 'rp_2', 'rp_3'])
  t.same(book.versions('p').map((x) => x.id), [v1.id, v2.id])
  t.same(book.versions('p', accepted).map((x) => x.id), [v1.id])
})

t.test('a second version at the same instant replaces the first from its own revision on', async (t) => {
  const book = new PriceBook()
  version(book, { rates: fillRates({ input: 4, output: 16 }), effective_from: JUN })
  const before = book.rev
  version(book, { rates: fillRates({ input: 5, output: 20 }), effective_from: JUN })
  // Old rev: 1000 × 4 + 500 × 16 = 12000 µ$; new rev: 1000 × 5 + 500 × 20 = 15000 µ$
  t.equal(cost(book, { ts: JUN, priceRev: before }).costNanos, 12_000_000)
  t.equal(cost(book, { ts: JUN, priceRev: book.rev }).costNanos, 15_000_000)
  t.equal(book.schedule('p', 'openai', 'gpt-4o', book.rev)?.length, 1, 'one step, not two')
})

t.test('cache writes: Anthropic shape (outside prompt) and OpenAI shape (inside prompt), book rates and genai-prices', async (t) => {
  const book = new PriceBook()
  version(book, { provider: 'anthropic', model: 'claude-3-5-sonnet', rates: { input: 3, output: 15, cached_input: 0.3, cache_write: 3.75, reasoning: 15 } })
  version(book, { provider: 'openai', model: 'gpt-4o', rates: { input: 2.5, output: 10, cached_input: 1.25, cache_write: 3, reasoning: 10 } })
  const rev = book.rev
  const anthropic = { provider: 'anthropic', model: 'claude-3-5-sonnet-20241022', prompt: 1000, cached: 200, cacheWrite: 400, completion: 500, priceRev: rev }
  // 1000 × 3 + 200 × 0.3 + 400 × 3.75 + 500 × 15 = 3000 + 60 + 1500 + 7500 = 12060 µ$
  t.equal(cost(book, anthropic).costNanos, 12_060_000)
  // genai-prices has the same rates for it (3 / 0.3 / 3.75 / 15): the same 12060 µ$ without the book.
  t.equal(cost(book, { ...anthropic, project: 'other' }).costNanos, 12_060_000)
  const openai = { provider: 'openai', model: 'gpt-4o', prompt: 1000, cached: 200, cacheWrite: 300, completion: 500, priceRev: rev }
  // uncached = 1000 − 200 − 300 = 500: 500 × 2.5 + 200 × 1.25 + 300 × 3 + 500 × 10 = 1250 + 250 + 900 + 5000 = 7400 µ$
  t.equal(cost(book, openai).costNanos, 7_400_000)
  // genai-prices has no cache-write price for gpt-4o: writes at the input price:
  // 500 × 2.5 + 200 × 1.25 + 300 × 2.5 + 500 × 10 = 1250 + 250 + 750 + 5000 = 7250 µ$
  t.equal(cost(book, { ...openai, project: 'other' }).costNanos, 7_250_000)
  // OpenAI shape, inconsistent counts: cached 800 + writes 700 > prompt 1000: writes capped at 200, uncached 0:
  // 800 × 1.25 + 200 × 3 + 500 × 10 = 1000 + 600 + 5000 = 6600 µ$
  t.equal(cost(book, { ...openai, cached: 800, cacheWrite: 700 }).costNanos, 6_600_000)
  // genai-prices would refuse such usage; it is clamped the same way: 800 × 1.25 + 200 × 2.5 + 5000 = 6500 µ$
  t.equal(cost(book, { ...openai, cached: 800, cacheWrite: 700, project: 'other' }).costNanos, 6_500_000)
})

t.test('reasoning tokens at their own rate, inside completion tokens', async (t) => {
  const book = new PriceBook()
  version(book, { rates: fillRates({ input: 1, output: 8, reasoning: 20 }) })
  // 1000 × 1 + (500 − 100) × 8 + 100 × 20 = 1000 + 3200 + 2000 = 6200 µ$
  t.equal(cost(book, { reasoning: 100, priceRev: book.rev }).costNanos, 6_200_000)
  // PUT defaults: cached_input = cache_write = input, reasoning = output.
  t.same(fillRates({ input: 1, output: 8 }), { input: 1, output: 8, cached_input: 1, cache_write: 1, reasoning: 8 })
})

t.test('name matching', async (t) => {
  t.test('rank: exact beats family, a named provider beats *', async (t) => {
    t.equal(matchRank('openai', 'gpt-4o', 'openai', 'gpt-4o'), MATCH_EXACT)
    t.equal(matchRank('*', 'gpt-4o', 'azure', 'gpt-4o'), MATCH_EXACT_ANY)
    // genai-prices resolves both names to its gpt-4o model
    t.equal(matchRank('openai', 'gpt-4o', 'openai', 'gpt-4o-2024-08-06'), MATCH_SUFFIX)
    t.equal(matchRank('*', 'gpt-4o', 'azure', 'gpt-4o-2024-08-06'), MATCH_SUFFIX_ANY)
    t.equal(matchRank('*', 'gpt-4o-2024-08-06', 'azure', 'gpt-4o'), MATCH_FAMILY_ANY)
    // a dated suffix (genai-prices has its own model for this snapshot)
    t.equal(matchRank('openai', 'gpt-4o', 'openai', 'gpt-4o-2024-05-13'), MATCH_SUFFIX)
    // genai-prices alone: its gpt-4o model lists both snapshots
    t.equal(matchRank('openai', 'gpt-4o-2024-08-06', 'openai', 'gpt-4o-2024-11-20'), MATCH_FAMILY)
    t.equal(matchRank('openai', 'gpt-4o-2024-08-06', 'openai', 'gpt-4o'), MATCH_FAMILY)
    t.equal(matchRank('openai', 'gpt-4o', 'openai', 'gpt-4o-mini'), MATCH_NONE)
    t.equal(matchRank('openai', 'gpt-4o', 'anthropic', 'gpt-4o'), MATCH_NONE)
    // Claude's dated names, -latest, Vertex's @date, Bedrock's -vN:N, ollama tags
    t.equal(matchRank('anthropic', 'claude-3-5-sonnet', 'anthropic', 'claude-3-5-sonnet-20241022'), MATCH_SUFFIX)
    t.equal(matchRank('anthropic', 'claude-3-5-sonnet', 'anthropic', 'claude-3-5-sonnet-latest'), MATCH_SUFFIX)
    t.equal(matchRank('anthropic', 'claude-sonnet-4-5', 'anthropic', 'claude-sonnet-4-5-20250929'), MATCH_SUFFIX)
    t.equal(matchRank('*', 'claude-3-5-sonnet-v2', 'vertex_ai', 'claude-3-5-sonnet-v2@20241022'), MATCH_SUFFIX_ANY)
    t.equal(matchRank('bedrock', 'anthropic.claude-3-5-sonnet-20241022', 'aws', 'anthropic.claude-3-5-sonnet-20241022-v2:0'), MATCH_SUFFIX, 'bedrock = aws')
    t.equal(matchRank('ollama', 'llama3', 'ollama', 'llama3:8b'), MATCH_SUFFIX)
    t.equal(matchRank('ollama', 'llama3', 'ollama', 'llama3.1'), MATCH_NONE)
    t.equal(matchRank('OpenAI', 'gpt-4o', 'openai', 'gpt-4o'), MATCH_EXACT, 'providers case-insensitive')
  })

  t.test('an entry for gpt-4o prices gpt-4o-2024-08-06 (new user #2)', async (t) => {
    const book = new PriceBook()
    version(book, { rates: fillRates({ input: 2, output: 8 }) })
    // 1000 × 2 + 500 × 8 = 6000 µ$
    t.equal(cost(book, { model: 'gpt-4o-2024-08-06', priceRev: book.rev }).costNanos, 6_000_000)
    // and so does a config override for gpt-4o (the layer matches names the same way): 1000 × 1 + 500 × 3 = 2500 µ$
    const b2 = new PriceBook()
    b2.addOverrideLayer({ rev: 0, created_at: 0, overrides: { 'gpt-4o': { input_mtok: 1, output_mtok: 3 } } })
    t.equal(cost(b2, { model: 'gpt-4o-2024-08-06', priceRev: 0 }).costNanos, 2_500_000)
    t.equal(cost(b2, { model: 'gpt-4o-mini', priceRev: 0 }).costNanos, computeCost(priceInputOf(event({ model: 'gpt-4o-mini' }))).costNanos, 'gpt-4o-mini is not gpt-4o')
  })

  t.test('exact beats family; a dated entry takes over from its own first version on', async (t) => {
    const book = new PriceBook()
    version(book, { model: 'gpt-4o', rates: fillRates({ input: 2, output: 8 }), effective_from: MAR })
    version(book, { model: 'gpt-4o-2024-08-06', rates: fillRates({ input: 3, output: 12 }), effective_from: JUN })
    const rev = book.rev
    // exact entry: 1000 × 3 + 500 × 12 = 9000 µ$
    t.equal(cost(book, { model: 'gpt-4o-2024-08-06', ts: JUL, priceRev: rev }).costNanos, 9_000_000)
    // before the exact entry's first version, the family entry: 6000 µ$
    t.equal(cost(book, { model: 'gpt-4o-2024-08-06', ts: JUN - 1, priceRev: rev }).costNanos, 6_000_000)
    // another snapshot of the family: the gpt-4o entry (a suffix match) beats the dated one (genai-prices family only)
    t.equal(cost(book, { model: 'gpt-4o-2024-11-20', ts: JUL, priceRev: rev }).costNanos, 6_000_000)
    t.equal(cost(book, { model: 'gpt-4o', ts: JUL, priceRev: rev }).costNanos, 6_000_000)
  })

  t.test('a named provider beats *; the override layer reads provider/model and bare keys', async (t) => {
    const book = new PriceBook()
    version(book, { provider: '*', rates: fillRates({ input: 1, output: 1 }) })
    version(book, { provider: 'azure', rates: fillRates({ input: 2, output: 2 }) })
    const rev = book.rev
    // azure: 1500 × 2 = 3000 µ$; openai falls to *: 1500 × 1 = 1500 µ$
    t.equal(cost(book, { provider: 'azure', priceRev: rev }).costNanos, 3_000_000)
    t.equal(cost(book, { provider: 'openai', priceRev: rev }).costNanos, 1_500_000)
    const b2 = new PriceBook()
    b2.addOverrideLayer({ rev: 0, created_at: 0, overrides: { 'gpt-4o': { input_mtok: 1, output_mtok: 1 }, 'openai/gpt-4o': { input_mtok: 4, output_mtok: 4 }, 'openai/gpt-4': { input_mtok: 5, output_mtok: 5 } } })
    t.equal(cost(b2, { provider: 'openai', priceRev: 0 }).costNanos, 6_000_000, 'qualified key: 1500 × 4')
    t.equal(cost(b2, { provider: 'azure', priceRev: 0 }).costNanos, 1_500_000, 'bare key: 1500 × 1')
    // A key with a slash is also a bare model name (OpenRouter's `openai/gpt-4`): 1500 × 5
    t.equal(cost(b2, { provider: 'openrouter', model: 'openai/gpt-4', priceRev: 0 }).costNanos, 7_500_000)
  })

  t.test('reprice model filters match names the same way', async (t) => {
    const r: RepriceRecord = { id: 'rp', project: 'p', start: MAR, end: JUL, model: 'gpt-4o', rev: 1, created_at: 0 }
    t.ok(repriceCovers(r, 'gpt-4o', MAR))
    t.ok(repriceCovers(r, 'gpt-4o-2024-08-06', JUN))
    t.notOk(repriceCovers(r, 'gpt-4o-mini', JUN))
    t.notOk(repriceCovers(r, 'gpt-4o', JUL), 'end exclusive')
    t.notOk(repriceCovers(r, 'gpt-4o', MAR - 1))
    t.ok(repriceCovers({ ...r, model: null }, 'anything', MAR))
  })
})

t.test('schedule: memoised, forgotten when the project gains a record, even at an already-asked rev', async (t) => {
  const book = new PriceBook()
  const v = version(book, { rates: fillRates({ input: 2, output: 8 }) })
  const s = book.schedule('p', 'openai', 'gpt-4o', v.rev)
  t.equal(book.schedule('p', 'openai', 'gpt-4o', v.rev), s, 'same array')
  // A cluster mirror may learn of a record at a rev already asked about.
  const next = v.rev + 1
  t.equal(book.schedule('p', 'openai', 'gpt-4o', next), s === null ? null : book.schedule('p', 'openai', 'gpt-4o', next))
  book.addVersion({ ...v, id: 'pv_late', effective_from: JUN, rates: fillRates({ input: 4, output: 16 }), rev: next })
  t.equal(book.rev, next, 'rev = the highest record rev')
  t.same(book.schedule('p', 'openai', 'gpt-4o', next)?.map((x) => x.versionId), [v.id, 'pv_late'])
  t.same(book.schedule('p', 'openai', 'gpt-4o', v.rev)?.map((x) => x.versionId), [v.id])
  // Adding the same id again is a no-op.
  book.addVersion({ ...v, id: 'pv_late', rev: next })
  t.equal(book.versions('p').length, 2)
  // The memo is bounded: past SCHEDULE_MEMO_MAX entries it starts afresh, answers unchanged.
  for (let i = 0; i <= SCHEDULE_MEMO_MAX; i++) book.schedule('p', 'openai', `m${i}`, next)
  t.same(book.schedule('p', 'openai', 'gpt-4o', next)?.map((x) => x.versionId), [v.id, 'pv_late'])
})

t.test('dropProject forgets the project\'s versions and reprices, not the override layer', async (t) => {
  const book = new PriceBook()
  book.addOverrideLayer({ rev: 0, created_at: 0, overrides: { 'gpt-4o': { input_mtok: 1, output_mtok: 3 } } })
  version(book, { rates: fillRates({ input: 2, output: 8 }) })
  book.addReprice({ id: 'rp', project: 'p', start: 0, end: JUL + 1, model: null, rev: book.nextRev(), created_at: 0 })
  t.equal(cost(book, { priceRev: 0 }).costNanos, 6_000_000, 'repriced onto the version')
  book.dropProject('p')
  t.same(book.versions('p'), [])
  t.equal(book.repriceEpoch('p'), 0)
  t.equal(cost(book, { priceRev: book.rev }).costNanos, 2_500_000, 'the override layer: 1000 × 1 + 500 × 3')
})

t.test('priceSource says where a price comes from (GET /prices)', async (t) => {
  const book = new PriceBook()
  book.addOverrideLayer({ rev: 0, created_at: 0, overrides: { 'openai/gpt-4': { input_mtok: 1, output_mtok: 3 } } })
  const v = version(book, { rates: fillRates({ input: 2, output: 8 }), effective_from: JUN })
  const s = book.priceSource('p', 'openai', 'gpt-4o-2024-08-06', JUL)
  t.match(s, { kind: 'version', version: { id: v.id }, match: 'family', rates: { input: 2, output: 8 } })
  t.match(book.priceSource('p', 'openai', 'gpt-4', JUL), { kind: 'override', key: 'openai/gpt-4', match: 'exact', layerRev: 0, rates: { input: 1, output: 3 } })
  t.match(book.priceSource('p', 'openai', 'gpt-4o', JUN - 1), { kind: 'genai-prices', providerId: 'openai', modelId: 'gpt-4o', rates: { input: 2.5, output: 10, cached_input: 1.25 } })
  t.same(book.priceSource('p', 'acme', 'no-such-model', JUL), { kind: 'unpriced' })
  t.same(book.entries('p'), [{ provider: 'openai', model: 'gpt-4o' }])
  // genai-prices' Anthropic cache-write rate: claude-3-5-sonnet 3 / 0.3 / 3.75 / 15
  t.same(genaiRates('anthropic', 'claude-3-5-sonnet-20241022', JUL), { input: 3, output: 15, cached_input: 0.3, cache_write: 3.75, reasoning: 15 })
  t.equal(genaiRates('acme', 'no-such-model', JUL), null)
})

t.test('stepAt picks the last step whose from <= ts', async (t) => {
  const r = fillRates({ input: 1, output: 1 })
  const s = [-Infinity, MAR, JUN].map((from, i) => ({ from, rates: r, source: 'override' as const, versionId: `v${i}`, entryProvider: '*', entryModel: 'm' }))
  t.equal(stepAt(s, 0)?.versionId, 'v0')
  t.equal(stepAt(s, MAR)?.versionId, 'v1')
  t.equal(stepAt(s, JUN - 1)?.versionId, 'v1')
  t.equal(stepAt(s.slice(1), 0), undefined)
})

t.test('property: the memoised schedule prices as a direct reading of the rules, any versions, revs, times', async (t) => {
  // The reference reads the definition straight: among entries matching the event with a
  // version at rev <= R and effective_from <= ts, the best-ranked (ties: longer model name, then
  // name) prices it with its newest effective_from <= ts (ties: newest rev); else the override
  // layer at R; else genai-prices.
  const models = ['gpt-4o', 'gpt-4o-2024-08-06', 'gpt-4']
  const providers = ['openai', '*']
  const times = [0, MAR, JUN, JUL]
  const vArb = fc.record({ provider: fc.constantFrom(...providers), model: fc.constantFrom(...models), from: fc.constantFrom(...times), input: fc.integer({ min: 1, max: 9 }), revStep: fc.nat({ max: 1 }) })
  fc.assert(
    fc.property(fc.array(vArb, { maxLength: 8 }), fc.constantFrom(...models), fc.constantFrom(...times.flatMap((x) => [x - 1, x, x + 1])), fc.nat({ max: 10 }), (vs, model, ts, askRev) => {
      const book = new PriceBook()
      book.addOverrideLayer({ rev: 0, created_at: 0, overrides: { 'gpt-4': { input_mtok: 100, output_mtok: 100 } } })
      const all: PriceVersion[] = []
      vs.forEach((x, i) => {
        const rev = x.revStep === 0 ? book.nextRev() : Math.max(1, book.rev)
        const v: PriceVersion = { id: `pv_${i}`, project: 'p', provider: x.provider, model: x.model, rates: fillRates({ input: x.input, output: x.input }), effective_from: x.from, created_at: 0, rev }
        book.addVersion(v)
        all.push(v)
      })
      const got = computeCost({ provider: 'openai', model, ts, promptTokens: 1e6, completionTokens: 0, cachedTokens: 0, reasoningTokens: 0, callerCost: null, schedule: book.schedule('p', 'openai', model, askRev) })
      let best: PriceVersion | undefined
      let bestKey: [number, number, string] | undefined
      for (const v of all) {
        if (v.rev > askRev || v.effective_from > ts) continue
        const rank = matchRank(v.provider, v.model, 'openai', model)
        if (rank === MATCH_NONE) continue
        const key: [number, number, string] = [rank, v.model.length, v.model]
        const better = bestKey === undefined || key[0] > bestKey[0] || (key[0] === bestKey[0] && (key[1] > bestKey[1] || (key[1] === bestKey[1] && key[2] < bestKey[2])))
        const sameEntry = bestKey !== undefined && best !== undefined && best.provider === v.provider && best.model === v.model
        if (better || (sameEntry && (v.effective_from > best!.effective_from || (v.effective_from === best!.effective_from && v.rev >= best!.rev)))) {
          best = v
          bestKey = key
        }
      }
      const expected = best !== undefined ? best.rates.input * 1e6 * 1000 : model === 'gpt-4' ? 100e9 : computeCost({ provider: 'openai', model, ts, promptTokens: 1e6, completionTokens: 0, cachedTokens: 0, reasoningTokens: 0, callerCost: null }).costNanos
      if (got.costNanos !== expected) throw new Error(`got ${got.costNanos}, expected ${expected}`)
    }),
    { numRuns: 1500 }
  )
  t.pass('no counterexample')
})
