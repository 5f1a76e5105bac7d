/**
 * Budgets through the whole server (DESIGN §8): /budgets CRUD and its 400s, spent / remaining /
 * forecast for the current period in the budget's zone, grouped budgets (and their cap), one
 * alert event per threshold, period and group — in /alerts/events, on /ws and POSTed to the
 * webhook — never again after a restart or a kill -9, at once on create and PATCH, and project
 * isolation. A manual clock; no alert timer (ticks are sent by hand).
 */
import t, { type Test } from 'tap'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import WebSocket from 'ws'
import { loadConfig } from '../../src/config.js'
import { buildApp, type Built } from '../../src/app.js'
import { ManualClock } from '../../src/clock.js'
import { ADMIN_KEY, READ_KEY, adminHeaders, readHeaders, event } from '../helpers/app.js'

const T0 = Date.parse('2026-04-01T12:00:00.000Z')
const B_ADMIN = 'test-b-admin-key-0001'
const bHeaders = { 'x-api-key': B_ADMIN }

async function build(t: Test, clock: ManualClock, dir = t.testdir()): Promise<Built & { dir: string }> {
  const config = loadConfig({ LLMSCOPE_DATA_DIR: dir, LLMSCOPE_API_KEYS: `${ADMIN_KEY},${READ_KEY}:read,${B_ADMIN}:admin:proj-b`, LLMSCOPE_LOG_LEVEL: 'silent' })
  const built = await buildApp(config, { logger: false, clock, inlinePricing: true, alertTickMs: 0, webhook: { backoffMs: 5, timeoutMs: 5000 } })
  await built.engine.recover()
  await built.engine.budgetEvaluator.idle()
  t.teardown(() => built.app.close())
  return { ...built, dir }
}

async function ingest(b: Built, events: object[], headers: Record<string, string> = adminHeaders): Promise<void> {
  const res = await b.app.inject({ method: 'POST', url: '/events/batch', headers, payload: events })
  if (res.statusCode !== 202) throw new Error(res.body)
}

/** One alert tick's budget pass, and every firing it made committed and delivered. */
async function tick(b: Built): Promise<void> {
  await b.engine.budgetEvaluator.tick()
  await b.engine.budgetEvaluator.idle()
}

async function create(b: Built, body: object, headers: Record<string, string> = adminHeaders) {
  const res = await b.app.inject({ method: 'POST', url: '/budgets', headers, payload: body })
  if (res.statusCode !== 201) throw new Error(res.body)
  return res.json()
}

async function budgetEvents(b: Built, headers: Record<string, string> = readHeaders) {
  const res = await b.app.inject({ url: '/alerts/events?limit=1000', headers })
  if (res.statusCode !== 200) throw new Error(res.body)
  return (res.json().events as Array<Record<string, unknown>>).filter((e) => e.type === 'budget').reverse()
}

