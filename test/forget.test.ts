/**
 * DELETE /events, single node: after the answer, every figure equals what an app that only
 * ever ingested the kept events answers (metrics, costs, timeseries, breakdowns by every
 * dimension with percentiles, dimensions, alert windows), deleted ids answer 404, since_seq
 * replays pass over them, a restart brings none back, and no byte of the deleted user's id is
 * left in the data dir. Then the route's contract: filters required, errors, scopes, project
 * isolation, the status route, events accepted during a delete are kept, ingestion flows.
 */
import t, { type Test } from 'tap'
import type { AddressInfo } from 'node:net'
import { WebSocket } from 'ws'
import { INGEST_KEY, READ_KEY } from './helpers/app.js'
import { HOUR, T0, USERS, admin, bytesIn, figures, forget, ingest, makeEvents, matches, openApp, qs, type ForgetFilter, type TestEvent } from './forget-helpers.js'

/** Ingests `events` into a fresh app and into a reference without the ones `f` matches; deletes in the first. */
async function deleteAndReference(t: Test, events: TestEvent[], filters: ForgetFilter[]) {
  const app = await openApp(t)
  const ids = await ingest(app, events)
  let kept = events.map((e, i) => ({ e, id: ids[i] }))
  const counts: number[] = []
  for (const f of filters) {
    const before = kept.length
    kept = kept.filter((k) => !matches(k.e, f))
    counts.push(await forget(app, f))
    t.equal(counts[counts.length - 1], before - kept.length, `deleted = matched for ${qs(f)}`)
  }
  const ref = await openApp(t)
  await ingest(ref, kept.map((k) => k.e))
  return { app, ref, ids, kept, keptIds: new Set(kept.map((k) => k.id)) }
}

t.test('delete one user: every figure equals a reference that never saw them; 404s; nothing left on disk; a restart brings nothing back', async (t) => {
  const events = makeEvents(1, 1500)
  const who = USERS[0]
  const { app, ref, ids, keptIds } = await deleteAndReference(t, events, [{ user_id: who }])
  t.ok(keptIds.size < ids.length && keptIds.size > 0)
  t.same(await figures(app), await figures(ref), 'every analytics answer equals the reference')
  for (const id of ids) {
    const r = await app.app.inject({ method: 'GET', url: `/events/${id}`, headers: admin() })
    if (r.statusCode !== (keptIds.has(id) ? 200 : 404)) t.fail(`GET /events/${id}: ${r.statusCode}`)
  }
  t.pass('GET /events/:id: 404 for each deleted id, 200 for each kept one')
  t.equal(bytesIn(app.dir, who), 0, 'no copy of the user id in any file of the data dir')
  t.ok(bytesIn(app.dir, USERS[1]) > 0, 'other users are still stored')

  await app.close()
  const again = await openApp(t, { dir: app.dir })
  t.same(await figures(again), await figures(ref), 'after a restart too')
  const deleted = ids.find((id) => !keptIds.has(id))!
  t.equal((await again.app.inject({ method: 'GET', url: `/events/${deleted}`, headers: admin() })).statusCode, 404)
  t.equal(await forget(again, { user_id: who }), 0, 'running it again finds nothing')
})

t.test('deletes by other filters, one after another: model + metadata, tag + status in a range, session, a value seen nowhere', async (t) => {
  const events = makeEvents(2, 1200)
  const filters: ForgetFilter[] = [
    { model: 'gpt-4o', 'metadata.feature': 'search' },
    { tag: 'eval', status: 'error', start_time: new Date(T0 + 40 * 60_000).toISOString(), end_time: new Date(T0 + 2 * HOUR + 5 * 60_000).toISOString() },
    { session_id: 's7' },
    { 'metadata.tier': '2', provider: 'anthropic' },
    { user_id: 'nobody-at-all' }
  ]
  const { app, ref } = await deleteAndReference(t, events, filters)
  t.same(await figures(app), await figures(ref))
})

