/**
 * The dashboard's events table in a real browser (Debian's chromium driven by playwright-core,
 * as in browser.test.ts) against a real listening app with events ingested: rows newest first
 * with their columns, infinite scroll with the cursor (no row twice, the end reached), the side
 * panel with the whole event (metadata pretty-printed, as text: markup in it stays text), Esc
 * and the close button, a filter chip narrowing the rows, Export CSV of the filtered rows under
 * the server's file name, a click on a chart bucket narrowing the rows to that bucket (a
 * removable chip), the order by latency, a live event joining the top of the table, another
 * range, a refused page (one 409 made by playwright's router) and its retry button, and 375 px.
 *
 * Skipped when /usr/bin/chromium is missing (`.ci/run` installs it). Every wait is for a DOM
 * condition, bounded; no timing assertions.
 */
import t from 'tap'
import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { AddressInfo } from 'node:net'
import { chromium, type Browser, type Page } from 'playwright-core'
import { ADMIN_KEY, makeApp } from '../helpers/app.js'

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const ARTIFACTS = fileURLToPath(new URL('../artifacts/', import.meta.url))
const WAIT = { timeout: 60_000 }
/** The same strict CSP as browser.test.ts: the table, the panel and the download hold under it. */
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
const skip = existsSync(CHROMIUM) ? false : `Chromium not found at ${CHROMIUM}: install it (apt-get install -y chromium) or set CHROMIUM_PATH; .ci/run installs it`

/** What the page's DOM offers a predicate (this file is type-checked without the DOM library). */
type Row = { dataset: { id: string }; querySelector(s: string): { title: string } | null }
type Doc = { querySelectorAll(s: string): ArrayLike<Row>; getElementById(id: string): { dataset: Record<string, string>; textContent: string | null; hidden: boolean } | null }

/** One ingested event as the test knows it. */
interface Sent {
  id: string
  ts: number
  user: string
  model: string
  latency: number
  metadata: Record<string, unknown>
}

const MODELS = ['gpt-4o', 'gpt-4o-mini', 'claude-3-5-sonnet-20241022']
/** A metadata string that would be markup if written as HTML. */
const MARKUP = '<img src=x id=injected onerror="document.title=1">'