/** A webhook receiver on 127.0.0.1 answering 200. */
async function receiver(t: Test) {
  const hits: Array<Record<string, unknown>> = []
  const server = createServer((req, res) => {
    let data = ''
    req.on('data', (c: Buffer) => (data += c.toString()))
    req.on('end', () => {
      hits.push(JSON.parse(data))
      res.writeHead(200).end('ok')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, hits }
}

const iso = (ms: number) => new Date(ms).toISOString()

t.test('400s name the field; PATCH needs a field; read keys read, admin keys write', async (t) => {
  const b = await build(t, new ManualClock(T0))
  const bad = async (body: unknown, path: string) => {
    const res = await b.app.inject({ method: 'POST', url: '/budgets', headers: adminHeaders, payload: body as object })
    t.equal(res.statusCode, 400, `${JSON.stringify(body)} → 400`)
    t.ok(res.json().details.some((d: { path: string }) => d.path === path), `names ${path}: ${res.body}`)
  }
  const ok = { name: 'n', amount: 10, period: 'day' }
  await bad({ name: 'n', period: 'day' }, 'amount')
  await bad({ ...ok, amount: 0 }, 'amount')
  await bad({ ...ok, amount: -5 }, 'amount')
  await bad({ ...ok, period: 'year' }, 'period')
  await bad({ ...ok, timezone: 'Mars/Olympus_Mons' }, 'timezone')
  await bad({ ...ok, timezone: '+01:00' }, 'timezone')
  await bad({ ...ok, thresholds: [0.5, 0] }, 'thresholds[1]')
  await bad({ ...ok, thresholds: [] }, 'thresholds')
  await bad({ ...ok, group_by: 'colour' }, 'group_by')
  await bad({ ...ok, filters: { colour: 'red' } }, 'filters.colour')
  await bad({ ...ok, webhook_url: 'ftp://example.com/x' }, 'webhook_url')
  await bad({ ...ok, name: '' }, 'name')
  const tz = await b.app.inject({ method: 'POST', url: '/budgets', headers: adminHeaders, payload: { ...ok, timezone: 'Nowhere/Land' } })
  t.match(tz.json().message, /timezone/, 'the message names timezone too')
  t.equal((await b.app.inject({ method: 'POST', url: '/budgets', headers: readHeaders, payload: ok })).statusCode, 403, 'a read key cannot create')
  const created = await create(b, ok)
  t.match(created.id, /^bud_/)
  t.same(created.thresholds, [0.5, 0.8, 1], 'default thresholds')
  t.equal(created.timezone, 'UTC', 'default zone')
  const patchEmpty = await b.app.inject({ method: 'PATCH', url: `/budgets/${created.id}`, headers: adminHeaders, payload: {} })
  t.equal(patchEmpty.statusCode, 400)
  const patchTz = await b.app.inject({ method: 'PATCH', url: `/budgets/${created.id}`, headers: adminHeaders, payload: { timezone: 'Not/AZone' } })
  t.equal(patchTz.statusCode, 400)
  t.equal(patchTz.json().details[0].path, 'timezone')
  t.equal((await b.app.inject({ method: 'PATCH', url: `/budgets/${created.id}`, headers: readHeaders, payload: { amount: 5 } })).statusCode, 403)
  t.equal((await b.app.inject({ method: 'DELETE', url: `/budgets/${created.id}`, headers: readHeaders })).statusCode, 403)
  t.equal((await b.app.inject({ url: `/budgets/${created.id}`, headers: readHeaders })).statusCode, 200, 'a read key reads')
  // Thresholds are kept sorted and distinct; the zone in its canonical spelling.
  const sorted = await create(b, { ...ok, thresholds: [1, 0.25, 1], timezone: 'europe/berlin' })
  t.same(sorted.thresholds, [0.25, 1])
  t.equal(sorted.timezone, 'Europe/Berlin')
})

t.test('spent, remaining and forecast: events of [period_start, now) matching the filters, in the budget zone', async (t) => {
  const clock = new ManualClock(T0)
  const b = await build(t, clock)
  await ingest(b, [
    event({ timestamp: '2026-04-01T00:00:00.000Z', cost: 2 }), // first instant of the UTC day
    event({ timestamp: '2026-04-01T11:59:59.999Z', cost: 1 }),
    event({ timestamp: '2026-03-31T23:59:59.999Z', cost: 5 }), // yesterday (UTC)
    event({ timestamp: '2026-04-01T06:00:00.000Z', model: 'claude-3-haiku', provider: 'anthropic', cost: 4 }) // another model
  ])
  const utc = await create(b, { name: 'gpt-4 today', amount: 10, period: 'day', filters: { model: 'gpt-4' } })
  t.match(utc, { name: 'gpt-4 today', amount: 10, period: 'day', timezone: 'UTC', filters: { model: 'gpt-4' }, group_by: null, webhook_url: null, project: 'default' })
  t.match(utc, { spent: 3, remaining: 7, forecast: 6, period_start: '2026-04-01T00:00:00.000Z', period_end: '2026-04-02T00:00:00.000Z' }, 'half the day elapsed: forecast twice the spend')
  t.notOk('groups' in utc, 'no groups without group_by')
  // In New York (EDT, UTC−4) the day began at 04:00 UTC: the 00:00 UTC event is yesterday's there, the 23:59 one too.
  const ny = await create(b, { name: 'NY', amount: 2, period: 'day', timezone: 'America/New_York' })
  t.match(ny, { spent: 5, remaining: -3, period_start: '2026-04-01T04:00:00.000Z', period_end: '2026-04-02T04:00:00.000Z' }, 'remaining goes negative')
  t.equal(ny.forecast, 15, '8 of 24 hours elapsed: three times')
  // An event at exactly `now` is not spent yet; one ms later it is.
  await ingest(b, [event({ timestamp: iso(T0), cost: 1 })])
  t.equal((await b.app.inject({ url: `/budgets/${utc.id}`, headers: readHeaders })).json().spent, 3)
  clock.advance(1)
  t.equal((await b.app.inject({ url: `/budgets/${utc.id}`, headers: readHeaders })).json().spent, 4)
  // The list holds both (oldest first; these two were created at the same instant: ties by id).
  const list = (await b.app.inject({ url: '/budgets', headers: readHeaders })).json().budgets
  t.same(list.map((x: { id: string }) => x.id), [utc.id, ny.id].sort())
  t.same(list.find((x: { id: string }) => x.id === utc.id).spent, 4)
  // The next day: a new period, nothing spent yet; forecast defined at elapsed 0.
  clock.set(Date.parse('2026-04-02T00:00:00.000Z'))
  t.match((await b.app.inject({ url: `/budgets/${utc.id}`, headers: readHeaders })).json(), { spent: 0, remaining: 10, forecast: 0, period_start: '2026-04-02T00:00:00.000Z' })
})

t.test('a DST day in America/New_York is 23 hours: forecast over 23 hours', async (t) => {
  // 2026-03-08 local: 05:00Z → 04:00Z next day. Now 16:30Z = 11.5 h in.
  const clock = new ManualClock(Date.parse('2026-03-08T16:30:00.000Z'))
  const b = await build(t, clock)
  await ingest(b, [event({ timestamp: '2026-03-08T05:00:00.000Z', cost: 3 }), event({ timestamp: '2026-03-08T04:59:59.999Z', cost: 100 })])
  const x = await create(b, { name: 'dst', amount: 10, period: 'day', timezone: 'America/New_York' })
  t.match(x, { spent: 3, forecast: 6, period_start: '2026-03-08T05:00:00.000Z', period_end: '2026-03-09T04:00:00.000Z' })
})

t.test('each threshold fires once per period: /alerts/events, again only in the next period, never after a restart or kill -9', async (t) => {
  const clock = new ManualClock(T0)
  const dir = t.testdir()
  let b = await build(t, clock, dir)
  const bud = await create(b, { name: 'daily', amount: 10, period: 'day' })
  await ingest(b, [event({ timestamp: '2026-04-01T01:00:00.000Z', cost: 4 })])
  await tick(b)
  t.same(await budgetEvents(b), [], '40%: nothing')
  await ingest(b, [event({ timestamp: '2026-04-01T02:00:00.000Z', cost: 1 })])
  await tick(b)
  await tick(b)
  let evs = await budgetEvents(b)
  t.equal(evs.length, 1, '50% reached: one event, however many ticks')
  t.match(evs[0], { type: 'budget', project: 'default', budget_id: bud.id, name: 'daily', threshold: 0.5, spent: 5, amount: 10, period_start: '2026-04-01T00:00:00.000Z', period_end: '2026-04-02T00:00:00.000Z', group_by: null, group: null, at: iso(T0), delivery: { status: 'none' } })
  t.match(evs[0].id, /^aev_/)
  // One batch past two thresholds: both fire, in order.
  await ingest(b, [event({ timestamp: '2026-04-01T03:00:00.000Z', cost: 6 })])
  await tick(b)
  evs = await budgetEvents(b)
  t.same(evs.map((e) => e.threshold), [0.5, 0.8, 1])
  t.same(evs.map((e) => e.spent), [5, 11, 11])
  // A graceful restart: nothing fires again.
  await b.app.close()
  b = await build(t, clock, dir)
  await tick(b)
  t.same((await budgetEvents(b)).map((e) => e.threshold), [0.5, 0.8, 1], 'after a restart: the same three')
  // kill -9: the engine stops without a final snapshot or drain; the fired records were committed with their events.
  await b.engine.destroy()
  await b.app.close()
  b = await build(t, clock, dir)
  await tick(b)
  t.equal((await budgetEvents(b)).length, 3, 'after a kill -9: the same three')
  t.equal(b.engine.budgets.firedCount, 3)
  // The next period: the same spend pattern fires again, with the new period_start; old fired records are pruned.
  clock.set(Date.parse('2026-04-02T12:00:00.000Z'))
  await ingest(b, [event({ timestamp: '2026-04-02T01:00:00.000Z', cost: 5 })])
  await tick(b)
  evs = await budgetEvents(b)
  t.equal(evs.length, 4)
  t.match(evs[3], { threshold: 0.5, spent: 5, period_start: '2026-04-02T00:00:00.000Z' })
  t.equal(b.engine.budgets.firedCount, 1, "yesterday's fired records are gone")
  // Deleting the budget keeps its history; a deleted budget no longer evaluates.
  t.equal((await b.app.inject({ method: 'DELETE', url: `/budgets/${bud.id}`, headers: adminHeaders })).statusCode, 204)
  t.equal((await b.app.inject({ url: `/budgets/${bud.id}`, headers: readHeaders })).statusCode, 404)
  t.equal((await b.app.inject({ method: 'DELETE', url: `/budgets/${bud.id}`, headers: adminHeaders })).statusCode, 404)
  t.equal((await budgetEvents(b)).length, 4)
  t.equal(b.engine.budgets.firedCount, 0)
})

t.test('created or PATCHed above a threshold: fires at once, once', async (t) => {
  const clock = new ManualClock(T0)
  const b = await build(t, clock)
  await ingest(b, [event({ timestamp: '2026-04-01T01:00:00.000Z', cost: 3 })])
  const over = await create(b, { name: 'small', amount: 4, period: 'day', thresholds: [0.5] })
  t.equal(over.spent, 3)
  t.match(await budgetEvents(b), [{ budget_id: over.id, threshold: 0.5, spent: 3 }], 'created above 50%: recorded before the answer')
  const big = await create(b, { name: 'big', amount: 100, period: 'day' })
  t.equal((await budgetEvents(b)).length, 1, '3% of 100: nothing')
  const patched = await b.app.inject({ method: 'PATCH', url: `/budgets/${big.id}`, headers: adminHeaders, payload: { amount: 3.5 } })
  t.equal(patched.statusCode, 200)
  t.match(patched.json(), { id: big.id, amount: 3.5, spent: 3, remaining: 0.5 })
  t.same((await budgetEvents(b)).filter((e) => e.budget_id === big.id).map((e) => e.threshold), [0.5, 0.8], 'PATCHed above 50% and 80%: both at once')
  // A second PATCH or a tick in the same period fires nothing more.
  await b.app.inject({ method: 'PATCH', url: `/budgets/${big.id}`, headers: adminHeaders, payload: { name: 'renamed' } })
  await tick(b)
  t.equal((await budgetEvents(b)).length, 3)
  // New thresholds are new keys: a lower one reached fires.
  await b.app.inject({ method: 'PATCH', url: `/budgets/${big.id}`, headers: adminHeaders, payload: { thresholds: [0.25, 0.5] } })
  t.same((await budgetEvents(b)).filter((e) => e.budget_id === big.id).map((e) => [e.threshold, e.name]), [[0.5, 'big'], [0.8, 'big'], [0.25, 'renamed']])
})

t.test('the webhook gets the budget body and /ws clients the {"type":"budget"} frame', async (t) => {
  const clock = new ManualClock(T0)
  const b = await build(t, clock)
  const r = await receiver(t)
  const address = await b.app.listen({ port: 0, host: '127.0.0.1' })
  const ws = new WebSocket(`${address.replace('http', 'ws')}/ws`, { headers: { 'x-api-key': READ_KEY } })
  t.teardown(() => ws.terminate())
  // A client of another project, to show it gets only its own project's frames.
  const wsB = new WebSocket(`${address.replace('http', 'ws')}/ws`, { headers: { 'x-api-key': B_ADMIN } })
  t.teardown(() => wsB.terminate())
  const frames: Array<Record<string, unknown>> = []
  const framesB: Array<Record<string, unknown>> = []
  for (const [socket, into] of [[ws, frames], [wsB, framesB]] as const) {
    socket.on('message', (data: Buffer) => {
      const m = JSON.parse(data.toString())
      if (m.type === 'budget') into.push(m)
    })
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve())
      socket.once('error', reject)
    })
  }
  const bud = await create(b, { name: 'hooked', amount: 2, period: 'month', thresholds: [1], webhook_url: r.url, timezone: 'Europe/Berlin' })
  await ingest(b, [event({ timestamp: '2026-04-01T01:00:00.000Z', cost: 2.5 })])
  await tick(b)
  const [ev] = await budgetEvents(b)
  t.same(r.hits, [
    {
      type: 'budget',
      budget_id: bud.id,
      name: 'hooked',
      threshold: 1,
      spent: 2.5,
      amount: 2,
      period_start: '2026-03-31T22:00:00.000Z',
      period_end: '2026-04-30T22:00:00.000Z',
      group_by: null,
      group: null,
      at: iso(T0),
      event_id: ev.id
    }
  ], 'one POST: the month of April in Berlin (CEST)')
  t.match(ev.delivery, { status: 'delivered', attempts: 1, status_code: 200 })
  // The frame is pushed after the record commits: wait for it (no fixed sleep).
  while (frames.length === 0) await new Promise((resolve) => setTimeout(resolve, 5))
  t.same(frames, [{ type: 'budget', project: 'default', budget_id: bud.id, name: 'hooked', threshold: 1, spent: 2.5, amount: 2, period_start: '2026-03-31T22:00:00.000Z', group: null, at: iso(T0), event_id: ev.id }])
  // proj-b's budget fires after default's: its client's first budget frame is its own (frames go out in order).
  await ingest(b, [event({ timestamp: '2026-04-01T01:00:00.000Z', cost: 1 })], bHeaders)
  const theirs = await create(b, { name: 'b', amount: 1, period: 'day', thresholds: [1] }, bHeaders)
  while (framesB.length === 0) await new Promise((resolve) => setTimeout(resolve, 5))
  t.same(framesB.map((f) => [f.project, f.budget_id]), [['proj-b', theirs.id]], "proj-b's client never saw default's frame")
})