t.test('since_seq replays pass over deleted events', async (t) => {
  const app = await openApp(t)
  const events = makeEvents(3, 300)
  const ids = await ingest(app, events)
  await forget(app, { user_id: USERS[2] })
  const kept = ids.filter((_, i) => !matches(events[i], { user_id: USERS[2] }))
  await app.app.listen({ port: 0, host: '127.0.0.1' })
  const url = `ws://127.0.0.1:${(app.app.server.address() as AddressInfo).port}/ws?since_seq=-1`
  const got: string[] = []
  const ws = new WebSocket(url, { headers: admin() })
  t.teardown(() => ws.terminate())
  ws.on('message', (d) => {
    const m = JSON.parse(d.toString())
    if (m.type === 'event') got.push(m.id)
  })
  const end = Date.now() + 60_000
  while (got.length < kept.length && Date.now() < end) await new Promise((r) => setTimeout(r, 10))
  // One more event, live: it arrives after the replay, so nothing replayed is still on its way.
  const [live] = await ingest(app, makeEvents(4, 1))
  while (!got.includes(live) && Date.now() < end) await new Promise((r) => setTimeout(r, 10))
  t.same(got, [...kept, live], 'the replay is exactly the kept events, in log order, then live')
})

t.test('alert windows count only the kept events', async (t) => {
  const now = T0 + 3 * HOUR
  const events = makeEvents(5, 800, { start: now - HOUR, hours: 1 })
  const who = USERS[3]
  const rules = [
    { name: 'spend', condition: 'cost_per_hour', threshold: 1e9, window_seconds: 3600 },
    { name: 'slow', condition: 'p95_latency', threshold: 1e9, window_seconds: 3600 },
    { name: 'avg', condition: 'avg_latency', threshold: 1e9, window_seconds: 1800, model: 'gpt-4o' },
    { name: 'errors', condition: 'error_rate', threshold: 1e9, window_seconds: 3600, filters: { 'metadata.feature': 'chat' } },
    { name: 'rate', condition: 'requests_per_minute', threshold: 1e9, window_seconds: 600 },
    { name: 'tokens', condition: 'tokens_per_minute', threshold: 1e9, window_seconds: 3600, filters: { user_id: who } }
  ]
  const values = async (app: Awaited<ReturnType<typeof openApp>>, ids: string[]) => {
    await app.engine.sync()
    app.clock.advance(1000)
    app.engine.topology.alerts.send({ type: 'tick' })
    await app.engine.topology.system.idle()
    return ids.map((id) => app.engine.ruleState(id)?.lastValue)
  }
  const make = async (app: Awaited<ReturnType<typeof openApp>>) => {
    const ids: string[] = []
    for (const rule of rules) {
      const r = await app.app.inject({ method: 'POST', url: '/alerts/rules', headers: admin(), payload: rule })
      if (r.statusCode !== 201) throw new Error(r.body)
      ids.push(r.json().id)
    }
    return ids
  }
  const app = await openApp(t, { now })
  const appRules = await make(app)
  await ingest(app, events)
  const before = await values(app, appRules)
  t.ok(before.every((v) => typeof v === 'number'), 'every rule evaluated')
  await forget(app, { user_id: who })
  const ref = await openApp(t, { now })
  const refRules = await make(ref)
  await ingest(ref, events.filter((e) => e.user_id !== who))
  const after = await values(app, appRules)
  t.same(after, await values(ref, refRules), 'each rule\'s window value equals the reference')
  t.notSame(after, before, 'and the delete changed them')
})