t.test('the events table: newest first, infinite scroll, one event in full, CSV, buckets and filters', { skip }, async (t) => {
  const built = await makeApp(t, { inlinePricing: true })
  built.app.addHook('onSend', async (_request, reply) => {
    if (!reply.hasHeader('content-security-policy')) reply.header('content-security-policy', CSP)
  })
  await built.app.listen({ port: 0, host: '127.0.0.1' })
  const base = `http://127.0.0.1:${(built.app.server.address() as AddressInfo).port}`

  // 130 events over 45 minutes of the last hour (three pages of 50), 21 s apart: several per minute
  // bucket; users u0..u2 in turn; the newest carries nested metadata with markup in a string.
  const N = 130
  const first = Date.now() - 47 * 60_000
  const sent: Sent[] = []
  const bodies = []
  for (let i = 0; i < N; i++) {
    const newest = i === N - 1
    const metadata: Record<string, unknown> = newest ? { feature: 'search', note: MARKUP, nested: { tries: [1, 2], ok: true } } : { feature: i % 2 === 0 ? 'chat' : 'search', i }
    const e = {
      timestamp: new Date(first + i * 21_000).toISOString(),
      model: MODELS[i % 3],
      provider: i % 3 === 2 ? 'anthropic' : 'openai',
      prompt_tokens: 100 + i,
      completion_tokens: 10,
      latency_ms: 100 + ((i * 37) % 900),
      user_id: `u${i % 3}`,
      status: i % 10 === 0 ? 'error' : 'success',
      metadata
    }
    bodies.push(e)
    sent.push({ id: '', ts: Date.parse(e.timestamp), user: e.user_id, model: e.model, latency: e.latency_ms, metadata })
  }
  const ingest = async (events: unknown[]): Promise<string[]> => {
    const r = await fetch(`${base}/events/batch`, { method: 'POST', headers: { 'x-api-key': ADMIN_KEY, 'content-type': 'application/json' }, body: JSON.stringify(events) })
    t.equal(r.status, 202, 'ingested')
    return ((await r.json()) as { event_ids: string[] }).event_ids
  }
  const ids = await ingest(bodies)
  ids.forEach((id, i) => (sent[i].id = id))
  const newestFirst = [...sent].sort((a, b) => b.ts - a.ts)

  const browser: Browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
  t.teardown(() => browser.close())
  const context = await browser.newContext({ viewport: { width: 1360, height: 1000 }, colorScheme: 'light', acceptDownloads: true })
  await context.addInitScript(`localStorage.setItem('llmscope.apiKey', ${JSON.stringify(ADMIN_KEY)})`)
  const page: Page = await context.newPage()
  const problems: string[] = []
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`))
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console error: ${msg.text()} ${msg.location().url}`)
  })
  // Every page the table asks: never two at once; a cursor page repeats its first page's query.
  const pages: URL[] = []
  let inFlight = 0
  let maxInFlight = 0
  const isPage = (url: string) => {
    const u = new URL(url)
    return u.pathname === '/events' && !u.searchParams.has('format')
  }
  page.on('request', (r) => {
    if (!isPage(r.url())) return
    pages.push(new URL(r.url()))
    maxInFlight = Math.max(maxInFlight, ++inFlight)
  })
  const settled = (r: { url(): string }) => {
    if (isPage(r.url())) inFlight--
  }
  page.on('requestfinished', settled)
  /** Each page asked and its answer (status, events, whether a cursor came back): for a failed wait's message. */
  const answers: string[] = []
  page.on('response', (r) => {
    if (!isPage(r.url())) return
    const u = new URL(r.url())
    void r
      .json()
      .then((b: { events?: unknown[]; next_cursor?: string | null }) => `${r.status()} ${b.events?.length ?? '-'} events, cursor ${b.next_cursor ? 'yes' : 'no'}`)
      .catch(() => `${r.status()} (no JSON body)`)
      .then((what) => answers.push(`${u.search.slice(0, 160)} → ${what}`))
  })
  page.on('requestfailed', settled)
  t.teardown(() => {
    if (problems.length > 0) console.error(`browser problems:\n${problems.join('\n')}`)
  })
  mkdirSync(ARTIFACTS, { recursive: true })

  /**
   * Waits until the table holds `n` rows (and no page is loading). On a timeout the error says
   * what the table showed, which pages were asked and with what answer, and the browser's
   * problems: a wait that fails in CI must be explainable from its log alone.
   */
  const rowCount = async (n: number) => {
    try {
      await page.waitForFunction(
        (k) => {
          // Runs in the page: no closure over this file.
          const d = (globalThis as unknown as { document: Doc }).document
          return d.getElementById('ev-table')?.dataset.rows === String(k) && d.querySelectorAll('#ev-body tr').length === k
        },
        n,
        WAIT
      )
    } catch (err) {
      const shown = await page
        .evaluate(() => {
          const d = (globalThis as unknown as { document: Doc }).document
          const text = (id: string) => d.getElementById(id)?.textContent ?? null
          return { rows: d.getElementById('ev-table')?.dataset.rows, trs: d.querySelectorAll('#ev-body tr').length, more: text('ev-more'), error: text('ev-error'), dashHidden: d.getElementById('dash')?.hidden }
        })
        .catch((e: Error) => ({ unreadable: e.message }))
      throw new Error(`waiting for ${n} rows: ${(err as Error).message}\nthe table: ${JSON.stringify(shown)}\npages asked: ${JSON.stringify(answers)}\nbrowser problems: ${JSON.stringify(problems)}`)
    }
  }
  /** The ids of the rows, top to bottom. */
  const rowIds = () => page.locator('#ev-body tr').evaluateAll((trs) => trs.map((tr) => (tr as unknown as Row).dataset.id))
  const scrollTable = () => page.locator('#ev-wrap').evaluate((w) => ((w as unknown as { scrollTop: number; scrollHeight: number }).scrollTop = (w as unknown as { scrollHeight: number }).scrollHeight))

  // 1. The first page: the newest 50, newest first, with the columns.
  await page.goto(base + '/')
  await page.locator('#t-requests', { hasText: new RegExp(`^${N}$`) }).waitFor(WAIT)
  await rowCount(50)
  t.same(await rowIds(), newestFirst.slice(0, 50).map((e) => e.id), 'the newest 50 events, newest first')
  t.same(
    await page.locator('#ev-body tr:first-child td').evaluateAll((tds) => tds.map((td) => (td as unknown as { dataset: { label: string } }).dataset.label)),
    ['time', 'model', 'provider', 'user', 'tokens', 'cost', 'latency', 'status'],
    'the columns'
  )
  t.same(await page.locator('#ev-table thead th').allInnerTexts().then((h) => h.map((x) => x.toLowerCase())), ['time', 'model', 'provider', 'user', 'tokens', 'cost', 'latency', 'status'], 'the headers')
  const top = newestFirst[0]
  const topCells = await page.locator('#ev-body tr:first-child td').allInnerTexts()
  t.equal(topCells[1], top.model, 'model')
  t.equal(topCells[2], top.model.startsWith('claude') ? 'anthropic' : 'openai', 'provider')
  t.equal(topCells[3], top.user, 'user')
  t.equal(topCells[4], String(100 + N - 1 + 10), 'tokens')
  t.match(topCells[5], /^\$/, 'cost in dollars')
  t.equal(topCells[6], `${top.latency} ms`, 'latency')
  t.equal(topCells[7], 'success', 'status')
  t.equal(await page.locator('#ev-body tr:first-child td.time').getAttribute('title'), new Date(top.ts).toISOString(), 'the time')
  await page.locator('#events').screenshot({ path: ARTIFACTS + 'dashboard-events.png' })

  // 2. Scrolling the table asks the next pages with the cursor: every event once, in order, then the end.
  await scrollTable()
  await rowCount(100)
  await scrollTable()
  await rowCount(N)
  await page.locator('#ev-more', { hasText: `${N} events, the end.` }).waitFor(WAIT)
  const all = await rowIds()
  t.equal(new Set(all).size, N, 'no row twice')
  t.same(all, newestFirst.map((e) => e.id), 'every event, newest first')
  await scrollTable()
  t.equal(await page.locator('#ev-body tr').count(), N, 'nothing more past the end')
  const cursorPages = pages.filter((u) => u.searchParams.has('cursor'))
  t.equal(cursorPages.length, 2, 'two pages after the first, by cursor')
  const firstPage = pages.filter((u) => !u.searchParams.has('cursor')).at(-1)!
  for (const u of cursorPages) {
    t.equal(u.searchParams.get('start_time'), firstPage.searchParams.get('start_time'), 'a cursor page repeats the first page’s start')
    t.equal(u.searchParams.get('end_time'), firstPage.searchParams.get('end_time'), 'and its end')
  }

  // 3. A row opens the whole event; metadata pretty-printed, its markup as text. Esc closes it.
  await page.locator('#ev-wrap').evaluate((w) => ((w as unknown as { scrollTop: number }).scrollTop = 0))
  await page.click(`#ev-body tr[data-id="${top.id}"]`)
  await page.locator('#ev-panel').waitFor({ state: 'visible', ...WAIT })
  t.equal(await page.locator('#ev-fields dd[data-field="metadata"] pre').innerText(), JSON.stringify(top.metadata, null, 2), 'metadata pretty-printed')
  t.equal(await page.locator('#ev-fields dd[data-field="id"]').innerText(), top.id, 'the id')
  t.equal(await page.locator('#ev-fields dd[data-field="prompt_tokens"]').innerText(), String(100 + N - 1), 'every stored field: prompt_tokens')
  t.equal(await page.locator('#ev-fields dd[data-field="user_id"]').innerText(), top.user, 'user_id')
  t.equal(await page.locator('#injected').count(), 0, 'markup in metadata is text, not an element')
  await page.screenshot({ path: ARTIFACTS + 'dashboard-event-panel.png' })
  await page.keyboard.press('Escape')
  await page.locator('#ev-panel').waitFor({ state: 'hidden', ...WAIT })
  // The keyboard: Enter on a row opens it, the close button closes it.
  await page.focus(`#ev-body tr[data-id="${newestFirst[1].id}"]`)
  await page.keyboard.press('Enter')
  await page.locator('#ev-fields dd[data-field="id"]', { hasText: newestFirst[1].id }).waitFor(WAIT)
  await page.click('#ev-panel-close')
  await page.locator('#ev-panel').waitFor({ state: 'hidden', ...WAIT })

  // 4. A filter chip (user u1, from the breakdown) narrows the rows.
  await page.selectOption('#bd-dim', 'user_id')
  await page.locator('#bd-body button.bd-value:text-is("u1")').waitFor(WAIT)
  await page.click('#bd-body button.bd-value:text-is("u1")')
  await page.locator('#chips .chip', { hasText: 'user_id = u1' }).waitFor(WAIT)
  const u1 = newestFirst.filter((e) => e.user === 'u1')
  await rowCount(u1.length)
  t.same(await rowIds(), u1.map((e) => e.id), "only u1's events, newest first")

  // 5. Export CSV: the file the server names, the header, the filtered rows.
  const [download] = await Promise.all([page.waitForEvent('download', WAIT), page.click('#ev-export')])
  t.match(download.suggestedFilename(), /^llmscope-events-default-\d{8}T\d{6}\.csv$/, `the server's file name (${download.suggestedFilename()})`)
  const csv = readFileSync(await download.path(), 'utf8').trim().split(/\r?\n/)
  const header = csv[0].split(',')
  for (const field of ['id', 'timestamp', 'model', 'provider', 'user_id', 'cost', 'metadata']) t.ok(header.includes(field), `the header has ${field}`)
  t.equal(csv.length - 1, u1.length, 'one line per filtered event')
  const idCol = header.indexOf('id')
  t.same(
    csv.slice(1).map((line) => line.split(',')[idCol]),
    u1.map((e) => e.id),
    'the filtered events, in the table’s order'
  )

  // 6. A click on a chart bucket narrows the rows to [start, start + 1 min); the chip removes it.
  const target = u1[5]
  const bucketStart = Math.floor(target.ts / 60_000) * 60_000
  const inBucket = u1.filter((e) => e.ts >= bucketStart && e.ts < bucketStart + 60_000)
  const chip = page.locator('#ev-chips .chip')
  for (let attempt = 1; ; attempt++) {
    const scale = await page.locator('#chart-requests').evaluate((h) => (h as unknown as { dataset: Record<string, string> }).dataset)
    const over = await page.locator('#chart-requests .u-over').boundingBox()
    t.ok(over, 'the chart is drawn')
    const x = over!.x + ((bucketStart / 1000 - Number(scale.xMin)) / (Number(scale.xMax) - Number(scale.xMin))) * over!.width
    await page.mouse.click(x, over!.y + over!.height / 2)
    await chip.waitFor(WAIT)
    // A refresh that adds a minute bucket between reading the scale and the click moves the
    // bars by about one: then the click is made again from the new scale.
    if ((await chip.getAttribute('data-start')) === new Date(bucketStart).toISOString() || attempt === 3) break
  }
  t.equal(await chip.getAttribute('data-start'), new Date(bucketStart).toISOString(), 'the chip names the bucket’s start')
  t.equal(await chip.getAttribute('data-end'), new Date(bucketStart + 60_000).toISOString(), 'and its end')
  await rowCount(inBucket.length)
  t.same(await rowIds(), inBucket.map((e) => e.id), "the bucket's events (and u1's only)")
  t.match(await page.evaluate(() => (globalThis as unknown as { location: { hash: string } }).location.hash), /ev_start=/, 'the URL keeps the bucket')
  await page.click('#ev-chips .chip-remove')
  await rowCount(u1.length)
  t.equal(await chip.count(), 0, 'the chip is gone')

  // 7. Slowest first.
  await page.click('#ev-sort-latency')
  await rowCount(u1.length)
  const slow = [...u1].sort((a, b) => b.latency - a.latency || b.ts - a.ts)
  t.same(
    (await page.locator('#ev-body tr td[data-label="latency"]').allInnerTexts()).map((s) => Number.parseInt(s)),
    slow.map((e) => e.latency),
    'largest latency first'
  )
  await page.click('#ev-sort-time')
  await rowCount(u1.length)

  // 8. A live event of u1 joins the top of the table (newest page, no bucket); one of u2 does not.
  await page.locator('#conn.live').waitFor(WAIT)
  const [u2Live] = await ingest([{ model: 'gpt-4o', provider: 'openai', prompt_tokens: 7, completion_tokens: 3, latency_ms: 42, user_id: 'u2' }])
  const [liveId] = await ingest([{ model: 'gpt-4o', provider: 'openai', prompt_tokens: 7, completion_tokens: 3, latency_ms: 42, user_id: 'u1', metadata: { live: true } }])
  await rowCount(u1.length + 1)
  t.equal((await rowIds())[0], liveId, 'the live event is the first row')
  // Its panel fetches the whole event (the live feed carries only some fields).
  await page.click(`#ev-body tr[data-id="${liveId}"]`)
  await page.locator('#ev-fields dd[data-field="prompt_tokens"]', { hasText: '7' }).waitFor(WAIT)
  t.equal(await page.locator('#ev-fields dd[data-field="metadata"] pre').innerText(), JSON.stringify({ live: true }, null, 2))
  await page.keyboard.press('Escape')

  // 9. Removing the filter brings every event back, the live ones included.
  await page.click('#chips .chip-remove')
  await rowCount(50)
  t.same((await rowIds()).slice(0, 3), [liveId, u2Live, top.id], 'the two live events, then the newest of the first batch')

  // 10. Another range asks the table again: its rows are the API's first page for that range.
  const before = pages.length
  await page.selectOption('#range', '15m')
  await page.waitForFunction(() => {
    const d = (globalThis as unknown as { document: Doc }).document
    // The old rows went when the range changed: rows again mean the new first page came.
    return d.querySelectorAll('#ev-body tr').length > 0
  }, null, WAIT)
  const asked = pages.slice(before).filter((u) => !u.searchParams.has('cursor')).at(-1)!
  t.ok(Number(asked.searchParams.get('end_time')) - Number(asked.searchParams.get('start_time')) === 15 * 60_000, 'the table asks the last 15 minutes')
  const api = (await (await fetch(`${base}/events?${asked.searchParams}`, { headers: { 'x-api-key': ADMIN_KEY } })).json()) as { events: Array<{ id: string }> }
  t.ok(api.events.length > 2 && api.events.length < 50, `a shorter range, fewer events (${api.events.length})`)
  await rowCount(api.events.length)
  t.same(await rowIds(), api.events.map((e) => e.id), 'the rows of the new range')

  // 11. A page the server refuses (here a 409, as for a re-priced sort=cost cursor; made by the
  // router, once) stops the table with the server's message and a button that starts it again.
  let refused = 0
  await page.route(
    (url) => url.pathname === '/events' && !url.searchParams.has('format'),
    async (route) => {
      refused++
      await route.fulfill({ status: 409, json: { statusCode: 409, code: 'LLMS_ERR_CONFLICT', error: 'Conflict', message: 'the range was re-priced since the first page' } })
    },
    { times: 1 }
  )
  await page.click('#ev-sort-cost')
  await page.locator('#ev-error', { hasText: 'Could not load events: the range was re-priced since the first page' }).waitFor(WAIT)
  t.equal(refused, 1, 'one page refused')
  t.equal(await page.locator('#ev-body tr').count(), 0, 'no rows')
  // The retry resolves "the last 15 minutes" again, later: under load an event may have left the
  // window meanwhile (they are 21 s apart), so its rows are the API's answer to what it asked.
  const [retriedRequest] = await Promise.all([
    page.waitForRequest((r) => {
      const u = new URL(r.url())
      return u.pathname === '/events' && !u.searchParams.has('cursor') && !u.searchParams.has('format')
    }, WAIT),
    page.click('#ev-retry')
  ])
  const retried = new URL(retriedRequest.url())
  t.equal(retried.searchParams.get('sort'), 'cost', 'the retry asks the same sort again')
  const again = (await (await fetch(`${base}/events?${retried.searchParams}`, { headers: { 'x-api-key': ADMIN_KEY } })).json()) as { events: Array<{ id: string }> }
  await rowCount(again.events.length)
  t.same(await rowIds(), again.events.map((e) => e.id), 'the rows the retry asked for')
  t.equal(await page.locator('#ev-retry').isVisible(), false, 'the button goes once the rows are back')
  t.equal(await page.locator('#ev-error').innerText(), '', 'and the message')
  // The browser logs the refused request itself.
  const logged = problems.filter((p) => /status of 409/.test(p))
  t.equal(logged.length, 1, 'the 409 is the only problem logged')
  problems.splice(0, problems.length, ...problems.filter((p) => !logged.includes(p)))

  // 12. A phone: the table is one card per row, nothing wider than the screen; the panel fits.
  const phone = await browser.newContext({ viewport: { width: 375, height: 800 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true, colorScheme: 'light' })
  await phone.addInitScript(`localStorage.setItem('llmscope.apiKey', ${JSON.stringify(ADMIN_KEY)})`)
  const mobile = await phone.newPage()
  mobile.on('pageerror', (err) => problems.push(`phone page error: ${err.message}`))
  await mobile.goto(base + '/')
  await mobile.locator('#ev-body tr').first().waitFor(WAIT)
  await mobile.locator('#events').screenshot({ path: ARTIFACTS + 'dashboard-events-375-table.png' })
  await mobile.locator('#ev-body tr').first().click()
  await mobile.locator('#ev-panel').waitFor({ state: 'visible', ...WAIT })
  const fit = await mobile.evaluate(() => {
    const d = (globalThis as unknown as { document: Doc & { documentElement: { scrollWidth: number } } }).document
    const boxes = Array.from(d.querySelectorAll('#ev-body tr:first-child td, #ev-panel') as unknown as ArrayLike<{ getBoundingClientRect(): { left: number; right: number } }>)
    return { scroll: d.documentElement.scrollWidth, right: Math.max(...boxes.map((b) => b.getBoundingClientRect().right)), left: Math.min(...boxes.map((b) => b.getBoundingClientRect().left)) }
  })
  t.ok(fit.scroll <= 375, `nothing overflows at 375 px (scrollWidth ${fit.scroll})`)
  t.ok(fit.right <= 375 && fit.left >= 0, `every cell of a row and the panel are on screen (${fit.left}..${fit.right})`)
  await mobile.screenshot({ path: ARTIFACTS + 'dashboard-events-375-panel.png' })
  await phone.close()

  t.equal(maxInFlight, 1, 'never two pages asked at once')
  t.same(problems, [], 'no script errors, no CSP violations')
  await context.close()
})