t.test('grouped per user: groups with spent/remaining/forecast, a null group, thresholds per group', async (t) => {
  const clock = new ManualClock(T0)
  const b = await build(t, clock)
  await ingest(b, [
    event({ timestamp: '2026-04-01T01:00:00.000Z', user_id: 'u1', cost: 0.6 }),
    event({ timestamp: '2026-04-01T02:00:00.000Z', user_id: 'u2', cost: 0.2 }),
    event({ timestamp: '2026-04-01T03:00:00.000Z', cost: 0.1 })
  ])
  const bud = await create(b, { name: 'per user', amount: 1, period: 'day', group_by: 'user_id', thresholds: [0.5, 1] })
  t.match(bud, { spent: 0.9, remaining: 0.1, groups_capped: 0, other_spent: 0 })
  t.same(bud.groups, [
    { group: 'u1', spent: 0.6, remaining: 0.4, forecast: 1.2 },
    { group: 'u2', spent: 0.2, remaining: 0.8, forecast: 0.4 },
    { group: null, spent: 0.1, remaining: 0.9, forecast: 0.2 }
  ])
  t.match(await budgetEvents(b), [{ group_by: 'user_id', group: 'u1', threshold: 0.5, spent: 0.6 }], 'only u1 is past 50%')
  await ingest(b, [event({ timestamp: '2026-04-01T04:00:00.000Z', cost: 0.5 }), event({ timestamp: '2026-04-01T04:00:00.000Z', user_id: 'u1', cost: 0.4 })])
  await tick(b)
  await tick(b)
  t.same((await budgetEvents(b)).map((e) => [e.group, e.threshold]), [['u1', 0.5], [null, 0.5], ['u1', 1]], 'the null group fires as its own group; u1 reaches 100%')
})