t.test('the route: a filter other than time is required; bad filters and scopes are refused; nothing is deleted', async (t) => {
  const app = await openApp(t)
  await ingest(app, makeEvents(6, 50))
  const del = (query: string, headers: Record<string, string> = admin()) => app.app.inject({ method: 'DELETE', url: `/events${query}`, headers })
  for (const q of ['', `?start_time=${new Date(T0).toISOString()}&end_time=${new Date(T0 + HOUR).toISOString()}`, '?project=default']) {
    const r = await del(q)
    t.equal(r.statusCode, 400, `DELETE /events${q}`)
    t.equal(r.json().code, 'LLMS_ERR_BAD_QUERY')
    t.match(r.json().message, /model, provider, status, user_id, session_id, tag, metadata\.KEY/)
    t.match(r.json().details, [{ path: '(query)', message: /at least one of model, provider, status, user_id, session_id, tag, metadata\.KEY/ }])
  }
  for (const [query, path] of [['?user_id=u&colour=blue', 'colour'], ['?user_id=u&status=maybe', 'status'], ['?user_id=', 'user_id'], ['?metadata.=x', 'metadata.']]) {
    const bad = await del(query)
    t.equal(bad.statusCode, 400, query)
    t.match(bad.json(), { code: 'LLMS_ERR_BAD_QUERY', details: [{ path: `(query) ${path}` }] })
  }
  t.equal((await del('?user_id=u&start_time=yesterday')).statusCode, 400)
  const reversed = await del(`?user_id=u&start_time=${new Date(T0 + HOUR).toISOString()}&end_time=${new Date(T0).toISOString()}`)
  t.equal(reversed.statusCode, 400)
  t.equal((await del('?user_id=u', { 'x-api-key': READ_KEY })).statusCode, 403, 'read key')
  t.equal((await del('?user_id=u', { 'x-api-key': INGEST_KEY })).statusCode, 403, 'ingest key')
  t.equal((await del('?user_id=u', {})).statusCode, 401)
  const m = await app.app.inject({ method: 'GET', url: '/analytics/metrics', headers: admin() })
  t.equal(m.json().total_requests, 50, 'nothing deleted')
  t.same(app.engine.deletes.list('default'), [], 'no delete was started')
})

t.test('project isolation: a project key deletes in its own project only; an owner names one', async (t) => {
  const app = await openApp(t)
  const events = makeEvents(7, 200)
  await ingest(app, events)
  await ingest(app, events, 'other')
  const other = { 'x-api-key': 'other-admin-key-01' }
  const r = await app.app.inject({ method: 'DELETE', url: `/events?user_id=${USERS[1]}`, headers: other })
  t.equal(r.statusCode, 200)
  const n = events.filter((e) => e.user_id === USERS[1]).length
  t.same(r.json(), { deleted: n })
  const count = async (headers: Record<string, string>) => (await app.app.inject({ method: 'GET', url: '/analytics/metrics', headers })).json().total_requests
  t.equal(await count(admin()), 200, 'default untouched')
  t.equal(await count(other), 200 - n)
  t.equal((await app.app.inject({ method: 'DELETE', url: `/events?user_id=${USERS[1]}`, headers: { ...other, 'x-llmscope-project': 'default' } })).statusCode, 403, 'a project key cannot name another project')
  t.same((await app.app.inject({ method: 'DELETE', url: `/events?user_id=${USERS[2]}`, headers: admin('other') })).json(), { deleted: events.filter((e) => e.user_id === USERS[2]).length })
  t.equal(await count(admin()), 200, 'the owner acted in the project it named')
})

