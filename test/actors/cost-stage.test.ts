import t from 'tap'
import { CostStage, DEFAULT_INLINE_BELOW, type Pricer } from '../../src/actors/cost-stage.js'
import { encodeBatch, priceBatch, type PriceBatch, type PriceResult } from '../../src/pricing/batch.js'
import type { PricedEvent, StoredEvent } from '../../src/events.js'
import { PriceBook } from '../../src/pricing/book.js'
import type { PriceOverrides } from '../../src/pricing/compute-cost.js'

/** A price book of one configuration layer (what the engine builds from LLMSCOPE_PRICE_OVERRIDES). */
function bookOf(overrides: PriceOverrides): PriceBook {
  const book = new PriceBook()
  book.addOverrideLayer({ rev: 0, created_at: 0, overrides })
  return book
}

function ev(seq: number, over: Partial<StoredEvent> = {}): StoredEvent {
  return { seq, id: `evt_${seq}`, ts: 1_700_000_000_000 + seq, recv: 0, model: 'gpt-4', provider: 'openai', prompt: 1000, completion: 500, total: 1500, cached: 0, reasoning: 0, latency: 10, ttft: null, error: false, cost: null, meta: null, project: 'default', user: null, session: null, tags: null, ...over }
}

/** A pricer whose tasks finish when the test says, in any order. */
function manualPricer() {
  const pending: Array<{ batch: PriceBatch; resolve: (r: PriceResult) => void; reject: (e: Error) => void }> = []
  const pricer: Pricer = { price: (batch) => new Promise((resolve, reject) => pending.push({ batch, resolve, reject })) }
  return { pricer, pending }
}

/** The batch the stage sends for these events (same fields as cost-stage's inputOf). */
const encodeBatchOf = (evs: StoredEvent[]) =>
  encodeBatch(evs.map((e) => ({ provider: e.provider, model: e.model, ts: e.ts, promptTokens: e.prompt, completionTokens: e.completion, cachedTokens: e.cached, reasoningTokens: e.reasoning, callerCost: e.cost })))

const tick = () => new Promise((r) => setImmediate(r))
/** Turns of the event loop until `cond` holds (the stage may yield between messages on a busy machine); 5 s at most. */
async function until(cond: () => boolean): Promise<void> {
  const deadline = Date.now() + 5000
  while (!cond() && Date.now() < deadline) await tick()
}

t.test('chunks priced out of order are emitted in log order', async (t) => {
  const { pricer, pending } = manualPricer()
  const emitted: number[][] = []
  const stage = new CostStage({ chunkSize: 2, maxInFlight: 4, pricer, inlineBelow: 0, book: new PriceBook(), emit: (evs) => emitted.push(evs.map((e) => e.seq)) })
  stage.send({ type: 'events', events: [ev(0), ev(1), ev(2), ev(3), ev(4)] })
  await until(() => pending.length >= 3)
  t.equal(pending.length, 3, 'three chunks of ≤ 2 in flight')
  t.equal(stage.pendingEvents, 5)
  pending[2].resolve(priceBatch(pending[2].batch))
  pending[1].resolve(priceBatch(pending[1].batch))
  await tick()
  t.same(emitted, [], 'nothing passes the unfinished head')
  pending[0].resolve(priceBatch(pending[0].batch))
  await until(() => emitted.length >= 3)
  t.same(emitted, [[0, 1], [2, 3], [4]])
  t.equal(stage.emittedThrough, 4)
  t.equal(stage.pendingEvents, 0)
})

t.test('maxInFlight bounds running tasks; the rest wait', async (t) => {
  const { pricer, pending } = manualPricer()
  const stage = new CostStage({ chunkSize: 1, maxInFlight: 2, pricer, inlineBelow: 0, book: new PriceBook(), emit: () => {} })
  stage.send({ type: 'events', events: [ev(0), ev(1), ev(2), ev(3)] })
  await until(() => pending.length >= 2)
  t.equal(pending.length, 2)
  pending[0].resolve(priceBatch(pending[0].batch))
  await until(() => pending.length >= 3)
  t.equal(pending.length, 3, 'a finished task makes room for the next')
})

