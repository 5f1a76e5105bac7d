/**
 * Regression, "what a new user found wrong" #1 (issue 14): after a restart with a changed
 * LLMSCOPE_PRICE_OVERRIDES, GET /events/:id and the since_seq replay showed an old event at the
 * new price while /analytics/costs kept the old one. With the book, the configuration is an
 * override layer from its revision on: an old event has ONE cost everywhere (the old one),
 * whether the restart restores a snapshot or replays the log; new events take the new price.
 */
import t, { type Test } from 'tap'
import type { AddressInfo } from 'node:net'
import { WebSocket } from 'ws'
import { adminHeaders, makeApp, type TestApp } from '../helpers/app.js'

const OLD = JSON.stringify({ 'gpt-4o': { input_mtok: 2.5, output_mtok: 10 } })
const NEW = JSON.stringify({ 'gpt-4o': { input_mtok: 5, output_mtok: 20 } })
const body = { timestamp: '2026-03-01T12:00:00.000Z', model: 'gpt-4o', provider: 'openai', prompt_tokens: 1000, completion_tokens: 500, latency_ms: 10 }
// 1000 × $2.50 + 500 × $10 per 1M, and at the new prices 1000 × $5 + 500 × $20.
const OLD_COST = 0.0075
const NEW_COST = 0.015

async function replayed(t: Test, a: TestApp, n: number): Promise<number[]> {
  await a.app.listen({ port: 0, host: '127.0.0.1' })
  const ws = new WebSocket(`ws://127.0.0.1:${(a.app.server.address() as AddressInfo).port}/ws?since_seq=-1`, { headers: adminHeaders })
  t.teardown(() => ws.terminate())
  const costs: number[] = []
  ws.on('message', (d) => {
    const m = JSON.parse(d.toString())
    if (m.type === 'event') costs.push(m.cost)
  })
  const end = Date.now() + 30_000
  while (costs.length < n && Date.now() < end) await new Promise((r) => setTimeout(r, 10))
  return costs
}

async function everyAnswer(t: Test, a: TestApp, id: string, n: number) {
  const ev = (await a.app.inject({ url: `/events/${id}`, headers: adminHeaders })).json()
  const costs = (await a.app.inject({ url: '/analytics/costs', headers: adminHeaders })).json().breakdown
  const page = (await a.app.inject({ url: '/events?sort=cost', headers: adminHeaders })).json().events
  return { event: ev.cost, costs: costs[0].total_cost, search: page.find((e: { event_id?: string; id?: string }) => (e.event_id ?? e.id) === id)?.cost, replay: (await replayed(t, a, n))[0] }
}

for (const restart of ['graceful (snapshot restored)', 'crash (log replayed)'] as const) {
  t.test(`a changed LLMSCOPE_PRICE_OVERRIDES leaves an old event one cost everywhere: ${restart}`, async (t) => {
    const dir = t.testdir()
    const a = await makeApp(t, { dir, inlinePricing: true, env: { LLMSCOPE_PRICE_OVERRIDES: OLD } })
    const r = await a.app.inject({ method: 'POST', url: '/events/ingest', headers: adminHeaders, payload: body })
    const id = r.json().event_id
    await a.engine.sync()
    if (restart === 'graceful (snapshot restored)') await a.close()
    else await a.engine.destroy()

    const b = await makeApp(t, { dir, inlinePricing: true, env: { LLMSCOPE_PRICE_OVERRIDES: NEW } })
    t.equal(b.engine.recovery?.snapshot, restart === 'graceful (snapshot restored)' ? 'loaded' : 'none')
    t.same(await everyAnswer(t, b, id, 1), { event: OLD_COST, costs: OLD_COST, search: OLD_COST, replay: OLD_COST }, 'GET /events/:id, /analytics/costs, search and since_seq agree on the old cost')
    const fresh = (await b.app.inject({ method: 'POST', url: '/events/ingest', headers: adminHeaders, payload: body })).json().event_id
    t.equal((await b.app.inject({ url: `/events/${fresh}`, headers: adminHeaders })).json().cost, NEW_COST, 'a new event takes the new configuration')
    t.equal((await b.app.inject({ url: '/analytics/metrics', headers: adminHeaders })).json().total_cost, OLD_COST + NEW_COST)
    t.same(b.engine.priceStore.layers().map((l) => l.rev), [0, 1], 'one layer per configuration, the first at revision 0')
  })
}

t.test('the same configuration again adds no layer; going back to it adds one (events keep theirs)', async (t) => {
  const dir = t.testdir()
  let a = await makeApp(t, { dir, inlinePricing: true, env: { LLMSCOPE_PRICE_OVERRIDES: OLD } })
  await a.close()
  a = await makeApp(t, { dir, inlinePricing: true, env: { LLMSCOPE_PRICE_OVERRIDES: OLD } })
  t.same(a.engine.priceStore.layers().map((l) => l.rev), [0])
  const id = (await a.app.inject({ method: 'POST', url: '/events/ingest', headers: adminHeaders, payload: body })).json().event_id
  await a.close()
  a = await makeApp(t, { dir, inlinePricing: true, env: { LLMSCOPE_PRICE_OVERRIDES: NEW } })
  const id2 = (await a.app.inject({ method: 'POST', url: '/events/ingest', headers: adminHeaders, payload: body })).json().event_id
  await a.close()
  a = await makeApp(t, { dir, inlinePricing: true, env: { LLMSCOPE_PRICE_OVERRIDES: OLD } })
  t.same(a.engine.priceStore.layers().map((l) => l.rev), [0, 1, 2])
  t.equal((await a.app.inject({ url: `/events/${id}`, headers: adminHeaders })).json().cost, OLD_COST)
  t.equal((await a.app.inject({ url: `/events/${id2}`, headers: adminHeaders })).json().cost, NEW_COST)
  t.equal((await a.app.inject({ url: '/analytics/metrics', headers: adminHeaders })).json().total_cost, OLD_COST + NEW_COST)
})