t.test('GET /events/deletes: progress of running and recent deletes of the project, without the filters', async (t) => {
  const app = await openApp(t)
  await ingest(app, makeEvents(8, 25_000, { hours: 6 }))
  const del = app.app.inject({ method: 'DELETE', url: `/events?metadata.feature=chat`, headers: admin() })
  // Seen while it runs (it spans several chunks and many event-loop turns).
  let seen: any
  const end = Date.now() + 60_000
  while (seen === undefined && Date.now() < end) {
    const list = (await app.app.inject({ method: 'GET', url: '/events/deletes', headers: { 'x-api-key': READ_KEY } })).json().deletes
    if (list.length > 0 && list[0].state !== 'done') seen = list[0]
    else await new Promise((r) => setImmediate(r))
  }
  const done = await del
  t.equal(done.statusCode, 200)
  t.ok(seen !== undefined, 'visible while running')
  t.match(seen, { id: /^del_/, project: 'default', state: /running|finishing/, finished_at: null })
  const list = (await app.app.inject({ method: 'GET', url: '/events/deletes', headers: { 'x-api-key': READ_KEY } })).json().deletes
  t.equal(list.length, 1)
  t.same(Object.keys(list[0]).sort(), ['deleted', 'finished_at', 'id', 'matched', 'project', 'started_at', 'state'])
  t.match(list[0], { id: seen.id, state: 'done', matched: done.json().deleted, deleted: done.json().deleted })
  t.ok(Date.parse(list[0].finished_at) >= Date.parse(list[0].started_at))
  t.notMatch(JSON.stringify(list), /chat|feature/, 'no filter in it')
  const other = await app.app.inject({ method: 'GET', url: '/events/deletes', headers: { 'x-api-key': 'other-admin-key-01' } })
  t.same(other.json(), { deletes: [] }, 'another project sees none of them')
  t.equal((await app.app.inject({ method: 'GET', url: '/events/deletes?colour=1', headers: admin() })).statusCode, 400)
})

t.test('a large delete: ingestion and queries are answered while it runs; events accepted after it began are kept', async (t) => {
  const app = await openApp(t)
  const who = USERS[4]
  const events = makeEvents(9, 40_000, { hours: 8 }).map((e) => ({ ...e, user_id: who }))
  await ingest(app, events)
  const del = app.app.inject({ method: 'DELETE', url: `/events?user_id=${who}`, headers: admin() })
  let answered = false
  void del.then(() => (answered = true))
  // Wait until it has matched a first chunk (so its cut is taken), then ingest and query.
  const end = Date.now() + 60_000
  while (!((app.engine.deletes.list('default')[0]?.matched ?? 0) > 0) && Date.now() < end) await new Promise((r) => setImmediate(r))
  const late = makeEvents(10, 20).map((e) => ({ ...e, user_id: who }))
  const lateIds = await ingest(app, late)
  const q = await app.app.inject({ method: 'GET', url: '/analytics/metrics?model=gpt-4o', headers: admin() })
  t.equal(q.statusCode, 200)
  t.notOk(answered, 'ingestion and a query were answered before the delete finished')
  t.same((await del).json(), { deleted: events.length })
  const m = (await app.app.inject({ method: 'GET', url: `/analytics/metrics?user_id=${who}`, headers: admin() })).json()
  t.equal(m.total_requests, late.length, 'the events accepted during the delete are kept')
  for (const id of lateIds) t.equal((await app.app.inject({ method: 'GET', url: `/events/${id}`, headers: admin() })).statusCode, 200)
})

