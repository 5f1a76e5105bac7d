/**
 * The dashboard in cluster mode, in a real browser (Debian's chromium + playwright-core, as in
 * browser.test.ts): the Cluster strip shows this node's place from GET /ready (node, live nodes,
 * partitions owned, unowned ones highlighted, lag, alert lease, last takeover) and follows it;
 * a single node shows no strip. An analytics request answering 503 LLMS_ERR_UNAVAILABLE (a
 * partition being handed over) shows the server's message as a notice, not an error, and the
 * view is retried after Retry-After and recovers; other errors keep their banner.
 *
 * The 503s and the /ready variations are made by playwright's router on one request each (a
 * real takeover is tested in test/cluster/); everything else is a real app on a real
 * nats-server. Skipped without /usr/bin/chromium or nats-server. A screenshot of the strip and
 * the notice goes to test/artifacts/. Every wait is for a condition, bounded; the one timing
 * assertion is a lower bound (the retry came no sooner than Retry-After).
 */
import t from 'tap'
import { existsSync, mkdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { AddressInfo } from 'node:net'
import { chromium, type Browser, type Page, type Route } from 'playwright-core'
import { ADMIN_KEY, makeApp, type TestApp } from '../helpers/app.js'
import { NATS_SERVER, startNats } from '../helpers/nats.js'

t.setTimeout(170_000)

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const WAIT = { timeout: 60_000 }
const ARTIFACTS = fileURLToPath(new URL('../artifacts/', import.meta.url))
/** The same strict CSP as browser.test.ts: the notice and strip must hold under it. */
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"

const skip = !existsSync(CHROMIUM)
  ? `Chromium not found at ${CHROMIUM}: install it (apt-get install -y chromium) or set CHROMIUM_PATH`
  : !existsSync(NATS_SERVER)
    ? `${NATS_SERVER} is missing: apt-get install nats-server`
    : false

interface ClusterReady {
  node: string
  partitions: number
  owned: number[]
  unowned: number[]
  lag: number
  restored_from: 'snapshot' | 'stream' | null
  nodes: string[]
  alerts_lease: boolean
  lease_ms: number
}

async function waitFor(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** Serves `app` on 127.0.0.1:0 under the strict CSP; resolves its base URL. */
async function serve(built: TestApp): Promise<string> {
  built.app.addHook('onSend', async (_request, reply) => {
    if (!reply.hasHeader('content-security-policy')) reply.header('content-security-policy', CSP)
  })
  await built.app.listen({ port: 0, host: '127.0.0.1' })
  return `http://127.0.0.1:${(built.app.server.address() as AddressInfo).port}`
}

let browser: Browser | undefined
async function launch(): Promise<Browser> {
  browser ??= await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
  return browser
}
t.teardown(async () => {
  await browser?.close()
})

/** A page with the admin key already stored (no key prompt) and its uncaught errors collected. */
async function openPage(b: Browser): Promise<{ page: Page; errors: string[]; close: () => Promise<void> }> {
  const context = await b.newContext({ viewport: { width: 1360, height: 1000 }, colorScheme: 'light' })
  await context.addInitScript(`localStorage.setItem('llmscope.apiKey', ${JSON.stringify(ADMIN_KEY)})`)
  const page = await context.newPage()
  const errors: string[] = []
  // Uncaught exceptions only: the 503s and the 500 below are logged by Chromium as failed loads.
  page.on('pageerror', (err) => errors.push(`page error: ${err.message}`))
  return { page, errors, close: () => context.close() }
}

/**
 * Answers the first request matching `url` with `status` and `body` (plus Retry-After when
 * given); later ones wait for release() and then go to the server. `times` are the arrival
 * times of every request.
 */
async function failOnce(page: Page, url: string, status: number, body: object, retryAfter?: string) {
  const times: number[] = []
  const handled: Array<Promise<void>> = []
  let release!: () => void
  const released = new Promise<void>((r) => (release = r))
  const handle = async (route: Route, first: boolean) => {
    if (first) {
      await route.fulfill({ status, contentType: 'application/json; charset=utf-8', headers: retryAfter === undefined ? {} : { 'retry-after': retryAfter }, body: JSON.stringify(body) })
      return
    }
    await released
    await route.continue()
  }
  const handler = (route: Route) => {
    times.push(Date.now())
    const p = handle(route, times.length === 1)
    handled.push(p)
    return p
  }
  await page.route(url, handler)
  return {
    times,
    /** Lets the held requests through, waits until they are handed on, and removes the route. */
    done: async () => {
      release()
      await Promise.all(handled)
      await page.unroute(url, handler)
    }
  }
}

t.test('a single node shows no Cluster strip', { skip }, async (t) => {
  const built = await makeApp(t, { inlinePricing: true })
  const base = await serve(built)
  const ready = (await (await fetch(`${base}/ready`)).json()) as { cluster?: unknown }
  t.equal(ready.cluster, undefined, 'a single node has no cluster figures')
  const { page, errors, close } = await openPage(await launch())
  await page.goto(base + '/')
  await page.locator('#dash').waitFor({ state: 'visible', ...WAIT })
  // Set once the page has read /ready: from then on the strip's fate is decided.
  await page.locator('#cluster[data-mode="single"]').waitFor({ state: 'attached', ...WAIT })
  t.equal(await page.locator('#cluster').isVisible(), false, 'no Cluster strip')
  t.equal(await page.getByText('Partitions here').isVisible(), false, 'none of its figures either')
  t.equal(await page.locator('#notice').isVisible(), false, 'no notice')
  t.same(errors, [], 'no uncaught error in the page')
  await close()
  await built.close()
})

t.test('cluster mode: the strip, its refresh, and a partition being handed over', { skip }, async (t) => {
  const nats = await startNats({ servers: 1 })
  t.teardown(() => nats.stop())
  const built = await makeApp(t, {
    inlinePricing: true,
    env: { LLMSCOPE_NATS_URL: nats.urls.join(','), LLMSCOPE_NODE_ID: 'n1', LLMSCOPE_LEASE_S: '2', LLMSCOPE_PARTITIONS: '4', LLMSCOPE_CLUSTER_NAME: 'dashtest' }
  })
  const base = await serve(built)
  const ready = async () => ((await (await fetch(`${base}/ready`)).json()) as { cluster?: ClusterReady }).cluster
  await waitFor('n1 owns the 4 partitions', async () => (await ready())?.owned.length === 4)
  await waitFor('n1 holds the alert lease', async () => (await ready())?.alerts_lease === true)
  const c = (await ready())!
  t.same(c.unowned, [], 'nothing unowned')

  const { page, errors, close } = await openPage(await launch())
  const text = (sel: string) => page.locator(sel).innerText()
  await page.goto(base + '/')

  // 1. The strip: this node, live nodes, 4/4 partitions, nothing unowned, lag, lease, takeover.
  await page.locator('#cluster[data-mode="cluster"]').waitFor({ state: 'visible', ...WAIT })
  t.match(await text('#cluster-title'), /^cluster$/i, 'titled Cluster')
  t.equal(await text('#cl-node'), 'n1', 'the node name')
  t.equal(await text('#cl-owned'), '4 / 4', 'partitions owned here / total')
  t.match(await text('#cl-nodes'), /^1 \(n1\)$/, 'one live node, named')
  t.equal(await text('#cl-unowned'), 'none')
  t.equal(await page.locator('#cl-unowned.warn').count(), 0, 'not highlighted')
  t.match(await text('#cl-lag'), /^\d[\d,]* events$/, 'the lag')
  await page.locator('#cl-lease', { hasText: 'held here' }).waitFor(WAIT)
  const takeover = c.restored_from === 'snapshot' ? 'from a snapshot' : c.restored_from === 'stream' ? 'from the stream start' : 'none yet'
  t.equal(await text('#cl-restored'), takeover, `last takeover as /ready says (${c.restored_from})`)

  // 2. It follows /ready: a partition without an owner is highlighted, then gone again.
  const degraded = async (route: Route) => {
    const body = (await (await route.fetch()).json()) as { cluster: ClusterReady }
    body.cluster = { ...body.cluster, owned: [0, 1, 3], unowned: [2], alerts_lease: false }
    await route.fulfill({ status: 200, contentType: 'application/json; charset=utf-8', body: JSON.stringify(body) })
  }
  await page.route('**/ready', degraded)
  await page.locator('#cl-unowned.warn', { hasText: /^2$/ }).waitFor(WAIT)
  t.equal(await text('#cl-owned'), '3 / 4', 'owned count follows')
  t.equal(await text('#cl-lease'), 'not here', 'lease follows')
  await page.unroute('**/ready', degraded)
  await page.locator('#cl-unowned:not(.warn)', { hasText: /^none$/ }).waitFor(WAIT)
  t.equal(await text('#cl-owned'), '4 / 4')

  // A node that stops answering /ready: the last figures stay, marked stale.
  const down = (route: Route) => route.abort('connectionrefused')
  await page.route('**/ready', down)
  await page.locator('#cluster.stale #cl-stale', { hasText: 'not answering' }).waitFor(WAIT)
  t.equal(await text('#cl-node'), 'n1', 'the last figures stay')
  await page.unroute('**/ready', down)
  await page.locator('#cluster:not(.stale)').waitFor(WAIT)
  t.ok(await page.locator('#cl-stale').isHidden(), 'stale mark gone')

  // 3. Events through this node, seen by the page.
  const r = await fetch(`${base}/events/batch`, {
    method: 'POST',
    headers: { 'x-api-key': ADMIN_KEY, 'content-type': 'application/json' },
    body: JSON.stringify([
      { model: 'gpt-4o', provider: 'openai', prompt_tokens: 1200, completion_tokens: 300, latency_ms: 900 },
      { model: 'claude-3-5-sonnet-20241022', provider: 'anthropic', prompt_tokens: 200, completion_tokens: 80, latency_ms: 1500 },
      { model: 'my-local-model', provider: 'self-hosted', prompt_tokens: 10, completion_tokens: 5, latency_ms: 80 }
    ])
  })
  t.equal(r.status, 202, 'ingested')
  // The page refreshes on live events, or every 15 s; a reload makes it prompt either way.
  await page.reload()
  await page.locator('#t-requests', { hasText: /^3$/ }).waitFor(WAIT)
  await page.locator('#charts[data-requests="3"]').waitFor({ state: 'attached', ...WAIT })

  t.equal(await text('#ts-interval'), '1m buckets, local time')

  // 4. The time series answers 503 LLMS_ERR_UNAVAILABLE once (on a change of range): a notice
  // with the server's message, no error banner, the last chart kept (dimmed); retried after
  // Retry-After, then the new range's chart.
  const unavailable = { statusCode: 503, error: 'Service Unavailable', code: 'LLMS_ERR_UNAVAILABLE', message: 'partition 2 is being handed over', details: [] }
  const ts = await failOnce(page, '**/analytics/timeseries?**', 503, unavailable, '1')
  await page.selectOption('#range', '24h')
  const notice = page.locator('#notice')
  await notice.waitFor({ state: 'visible', ...WAIT })
  t.match(await notice.innerText(), /partition 2 is being handed over/, 'the server message, naming the partition')
  t.match(await notice.innerText(), /retrying in 1 s/, 'says when it retries')
  t.equal(await notice.getAttribute('role'), 'status', 'a polite status, not an alert')
  t.ok(await page.locator('#banner').isHidden(), 'no error banner')
  t.equal(await page.locator('#dash[data-waiting]').count(), 1, 'the view is marked as waiting')
  t.ok(await page.locator('#ts-empty').isHidden(), 'no "No events" in place of the chart')
  t.equal(await page.locator('#charts[data-requests="3"] canvas').count(), 3, 'the last charts stay')
  t.equal(await text('#ts-interval'), '1m buckets, local time', 'of the last answer')
  mkdirSync(ARTIFACTS, { recursive: true })
  await page.screenshot({ path: ARTIFACTS + 'dashboard-cluster-notice.png' })
  await waitFor('the retry of the time series', () => ts.times.length >= 2)
  t.ok(ts.times[1]! - ts.times[0]! >= 900, `retried after Retry-After: 1 s (${ts.times[1]! - ts.times[0]!} ms)`)
  await ts.done()
  await page.locator('#ts-interval', { hasText: '5m buckets' }).waitFor(WAIT)
  await notice.waitFor({ state: 'hidden', ...WAIT })
  t.equal(await page.locator('#charts[data-requests="3"] canvas').count(), 3, 'the charts of the new range')
  t.equal(await page.locator('#dash[data-waiting]').count(), 0, 'no longer waiting')
  t.equal(await text('#t-requests'), '3')

  // 5. The breakdown alone answers 503 (several partitions), on a change of sort: the same
  // notice, no breakdown error; the retry brings the table back.
  await page.locator('#bd-body tr').first().waitFor(WAIT)
  const rowsBefore = await page.locator('#bd-body tr').count()
  const bd = await failOnce(page, '**/analytics/breakdown?**', 503, { ...unavailable, message: 'partitions 1, 3 did not answer (timeout); retry shortly' }, '1')
  await page.click('#bd-sort-requests')
  await notice.waitFor({ state: 'visible', ...WAIT })
  t.match(await notice.innerText(), /partitions 1, 3 did not answer \(timeout\)\. Showing/, 'names the partitions')
  t.equal(await text('#bd-error'), '', 'no breakdown error')
  await waitFor('the retry of the breakdown', () => bd.times.length >= 2)
  await bd.done()
  await notice.waitFor({ state: 'hidden', ...WAIT })
  await page.waitForFunction((n) => (globalThis as unknown as { document: { querySelectorAll(s: string): ArrayLike<unknown> } }).document.querySelectorAll('#bd-body tr').length === n, rowsBefore, WAIT)
  t.equal(await page.locator('#bd-sort-requests[aria-pressed="true"]').count(), 1, 'sorted as asked')

  // 6. Any other error keeps its old behaviour: an error banner, retried.
  const internal = await failOnce(page, '**/analytics/metrics?**', 500, { statusCode: 500, error: 'Internal Server Error', code: 'LLMS_ERR_INTERNAL', message: 'internal error', details: [] })
  await page.selectOption('#range', '7d')
  await page.locator('#banner', { hasText: 'Could not load analytics: internal error' }).waitFor({ state: 'visible', ...WAIT })
  t.ok(await notice.isHidden(), 'not a notice')
  await internal.done()
  await page.locator('#banner').waitFor({ state: 'hidden', ...WAIT })
  await page.locator('#ts-interval', { hasText: '1h buckets' }).waitFor(WAIT)
  t.equal(await text('#t-requests'), '3')

  t.same(errors, [], 'no uncaught error in the page')
  await close()
  await built.close()
  await nats.stop()
})
