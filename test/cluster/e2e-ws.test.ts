/**
 * /ws in cluster mode (DESIGN §9): a subscriber on node B gets every event ingested on node A
 * (and C), each frame's `seq` the stream sequence written in its id; `since_seq` resumes against
 * any node, with exactly the events after that position, in order. Another project's events never
 * reach a subscriber.
 */
import t from 'tap'
import { WebSocket } from 'ws'
import { FILE_TIMEOUT_MS } from '../helpers/server.js'
import { OWNER_KEY, get, post, startCluster, until } from '../helpers/cluster.js'

t.setTimeout(FILE_TIMEOUT_MS)

class Client {
  readonly messages: any[] = []
  readonly opened: Promise<void>
  constructor(readonly ws: WebSocket) {
    ws.on('message', (d) => this.messages.push(JSON.parse(d.toString())))
    this.opened = new Promise((resolve, reject) => {
      ws.once('open', () => resolve())
      ws.once('error', reject)
      ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)))
    })
  }
  events(): any[] {
    return this.messages.filter((m) => m.type === 'event')
  }
  close() {
    this.ws.terminate()
  }
}

async function subscribe(url: string, query = '', project?: string): Promise<Client> {
  const headers: Record<string, string> = { 'x-api-key': OWNER_KEY }
  if (project !== undefined) headers['x-llmscope-project'] = project
  const c = new Client(new WebSocket(`${url.replace('http', 'ws')}/ws${query}`, { headers }))
  await c.opened
  return c
}

/** The stream sequence written in an event id (`evt_<seq base36>_<random>`). */
const seqOf = (id: string) => parseInt(id.split('_')[1]!, 36)

async function subscribers(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text()
  const m = /^llmscope_ws_subscribers (\d+)$/m.exec(text)
  return m === null ? -1 : Number(m[1])
}

t.test('/ws on one node streams events ingested on the others; since_seq against any node', async (t) => {
  const cluster = await startCluster({ nats: 1, nodes: 3 })
  t.teardown(() => cluster.stop())
  const [a, b, c] = [cluster.url(0), cluster.url(1), cluster.url(2)]
  t.equal((await post(a, '/projects', { id: 'other' })).status, 201, 'project other')
  for (const u of [b, c]) await until(async () => (await get(u, '/projects/other')).status === 200, 'every node sees project other')

  const onB = await subscribe(b)
  const onBOther = await subscribe(b, '', 'other')
  const onCFiltered = await subscribe(c, '?model=m1')
  t.teardown(() => [onB, onBOther, onCFiltered].forEach((x) => x.close()))
  await until(async () => (await subscribers(b)) >= 2 && (await subscribers(c)) >= 1, 'the subscribers registered')

  const ids: string[] = []
  for (let k = 0; k < 10; k++) {
    const url = k % 2 === 0 ? a : c
    const events = Array.from({ length: 6 }, (_, j) => ({ model: `m${(k + j) % 3}`, prompt_tokens: k * 10 + j, latency_ms: 10 }))
    const r = await post(url, '/events/batch', events)
    t.equal(r.status, 202)
    ids.push(...r.body.event_ids)
  }
  await until(() => onB.events().length >= ids.length, `node B's subscriber to get all ${ids.length} events`, 60_000)
  const got = onB.events()
  t.strictSame(new Set(got.map((e) => e.id)), new Set(ids), 'node B got exactly the events ingested on A and C')
  t.equal(got.length, ids.length, 'each once')
  t.ok(got.every((e) => e.seq === seqOf(e.id)), 'each frame seq is the stream sequence in its id')
  t.ok(got.every((e, k) => k === 0 || e.seq > got[k - 1].seq), 'in stream order (seq strictly increasing)')
  t.ok(got.every((e) => typeof e.cost === 'number' && e.provider !== undefined), 'frames are priced')

  const wantM1 = got.filter((e) => e.model === 'm1').map((e) => e.id)
  await until(() => onCFiltered.events().length >= wantM1.length, 'node C filtered subscriber', 60_000)
  t.strictSame(onCFiltered.events().map((e) => e.id), wantM1, 'a model filter on node C: exactly the m1 events, in order')

  // Another project's subscriber: one event of its own arrives, none of default's.
  const own = await post(c, '/events/ingest', { model: 'x', prompt_tokens: 1 }, 'other')
  t.equal(own.status, 202)
  await until(() => onBOther.events().length >= 1, 'the other project subscriber gets its own event')
  t.strictSame(onBOther.events().map((e) => e.id), [own.body.event_id], 'project other sees only its own event')

  // since_seq against every node: exactly the events after that position, in order.
  const cut = got[19].seq
  const after = got.filter((e) => e.seq > cut).map((e) => e.id)
  for (const url of [a, b, c]) {
    const resumed = await subscribe(url, `?since_seq=${cut}`)
    await until(() => resumed.events().length >= after.length, `since_seq=${cut} on ${url}`, 60_000)
    // A moment for anything extra to show up would be a fixed sleep: instead, ingest one more
    // event and wait for it, which must come right after the replayed ones.
    const more = await post(a, '/events/ingest', { model: 'm0', prompt_tokens: 1 })
    after.push(more.body.event_id)
    await until(() => resumed.events().some((e) => e.id === more.body.event_id), 'the live event after the replay')
    t.strictSame(resumed.events().map((e) => e.id), after, `since_seq=${cut} on ${url}: the events after it, then live, no gap, no duplicate`)
    resumed.close()
  }
})
