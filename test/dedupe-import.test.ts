/**
 * Import (DESIGN §7): EVENT objects as `GET /events/:id` returns them, posted to `/events/batch`
 * of another server, reproduce every figure — costs as they were (computed, the caller's, or
 * unpriced, whatever the new server's prices say), dimensions, client ids — and posting them
 * twice changes nothing.
 */
import t from 'tap'
import { makeApp, adminHeaders, event, type TestApp } from './helpers/app.js'

const RANGE = 'start_time=2025-01-01T00:00:00Z&end_time=2027-01-01T00:00:00Z'

async function get(a: TestApp, url: string) {
  const r = await a.app.inject({ url, headers: adminHeaders })
  t.equal(r.statusCode, 200, url)
  return r.json()
}

async function figures(a: TestApp) {
  return {
    metrics: await get(a, `/analytics/metrics?${RANGE}`),
    costs: await get(a, `/analytics/costs?${RANGE}`),
    byUser: await get(a, `/analytics/breakdown?${RANGE}&by=user_id`)
  }
}

const source = [
  event({ model: 'gpt-4', timestamp: '2026-01-01T00:00:00.000Z' }),
  event({ model: 'gpt-4o', cached_tokens: 400, reasoning_tokens: 0, timestamp: '2026-01-01T00:01:00.000Z', user_id: 'u1', tags: ['a'] }),
  event({ model: 'my-inhouse-model', timestamp: '2026-01-01T00:02:00.000Z', session_id: 's1' }),
  event({ model: 'gpt-4', cost: 1.25, timestamp: '2026-01-01T00:03:00.000Z', id: 'client-key-1', status: 'error', ttft_ms: 30 }),
  event({ model: 'claude-3-5-sonnet-20241022', provider: undefined, timestamp: '2026-01-01T00:04:00.000Z', metadata: { feature: 'x', n: 1 }, user_id: 'u2' })
]

t.test('EVENT objects posted to another server reproduce every figure; posting them twice changes nothing', async (t) => {
  const a = await makeApp(t)
  const sent = await a.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: source })
  t.equal(sent.statusCode, 202)
  const exported = await Promise.all((sent.json().event_ids as string[]).map((id) => get(a, `/events/${id}`)))
  t.same(exported.map((e) => e.cost_source), ['computed', 'computed', 'unpriced', 'caller', 'computed'])

  // The new server prices gpt-4 and the in-house model otherwise: imported costs must not move.
  const b = await makeApp(t, { env: { LLMSCOPE_PRICE_OVERRIDES: JSON.stringify({ 'gpt-4': { input_mtok: 1, output_mtok: 1 }, 'my-inhouse-model': { input_mtok: 5, output_mtok: 5 } }) } })
  const ndjson = exported.map((e) => JSON.stringify(e)).join('\n') + '\n'
  const post = () => b.app.inject({ method: 'POST', url: '/events/batch', headers: { ...adminHeaders, 'content-type': 'application/x-ndjson' }, payload: ndjson })
  const first = await post()
  t.equal(first.statusCode, 202, first.body)
  t.match(first.json(), { accepted: 5, duplicates: 0 })
  const imported = await Promise.all((first.json().event_ids as string[]).map((id) => get(b, `/events/${id}`)))
  const server = new Set(['id', 'seq', 'received_at', 'client_id'])
  for (let i = 0; i < exported.length; i++) {
    const same = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).filter(([k]) => !server.has(k)))
    t.same(same(imported[i]), same(exported[i]), `event ${i}: every field but the server's own`)
    t.equal(imported[i].client_id, exported[i].client_id ?? exported[i].id, 'the key: its client id, else its id')
  }
  t.same(await figures(b), await figures(a), 'metrics, costs and breakdowns equal the source server\'s')

  const again = await post()
  t.same(again.json(), { status: 'accepted', accepted: 0, event_ids: first.json().event_ids, duplicates: 5 }, 'posting twice: all duplicates')
  t.same(await figures(b), await figures(a), 'nothing changed')

  // A third server importing B's export keeps the same keys (client_id is carried on).
  const fromB = imported.map((e) => JSON.stringify(e)).join('\n')
  const c = await makeApp(t)
  const cr = await c.app.inject({ method: 'POST', url: '/events/batch', headers: { ...adminHeaders, 'content-type': 'application/x-ndjson' }, payload: fromB })
  const reimported = await Promise.all((cr.json().event_ids as string[]).map((id) => get(c, `/events/${id}`)))
  t.same(reimported.map((e) => e.client_id), imported.map((e) => e.client_id))
  t.same(await figures(c), await figures(a))
  // And A's export posted to C after B's: the same keys, so nothing new.
  const mixed = await c.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: exported })
  t.match(mixed.json(), { accepted: 0, duplicates: 5 })
})