t.test('a failed worker task is priced inline: no event is lost and the price is the same', async (t) => {
  const { pricer, pending } = manualPricer()
  const out: PricedEvent[] = []
  const stage = new CostStage({ chunkSize: 10, maxInFlight: 2, pricer, inlineBelow: 0, book: new PriceBook(), emit: (evs) => out.push(...evs) })
  stage.send({ type: 'events', events: [ev(0), ev(1, { model: 'mystery', provider: 'unknown' }), ev(2, { cost: 0.5 })] })
  await until(() => pending.length >= 1)
  pending[0].reject(new Error('worker died'))
  await until(() => out.length >= 3)
  t.same(out.map((e) => [e.seq, e.costNanos, e.unpriced]), [[0, 60_000_000, false], [1, 0, true], [2, 500_000_000, false]])
  t.equal(stage.costStats.workerFailures, 1)
})

t.test('a barrier runs after every earlier event was emitted and before later ones', async (t) => {
  const { pricer, pending } = manualPricer()
  const log: string[] = []
  const stage = new CostStage({ chunkSize: 10, maxInFlight: 4, pricer, inlineBelow: 0, book: new PriceBook(), emit: (evs) => log.push(`emit ${evs[0].seq}`) })
  stage.send({ type: 'events', events: [ev(0)] })
  stage.send({ type: 'barrier', run: () => void log.push('barrier') })
  stage.send({ type: 'events', events: [ev(1)] })
  await until(() => pending.length >= 2)
  t.equal(pending.length, 2, 'pricing runs ahead of the barrier')
  pending[1].resolve(priceBatch(pending[1].batch))
  await tick()
  t.same(log, [])
  pending[0].resolve(priceBatch(pending[0].batch))
  await until(() => log.length >= 3)
  t.same(log, ['emit 0', 'barrier', 'emit 1'])
})

t.test('without a pool, pricing runs inline; settled() waits for everything', async (t) => {
  const out: number[] = []
  const stage = new CostStage({ chunkSize: 3, maxInFlight: 1, pricer: null, book: bookOf({ 'gpt-4': { input_mtok: 1, output_mtok: 1 } }), emit: (evs) => out.push(...evs.map((e) => e.costNanos)) })
  stage.send({ type: 'events', events: [ev(0), ev(1)] })
  await stage.settled()
  t.same(out, [1_500_000, 1_500_000], 'the override prices 1500 tokens at $1/M')
  t.throws(() => new CostStage({ chunkSize: 0, maxInFlight: 1, pricer: null, book: new PriceBook(), emit: () => {} }), /chunkSize/)
  t.throws(() => new CostStage({ chunkSize: 1, maxInFlight: 0, pricer: null, book: new PriceBook(), emit: () => {} }), /maxInFlight/)
})

t.test('while every slot is busy, new events join the waiting chunk (few large tasks, order kept)', async (t) => {
  const { pricer, pending } = manualPricer()
  const emitted: number[][] = []
  const stage = new CostStage({ chunkSize: 3, maxInFlight: 1, pricer, inlineBelow: 0, book: new PriceBook(), emit: (evs) => emitted.push(evs.map((e) => e.seq)) })
  stage.send({ type: 'events', events: [ev(0)] })
  await until(() => pending.length >= 1)
  for (const seq of [1, 2, 3, 4]) stage.send({ type: 'events', events: [ev(seq)] })
  await until(() => pending.length >= 1)
  t.equal(pending.length, 1, 'one task running, the rest waiting')
  pending[0].resolve(priceBatch(pending[0].batch))
  await until(() => pending.length >= 2)
  t.equal(pending.length, 2)
  t.equal(pending[1].batch.ts.length, 3, 'the next task holds three merged events (the chunk size)')
  pending[1].resolve(priceBatch(pending[1].batch))
  await until(() => pending.length >= 3)
  pending[2].resolve(priceBatch(pending[2].batch))
  await until(() => emitted.length >= 3)
  t.same(emitted, [[0], [1, 2, 3], [4]])
})