t.test('grouped by tag and by metadata key', async (t) => {
  const clock = new ManualClock(T0)
  const b = await build(t, clock)
  await ingest(b, [
    event({ timestamp: '2026-04-01T01:00:00.000Z', tags: ['a', 'b'], metadata: { team: 'search' }, cost: 1 }),
    event({ timestamp: '2026-04-01T01:00:00.000Z', tags: ['b'], metadata: { team: 'ads' }, cost: 2 }),
    event({ timestamp: '2026-04-01T01:00:00.000Z', cost: 4 })
  ])
  const byTag = await create(b, { name: 'tags', amount: 100, period: 'week', group_by: 'tag' })
  t.equal(byTag.spent, 7, 'the total counts each event once')
  t.same(byTag.groups.map((g: { group: string | null; spent: number }) => [g.group, g.spent]), [[null, 4], ['b', 3], ['a', 1]])
  const byTeam = await create(b, { name: 'teams', amount: 100, period: 'week', group_by: 'metadata.team', filters: { tag: 'b' } })
  t.same(byTeam.groups.map((g: { group: string | null; spent: number }) => [g.group, g.spent]), [['ads', 2], ['search', 1]])
  t.equal(byTeam.spent, 3)
})

t.test('at most 1,000 groups: the most costly, the rest counted as capped; thresholds fire per tracked group', async (t) => {
  const clock = new ManualClock(T0)
  const b = await build(t, clock)
  // 1,003 users; user i spends (i+1) × $0.001.
  await ingest(b, Array.from({ length: 1003 }, (_, i) => event({ timestamp: '2026-04-01T01:00:00.000Z', user_id: `u${String(i).padStart(4, '0')}`, cost: (i + 1) / 1000 })))
  const bud = await create(b, { name: 'capped', amount: 1, period: 'day', group_by: 'user_id', thresholds: [0.5] })
  t.equal(bud.groups.length, 1000)
  t.equal(bud.groups_capped, 3, 'three users left out, counted')
  t.equal(bud.other_spent, 0.006, 'the three least costly users are past the cap')
  t.same(bud.groups[0], { group: 'u1002', spent: 1.003, remaining: -0.003, forecast: 2.006 })
  t.equal(bud.groups[999].group, 'u0003')
  t.equal(bud.spent, 503.506, 'the total is exact: (1003 × 1004 / 2) / 1000')
  const evs = await budgetEvents(b)
  // Users 499…1002 spent ≥ $0.5.
  t.equal(evs.length, 504)
  t.equal(new Set(evs.map((e) => e.group)).size, 504, 'one event per group')
  await tick(b)
  t.equal((await budgetEvents(b)).length, 504, 'none again')
  // With a filter (the rows path of the breakdown) the count is the same.
  const filtered = await create(b, { name: 'filtered', amount: 1000, period: 'day', group_by: 'user_id', filters: { model: 'gpt-4' } })
  t.match(filtered, { groups_capped: 3, other_spent: 0.006, spent: 503.506 })
})