t.test('imported costs survive a restart (the log keeps where they came from)', async (t) => {
  const a = await makeApp(t)
  const ids = (await a.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: source })).json().event_ids as string[]
  const exported = await Promise.all(ids.map((id) => get(a, `/events/${id}`)))
  const dir = t.testdir()
  const b = await makeApp(t, { dir, env: { LLMSCOPE_PRICE_OVERRIDES: '{"my-inhouse-model":{"input_mtok":5,"output_mtok":5}}' } })
  const bIds = (await b.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: exported })).json().event_ids as string[]
  await b.close()
  const b2 = await makeApp(t, { dir, env: { LLMSCOPE_PRICE_OVERRIDES: '{"my-inhouse-model":{"input_mtok":5,"output_mtok":5}}' } })
  const after = await Promise.all(bIds.map((id) => get(b2, `/events/${id}`)))
  t.same(after.map((e) => [e.cost, e.cost_source, e.unpriced]), exported.map((e) => [e.cost, e.cost_source, e.unpriced]))
  t.same((await figures(b2)).metrics, (await figures(a)).metrics)
})

t.test('server-made fields of any value are accepted and ignored; unknown fields are still refused', async (t) => {
  const a = await makeApp(t)
  const odd = { ...event(), seq: 'not a number', received_at: 12, cost_source: 'whatever', unpriced: 'no', client_id: null }
  const r = await a.app.inject({ method: 'POST', url: '/events/ingest', headers: adminHeaders, payload: odd })
  t.equal(r.statusCode, 202)
  const e = await get(a, `/events/${r.json().event_id}`)
  t.equal(e.cost_source, 'computed', 'an unknown cost_source means nothing')
  t.equal(e.client_id, null)
  const unknown = await a.app.inject({ method: 'POST', url: '/events/ingest', headers: adminHeaders, payload: { ...event(), project: 'x' } })
  t.equal(unknown.statusCode, 400, 'a field no EVENT has is refused as before')
})

t.test('an export posted back to the server it came from changes nothing (its own ids are recognised)', async (t) => {
  const a = await makeApp(t)
  // Enough events for columnar records, so the lookups read records several at a time.
  const many = Array.from({ length: 150 }, (_, i) => event({ model: i % 2 ? 'gpt-4' : 'gpt-4o', prompt_tokens: i + 1, timestamp: '2026-01-01T00:05:00.000Z' }))
  const ids = [
    ...((await a.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: source })).json().event_ids as string[]),
    ...((await a.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: many })).json().event_ids as string[])
  ]
  const exported = await Promise.all(ids.map((id) => get(a, `/events/${id}`)))
  const before = await figures(a)
  const back = await a.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: exported })
  // The one with a client id is found by its key; the others by their own ids, whatever the window.
  t.same(back.json(), { status: 'accepted', accepted: 0, event_ids: ids, duplicates: ids.length })
  t.same(await figures(a), before, 'nothing counted twice')
  // Into another project of the same server: new events there (ids are per project).
  await a.app.inject({ method: 'POST', url: '/projects', headers: adminHeaders, payload: { id: 'mirror' } })
  const mirror = await a.app.inject({ method: 'POST', url: '/events/batch', headers: { ...adminHeaders, 'x-llmscope-project': 'mirror' }, payload: exported.slice(0, 3) })
  t.match(mirror.json(), { accepted: 3, duplicates: 0 })
  // An id shaped like ours that this log does not hold (another server's, a made-up one) is just a key.
  // Its 12 random characters replaced (they may hold '_' themselves: nanoid's alphabet has it).
  const foreign = exported[0].id.slice(0, -12) + 'ZZZZZZZZZZZZ'
  t.not(foreign, exported[0].id, 'the made-up id differs from the exported one')
  const other = await a.app.inject({ method: 'POST', url: '/events/ingest', headers: adminHeaders, payload: event({ id: foreign }) })
  t.not(other.json().event_id, exported[0].id)
  const beyond = await a.app.inject({ method: 'POST', url: '/events/ingest', headers: adminHeaders, payload: event({ id: 'evt_zzzzz_AAAAAAAAAAAA' }) })
  t.equal(beyond.statusCode, 202)
  t.equal((await get(a, `/events/${beyond.json().event_id}`)).client_id, 'evt_zzzzz_AAAAAAAAAAAA')
})