t.test('chunks smaller than inlineBelow are priced inline, larger ones by the pricer; log order kept', async (t) => {
  const { pricer, pending } = manualPricer()
  const emitted: number[][] = []
  const out: PricedEvent[] = []
  const stage = new CostStage({ chunkSize: 10, maxInFlight: 2, pricer, inlineBelow: 3, book: new PriceBook(), emit: (evs) => { emitted.push(evs.map((e) => e.seq)); out.push(...evs) } })
  stage.send({ type: 'events', events: [ev(0), ev(1), ev(2)] })
  stage.send({ type: 'events', events: [ev(3), ev(4)] })
  await until(() => pending.length >= 1)
  t.equal(pending.length, 1, 'only the three-event chunk became a task')
  t.same(emitted, [], 'the inline chunk waits behind the running task')
  pending[0].resolve(priceBatch(pending[0].batch))
  await until(() => emitted.length >= 2)
  t.same(emitted, [[0, 1, 2], [3, 4]])
  const inline = priceBatch(encodeBatchOf([ev(3), ev(4)]))
  t.same(out.slice(3).map((e) => e.costNanos), Array.from(inline.costNanos), 'inline prices equal the pricer\'s function')
})

t.test('the default prices small chunks inline even with a pricer', async (t) => {
  // 1024 since the WebSocket bench's profile (a worker task per 50–200-event chunk cost the main
  // thread ~15× the pricing it moved off it, and a thread hop on the live stream's path).
  t.equal(DEFAULT_INLINE_BELOW, 1024)
  const { pricer, pending } = manualPricer()
  const out: number[] = []
  const stage = new CostStage({ chunkSize: 2048, maxInFlight: 2, pricer, book: new PriceBook(), emit: (evs) => out.push(...evs.map((e) => e.seq)) })
  stage.send({ type: 'events', events: [ev(0)] })
  await stage.settled()
  t.equal(pending.length, 0, 'no task for one event')
  t.same(out, [0])
  // A live-stream sized chunk (two grouped 50-event POSTs and more) is priced inline too.
  stage.send({ type: 'events', events: Array.from({ length: 200 }, (_, i) => ev(1 + i)) })
  await stage.settled()
  t.equal(pending.length, 0, 'no task for a 200-event chunk')
  t.equal(out.length, 201)
  // From DEFAULT_INLINE_BELOW events on, the chunk goes to the pricer.
  stage.send({ type: 'events', events: Array.from({ length: 1024 }, (_, i) => ev(201 + i)) })
  await until(() => pending.length === 1)
  t.equal(pending.length, 1, 'one task for a 1024-event chunk')
  t.equal(out.length, 201, 'nothing emitted before the task answers')
  pending[0].resolve(priceBatch(pending[0].batch))
  await stage.settled()
  t.equal(out.length, 1225)
  t.throws(() => new CostStage({ chunkSize: 1, maxInFlight: 1, pricer: null, inlineBelow: -1, book: new PriceBook(), emit: () => {} }), /inlineBelow/)
})

t.test('events count as pending from the send, before the mailbox is drained, and not after a destroy', async (t) => {
  const { pricer, pending } = manualPricer()
  const stage = new CostStage({ chunkSize: 2, maxInFlight: 1, pricer, inlineBelow: 0, book: new PriceBook(), emit: () => {} })
  t.ok(stage.send({ type: 'events', events: [ev(0), ev(1), ev(2)] }))
  t.equal(stage.pendingEvents, 3, 'counted at the send (a loop that does not yield sees what it queued)')
  t.ok(stage.send({ type: 'events', events: [ev(3)] }))
  t.equal(stage.pendingEvents, 4)
  await until(() => pending.length >= 1)
  t.equal(stage.pendingEvents, 4, 'taken from the mailbox: still pending until emitted')
  pending[0].resolve(priceBatch(pending[0].batch))
  await until(() => stage.pendingEvents < 4)
  t.equal(stage.pendingEvents, 2, 'the first chunk emitted')
  t.ok(stage.send({ type: 'events', events: [ev(4), ev(5)] }))
  await stage.destroy()
  t.ok(stage.pendingEvents <= 2, 'the mailbox dropped by destroy is no longer pending')
})