t.test('project isolation: another project\'s budget is 404, its events are not listed; DELETE /projects removes budgets for good', async (t) => {
  const clock = new ManualClock(T0)
  const dir = t.testdir()
  let b = await build(t, clock, dir)
  const own = await create(b, { name: 'default one', amount: 1, period: 'day' })
  await ingest(b, [event({ timestamp: '2026-04-01T01:00:00.000Z', cost: 1 })])
  await ingest(b, [event({ timestamp: '2026-04-01T01:00:00.000Z', cost: 0.75 })], bHeaders)
  const theirs = await create(b, { name: 'b one', amount: 1, period: 'day' }, bHeaders)
  t.equal(theirs.project, 'proj-b')
  t.equal(theirs.spent, 0.75, "only proj-b's events")
  await tick(b)
  for (const [method, payload] of [['GET', undefined], ['PATCH', { amount: 2 }], ['DELETE', undefined]] as const) {
    const res = await b.app.inject({ method, url: `/budgets/${own.id}`, headers: bHeaders, payload })
    t.equal(res.statusCode, 404, `${method} of another project's budget`)
    t.notMatch(res.body, /default one/)
  }
  t.same((await b.app.inject({ url: '/budgets', headers: bHeaders })).json().budgets.map((x: { id: string }) => x.id), [theirs.id])
  t.same((await budgetEvents(b, bHeaders)).map((e) => e.budget_id), [theirs.id], "proj-b sees only its budget's event (0.5 at $0.75)")
  t.same((await budgetEvents(b)).map((e) => e.budget_id), [own.id, own.id, own.id])
  // The owner deletes proj-b: its budgets, fired records and budget alert events go.
  t.equal((await b.app.inject({ method: 'DELETE', url: '/projects/proj-b', headers: adminHeaders })).statusCode, 204)
  t.equal(b.engine.budgets.get(theirs.id), undefined)
  t.equal(b.engine.budgets.firedCount, 3, "only default's fired records remain")
  await b.app.close()
  b = await build(t, clock, dir)
  t.equal(b.engine.budgets.get(theirs.id), undefined, 'not back after a restart')
  t.equal(b.engine.budgets.size, 1)
  const created = await b.app.inject({ method: 'POST', url: '/projects', headers: adminHeaders, payload: { id: 'proj-b' } })
  t.equal(created.statusCode, 201)
  const asOwner = { ...adminHeaders, 'x-llmscope-project': 'proj-b' }
  t.same((await b.app.inject({ url: '/budgets', headers: asOwner })).json().budgets, [], 'the re-created project has no budget')
  t.same(await budgetEvents(b, asOwner), [], 'nor budget alert events')
})