t.test('retention: a delete reaching folded (coarse) hours takes their events out exactly (counts, tokens, costs), also across a crash and restart', async (t) => {
  const now = T0 + 3 * 24 * HOUR
  const env = { LLMSCOPE_RETENTION_DAYS: '1' }
  // Three days ago (folded into hour aggregates) and today (rows).
  const events = [...makeEvents(11, 600, { start: T0, hours: 3 }), ...makeEvents(12, 400, { start: now - 2 * HOUR, hours: 2 })]
  const who = USERS[1]
  const sums = async (app: Awaited<ReturnType<typeof openApp>>, query = '') => {
    const m = (await app.app.inject({ method: 'GET', url: `/analytics/metrics?${query}`, headers: admin() })).json()
    return { requests: m.total_requests, tokens: m.total_tokens, prompt: m.prompt_tokens, cost: m.total_cost }
  }
  const ranges = ['', `start_time=${new Date(T0).toISOString()}&end_time=${new Date(T0 + 3 * HOUR).toISOString()}`, 'model=gpt-4o', 'provider=anthropic']
  const app = await openApp(t, { now, env })
  await ingest(app, events)
  await app.engine.sync()
  app.engine.retain()
  await app.engine.sync()
  t.ok(app.engine.topology.retentionStats().coarseRows > 0, 'the old hours are folded')
  t.equal(await forget(app, { user_id: who }), events.filter((e) => e.user_id === who).length)
  const ref = await openApp(t, { now, env })
  await ingest(ref, events.filter((e) => e.user_id !== who))
  await ref.engine.sync()
  ref.engine.retain()
  await ref.engine.sync()
  for (const q of ranges) t.same(await sums(app, q), await sums(ref, q), `metrics ${q || '(all)'}`)
  t.equal(bytesIn(app.dir, who), 0, 'the user id is in no file')

  // A second delete cut short by a crash, then the restart finishes it; the re-run finds nothing.
  app.engine.forgetOptions = { chunk: 25 }
  const filter = { model: 'gpt-4o-mini' }
  const running = forget(app, filter).catch(() => -1)
  for (;;) {
    const d = app.engine.deletes.list('default').find((x) => x.state !== 'done')
    if (d !== undefined && (d.deleted >= 50 || d.state !== 'running')) break
    await new Promise((r) => setImmediate(r))
  }
  await app.engine.snapshotNow().catch(() => {})
  await app.engine.destroy()
  void running
  const again = await openApp(t, { dir: app.dir, now, env })
  const resumed = again.engine.deletes.list('default')
  t.ok(resumed.length === 1 && resumed[0].state === 'done' && resumed[0].matched >= 50, `the start finished the chunks the crash left (${JSON.stringify(resumed)})`)
  await forget(again, filter)
  const ref2 = await openApp(t, { now, env })
  await ingest(ref2, events.filter((e) => e.user_id !== who && e.model !== 'gpt-4o-mini'))
  await ref2.engine.sync()
  ref2.engine.retain()
  await ref2.engine.sync()
  for (const q of ranges) t.same(await sums(again, q), await sums(ref2, q), `after the crash: metrics ${q || '(all)'}`)
})

t.test('concurrent deletes run one after the other; a graceful close in the middle of one leaves it to the next start', async (t) => {
  const events = makeEvents(13, 3000, { hours: 6 })
  const app = await openApp(t)
  await ingest(app, events)
  const a = { user_id: USERS[2] }
  const b = { model: 'gpt-4o' }
  const [na, nb] = await Promise.all([forget(app, a), forget(app, b)])
  t.equal(na, events.filter((e) => matches(e, a)).length, 'the first counts all its matches')
  t.equal(nb, events.filter((e) => matches(e, b) && !matches(e, a)).length, 'the second only what the first left')
  t.same(app.engine.deletes.list('default').map((d) => d.state), ['done', 'done'])

  app.engine.forgetOptions = { chunk: 40 }
  const c = { 'metadata.feature': 'chat' }
  const answer = app.app.inject({ method: 'DELETE', url: `/events?${qs(c)}`, headers: admin() })
  for (;;) {
    const d = app.engine.deletes.list('default').find((x) => x.state !== 'done')
    if (d !== undefined && d.deleted >= 80) break
    await new Promise((r) => setImmediate(r))
  }
  await app.close()
  const r = await answer
  t.equal(r.statusCode, 503, 'the request cut short by the close answers 503')
  t.equal(r.json().code, 'LLMS_ERR_SHUTTING_DOWN')
  const again = await openApp(t, { dir: app.dir })
  t.match(again.engine.deletes.list('default'), [{ state: 'done' }], 'the start finished what it had begun')
  t.equal(await forget(again, c), events.filter((e) => matches(e, c) && !matches(e, a) && !matches(e, b)).length - again.engine.deletes.list('default')[1].deleted, 'running it again removes the rest')
  const ref = await openApp(t)
  await ingest(ref, events.filter((e) => !matches(e, a) && !matches(e, b) && !matches(e, c)))
  t.same(await figures(again), await figures(ref))
})
