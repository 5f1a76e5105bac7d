/**
 * The dashboard in a real browser (Debian's chromium driven by playwright-core) against a real
 * listening app: key prompt, live tail, tiles, chart and cost bars updating from events sent
 * over HTTP, an alert rule created in the page that fires, pause and model filter, enable /
 * disable / delete, a phone-width layout, and a strict CSP. Then projects, the breakdown panel,
 * filter chips, the view kept in the URL, and the 375 px layout with rules present.
 * Screenshots go to test/artifacts/.
 *
 * Skipped when /usr/bin/chromium is missing (`.ci/run` installs it, so CI always runs it).
 * Every wait is for a DOM condition, bounded; no timing assertions.
 */
import t from 'tap'
import { existsSync, mkdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { AddressInfo } from 'node:net'
import { chromium, type Browser, type Page } from 'playwright-core'
import { ADMIN_KEY, READ_KEY, makeApp } from '../helpers/app.js'

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const ARTIFACTS = fileURLToPath(new URL('../artifacts/', import.meta.url))
// Generous: Chromium on a busy 2-core CI machine can take many seconds to start and connect.
const WAIT = { timeout: 60_000 }
/** What the browser may load when the server sends no CSP of its own: this origin only. */
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"

/**
 * Predicates are functions, not strings: playwright polls a string predicate through eval,
 * which the page's CSP (no 'unsafe-eval') refuses whenever the first check is not yet true.
 * `globalThis.document` because this file is type-checked without the DOM library.
 */
type Box = { getBoundingClientRect(): { left: number; right: number }; scrollWidth: number; clientWidth: number; textContent: string | null }
type Doc = {
  querySelectorAll(s: string): ArrayLike<Box>
  getElementById(id: string): { textContent: string | null } | null
  title: string
  documentElement: { scrollWidth: number; clientWidth: number }
}

/** Waits until the live tail shows `n` rows. */
const tailCount = (page: Page, n: number) =>
  page.waitForFunction((k) => (globalThis as unknown as { document: Doc }).document.querySelectorAll('#tail-body tr').length === k, n, WAIT)

const skip = existsSync(CHROMIUM) ? false : `Chromium not found at ${CHROMIUM}: install it (apt-get install -y chromium) or set CHROMIUM_PATH; .ci/run installs it`

t.test('the dashboard shows live traffic and alerts in a real browser', { skip }, async (t) => {
  const built = await makeApp(t, { inlinePricing: true })
  // The page runs under a strict CSP: the server's own (helmet) when it sends one, else this.
  // (Set by the server: a page fulfilled by playwright's router counts as public, and Chromium's
  // local-network checks would then refuse its WebSocket to 127.0.0.1.)
  built.app.addHook('onSend', async (_request, reply) => {
    if (!reply.hasHeader('content-security-policy')) reply.header('content-security-policy', CSP)
  })
  await built.app.listen({ port: 0, host: '127.0.0.1' })
  const base = `http://127.0.0.1:${(built.app.server.address() as AddressInfo).port}`

  const browser: Browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
  t.teardown(() => browser.close())
  const context = await browser.newContext({ viewport: { width: 1360, height: 1000 }, colorScheme: 'light' })
  const page: Page = await context.newPage()
  const problems: string[] = []
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`))
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console error: ${msg.text()} ${msg.location().url}`)
  })

  const ingest = async (events: Array<Record<string, unknown>>) => {
    const r = await fetch(`${base}/events/batch`, { method: 'POST', headers: { 'x-api-key': ADMIN_KEY, 'content-type': 'application/json' }, body: JSON.stringify(events) })
    t.equal(r.status, 202, 'ingested')
  }
  const text = (sel: string) => page.locator(sel).innerText()
  const tailRows = page.locator('#tail-body tr')

  // 1. First visit: the key prompt, nothing else.
  await page.goto(base + '/')
  await page.locator('#key-panel').waitFor({ state: 'visible', ...WAIT })
  t.equal(await page.locator('#dash').isVisible(), false, 'no dashboard before a key')
  await page.fill('#key-input', 'not-a-real-key-123')
  await page.click('#key-form button[type=submit]')
  await page.locator('#key-error', { hasText: '401' }).waitFor(WAIT)
  await page.fill('#key-input', ADMIN_KEY)
  await page.click('#key-form button[type=submit]')
  await page.locator('#dash').waitFor({ state: 'visible', ...WAIT })
  await page.locator('#conn.live').waitFor(WAIT)

  // 2. Empty states before any event.
  await page.locator('#tail-empty', { hasText: 'No events yet' }).waitFor(WAIT)
  mkdirSync(ARTIFACTS, { recursive: true })
  await page.screenshot({ path: ARTIFACTS + 'dashboard-empty.png', fullPage: true })
  problems.length = 0 // the wrong key's 401 above is expected
  t.match(await text('#curl-example'), /curl -X POST http:\/\/127\.0\.0\.1:\d+\/events\/ingest/, 'a copyable curl command')
  t.equal(await text('#t-requests'), '0')
  t.ok(await page.locator('#rules-empty').isVisible(), 'no rules yet')
  t.ok(await page.locator('#alerts-empty').isVisible(), 'no alerts yet')
  t.ok(await page.locator('#cost-empty').isVisible(), 'no cost yet')

  // 3. Events over HTTP: the tail, tiles, cost bars and chart follow.
  await ingest([
    { model: 'gpt-4o', provider: 'openai', prompt_tokens: 1200, completion_tokens: 300, latency_ms: 900 },
    { model: 'claude-3-5-sonnet-20241022', provider: 'anthropic', prompt_tokens: 200, completion_tokens: 80, latency_ms: 1500 },
    { model: 'my-local-model', provider: 'self-hosted', prompt_tokens: 10, completion_tokens: 5, latency_ms: 80 }
  ])
  await tailCount(page, 3)
  t.ok(await page.locator('#tail-empty').isHidden(), 'the empty state is gone')
  await page.locator('#t-requests', { hasText: /^3$/ }).waitFor(WAIT)
  await page.locator('#t-tokens', { hasText: /^1,795$/ }).waitFor(WAIT)
  await page.locator('#t-unpriced', { hasText: /^1$/ }).waitFor(WAIT)
  await page.waitForFunction(() => /\d/.test((globalThis as unknown as { document: Doc }).document.getElementById('t-p95')?.textContent ?? ''), null, WAIT)
  t.match(await text('#t-cost'), /^\$0\.00\d+/, 'a cost in dollars')
  await page.waitForFunction(() => (globalThis as unknown as { document: Doc }).document.querySelectorAll('#cost-bars li').length === 3, null, WAIT)
  t.match(await text('#cost-bars li:first-child'), /gpt-4o|claude/, 'most costly first')
  t.match(await text('#cost-bars'), /my-local-model[\s\S]*unpriced/, 'unpriced models are flagged')
  await page.click('#by-provider')
  t.match(await text('#cost-bars'), /anthropic/)
  await page.click('#by-model')
  t.ok(await page.locator('#ts-empty').isHidden(), 'the chart has data')
  t.equal(await page.locator('#charts canvas').count(), 3, 'three uPlot charts')
  await page.locator('#charts[data-requests="3"]').waitFor({ state: 'attached', ...WAIT })

  // 4. A rule made in the page fires, and shows as new.
  await page.fill('#rule-name', 'Any traffic')
  await page.selectOption('#rule-condition', 'requests_per_minute')
  await page.selectOption('#rule-comparator', 'gt')
  await page.fill('#rule-threshold', '0')
  await page.click('#rule-form button[type=submit]')
  const ruleRow = page.locator('#rules-body tr', { hasText: 'Any traffic' })
  await ruleRow.waitFor(WAIT)
  t.match(await ruleRow.innerText(), /requests\/min > 0 over 300s/)
  await ingest([{ model: 'gpt-4o', provider: 'openai', prompt_tokens: 100, completion_tokens: 20, latency_ms: 400 }])
  await page.locator('#alert-events li.firing.is-new', { hasText: 'Any traffic' }).waitFor(WAIT)
  await ruleRow.locator('.state-firing').waitFor(WAIT)
  await page.waitForFunction(() => (globalThis as unknown as { document: Doc }).document.title.startsWith('(1 firing)'), null, WAIT)
  await page.locator('#t-requests', { hasText: /^4$/ }).waitFor(WAIT)
  await page.locator('#charts[data-requests="4"]').waitFor({ state: 'attached', ...WAIT })

  const shot = ARTIFACTS + 'dashboard.png'
  await page.screenshot({ path: shot, fullPage: true })
  t.ok(existsSync(shot), `screenshot saved: ${shot}`)

  // 5. Pause holds the tail while totals go on; resume shows what came in.
  await page.click('#tail-pause')
  await ingest([{ model: 'claude-3-5-sonnet-20241022', provider: 'anthropic', prompt_tokens: 50, completion_tokens: 10, latency_ms: 700 }])
  await page.locator('#t-requests', { hasText: /^5$/ }).waitFor(WAIT)
  await page.locator('#tail-paused', { hasText: '1 new event' }).waitFor(WAIT)
  t.equal(await tailRows.count(), 4, 'the paused tail did not move')
  await page.click('#tail-pause')
  await tailCount(page, 5)

  // 6. Model filter.
  await page.selectOption('#tail-model', 'gpt-4o')
  await tailCount(page, 2)
  for (const row of await tailRows.allInnerTexts()) t.match(row, /gpt-4o/)
  await page.selectOption('#tail-model', '')

  // 7. Disable resolves the firing rule; delete (two clicks) removes it.
  await ruleRow.getByRole('checkbox').uncheck()
  await ruleRow.locator('.state-disabled').waitFor(WAIT)
  await page.locator('#alert-events li.resolved', { hasText: 'Any traffic' }).waitFor(WAIT)
  t.equal((await built.engine.rules.list())[0].enabled, false, 'the server has it disabled')
  await ruleRow.getByRole('button', { name: /Delete/ }).click()
  await ruleRow.getByRole('button', { name: /Delete/ }).click()
  await page.locator('#rules-empty').waitFor({ state: 'visible', ...WAIT })
  t.equal(built.engine.rules.size, 0, 'the server deleted it')

  // 8. Ranges: a custom one before any event is empty; 7 days uses hourly buckets.
  await page.selectOption('#range', 'custom')
  await page.fill('#custom-start', '2026-01-01T00:00')
  await page.fill('#custom-end', '2026-01-02T00:00')
  await page.click('#custom-range button[type=submit]')
  await page.locator('#t-requests', { hasText: /^0$/ }).waitFor(WAIT)
  await page.locator('#cost-empty').waitFor({ state: 'visible', ...WAIT })
  await page.selectOption('#range', '7d')
  await page.locator('#ts-interval', { hasText: '1h buckets' }).waitFor(WAIT)
  await page.locator('#t-requests', { hasText: /^5$/ }).waitFor(WAIT)

  // 9. The key is remembered: a reload goes straight to the dashboard.
  await page.reload()
  await page.locator('#dash').waitFor({ state: 'visible', ...WAIT })
  await page.locator('#t-requests', { hasText: /^5$/ }).waitFor(WAIT)
  await tailCount(page, 5)

  // 10. A phone: one column, nothing wider than the screen.
  const phone = await browser.newContext({ viewport: { width: 375, height: 800 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true })
  await phone.addInitScript(`localStorage.setItem('llmscope.apiKey', ${JSON.stringify(ADMIN_KEY)})`)
  const mobile = await phone.newPage()
  mobile.on('pageerror', (err) => problems.push(`phone page error: ${err.message}`))
  await mobile.goto(base + '/')
  await mobile.locator('#t-requests', { hasText: /^5$/ }).waitFor(WAIT)
  await tailCount(mobile, 5)
  const overflow = await mobile.evaluate<number>(`document.documentElement.scrollWidth - document.documentElement.clientWidth`)
  t.equal(overflow, 0, 'no horizontal scrolling at 375 px')
  await mobile.screenshot({ path: ARTIFACTS + 'dashboard-phone.png', fullPage: true })
  await phone.close()

  t.same(problems, [], 'no script errors, no CSP violations')
  await context.close()
})

t.test('projects, the breakdown panel, filter chips, the view in the URL and a 375 px phone', { skip }, async (t) => {
  const built = await makeApp(t, { inlinePricing: true })
  built.app.addHook('onSend', async (_request, reply) => {
    if (!reply.hasHeader('content-security-policy')) reply.header('content-security-policy', CSP)
  })
  await built.app.listen({ port: 0, host: '127.0.0.1' })
  const base = `http://127.0.0.1:${(built.app.server.address() as AddressInfo).port}`
  const call = async (method: string, path: string, body: unknown, project?: string) => {
    const headers: Record<string, string> = { 'x-api-key': ADMIN_KEY, 'content-type': 'application/json' }
    if (project !== undefined) headers['x-llmscope-project'] = project
    return fetch(base + path, { method, headers, body: JSON.stringify(body) })
  }
  const ingest = async (events: Array<Record<string, unknown>>, project?: string) => {
    t.equal((await call('POST', '/events/batch', events, project)).status, 202, `ingested into ${project ?? 'default'}`)
  }

  // Two projects with different traffic. Default: u1 twice, u2 once, one event with no user.
  t.equal((await call('POST', '/projects', { id: 'acme', name: 'Acme' })).status, 201, 'project created')
  const LONG_MODEL = 'my-org-fine-tuned-gpt-4o-mini-2024-07-18-customer-support-experimental-v12'
  await ingest([
    { model: 'gpt-4o', provider: 'openai', prompt_tokens: 1000, completion_tokens: 200, latency_ms: 500, user_id: 'u1', tags: ['search'], metadata: { feature: 'search' } },
    { model: 'gpt-4o', provider: 'openai', prompt_tokens: 400, completion_tokens: 100, latency_ms: 700, user_id: 'u1', metadata: { feature: 'chat' } },
    { model: 'claude-3-5-sonnet-20241022', provider: 'anthropic', prompt_tokens: 300, completion_tokens: 90, latency_ms: 1500, user_id: 'u2', tags: ['chat'], metadata: { feature: 'chat' }, status: 'error' },
    { model: LONG_MODEL, provider: 'openai', prompt_tokens: 50, completion_tokens: 10, latency_ms: 90 }
  ])
  await ingest(
    [
      { model: 'gpt-4o-mini', provider: 'openai', prompt_tokens: 10, completion_tokens: 5, latency_ms: 80, user_id: 'a1' },
      { model: 'gpt-4o-mini', provider: 'openai', prompt_tokens: 10, completion_tokens: 5, latency_ms: 80, user_id: 'a1' }
    ],
    'acme'
  )

  const browser: Browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
  t.teardown(() => browser.close())
  const problems: string[] = []
  const open = async (key: string, viewport: { width: number; height: number }, mobile = false) => {
    const context = await browser.newContext(
      mobile ? { viewport, deviceScaleFactor: 2, isMobile: true, hasTouch: true, colorScheme: 'light' } : { viewport, colorScheme: 'light' }
    )
    await context.addInitScript(`localStorage.setItem('llmscope.apiKey', ${JSON.stringify(key)})`)
    const page = await context.newPage()
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`))
    page.on('console', (msg) => {
      if (msg.type() === 'error') problems.push(`console error: ${msg.text()} ${msg.location().url}`)
    })
    return { context, page }
  }
  // On a failure, what the page saw explains it (a refused request, a script error).
  t.teardown(() => {
    if (problems.length > 0) console.error(`browser problems:\n${problems.join('\n')}`)
  })
  const requests = (page: Page, n: number) => page.locator('#t-requests', { hasText: new RegExp(`^${n}$`) }).waitFor(WAIT)
  const hash = (page: Page) => page.evaluate(() => (globalThis as unknown as { location: { hash: string } }).location.hash)
  mkdirSync(ARTIFACTS, { recursive: true })

  // 1. An owner key sees the picker; switching projects changes the figures (and the URL).
  const { context, page } = await open(ADMIN_KEY, { width: 1280, height: 1000 })
  await page.goto(base + '/')
  await page.locator('#project-picker').waitFor({ state: 'visible', ...WAIT })
  t.same(await page.locator('#project option').evaluateAll((os) => os.map((o) => (o as unknown as { value: string }).value).sort()), ['acme', 'default'])
  await requests(page, 4)
  await tailCount(page, 4)
  await page.selectOption('#project', 'acme')
  await requests(page, 2)
  await tailCount(page, 2)
  t.match(await page.locator('#tail-body').innerText(), /a1/, 'the tail shows the other project’s events')
  t.notMatch(await page.locator('#tail-body').innerText(), /u1|u2/, 'and none of the first one’s')
  t.match(await hash(page), /project=acme/, 'the URL names the project')
  await page.selectOption('#project', 'default')
  await requests(page, 4)
  await tailCount(page, 4)

  // 2. The tail shows every field of an event.
  const tailText = await page.locator('#tail-body').innerText()
  for (const field of ['anthropic', 'u2', 'error', 'success', 'claude-3-5-sonnet-20241022']) t.match(tailText, field, `the tail shows ${field}`)

  // 3. The breakdown panel: by user_id, sorted by requests; no user is "(none)" and not a button.
  await page.selectOption('#bd-dim', 'user_id')
  await page.click('#bd-sort-requests')
  await page.waitForFunction(() => (globalThis as unknown as { document: Doc }).document.querySelectorAll('#bd-body tr').length === 3, null, WAIT)
  t.equal(await page.locator('#bd-body tr:first-child button.bd-value').innerText(), 'u1', 'the top user by requests')
  t.match(await page.locator('#bd-body tr:first-child').innerText(), /u1\s+2\b/)
  const none = page.locator('#bd-body tr', { hasText: '(none)' })
  t.equal(await none.count(), 1, 'events without a user form "(none)"')
  t.equal(await none.locator('button').count(), 0, '"(none)" is not clickable')
  t.match(await page.locator('#bd-foot').innerText(), /Total\s+4\b/, 'the total row')
  await page.screenshot({ path: ARTIFACTS + 'dashboard-1280.png', fullPage: true })

  // 4. Clicking a user adds a chip and filters the tiles, charts, costs, breakdown and tail.
  await page.click('#bd-body button.bd-value:text-is("u1")')
  await page.locator('#chips .chip', { hasText: 'user_id = u1' }).waitFor(WAIT)
  await requests(page, 2)
  await tailCount(page, 2)
  for (const row of await page.locator('#tail-body tr').allInnerTexts()) t.match(row, /\bu1\b/, 'only u1 in the tail')
  await page.locator('#charts[data-requests="2"]').waitFor({ state: 'attached', ...WAIT })
  await page.waitForFunction(() => (globalThis as unknown as { document: Doc }).document.querySelectorAll('#bd-body tr').length === 1, null, WAIT)
  t.match(await hash(page), /user_id=u1/, 'the URL keeps the filter')
  // New traffic: u2's event (sent first) never reaches the filtered tail, u1's does.
  await ingest([{ model: 'gpt-4o', provider: 'openai', prompt_tokens: 1, completion_tokens: 1, latency_ms: 10, user_id: 'u2' }])
  await ingest([{ model: 'gpt-4o', provider: 'openai', prompt_tokens: 1, completion_tokens: 1, latency_ms: 10, user_id: 'u1' }])
  await tailCount(page, 3)
  await requests(page, 3)
  t.notMatch(await page.locator('#tail-body').innerText(), /\bu2\b/, 'the filtered live stream leaves u2 out')

  // 5. The URL reopens the same view.
  await page.reload()
  await page.locator('#chips .chip', { hasText: 'user_id = u1' }).waitFor(WAIT)
  await requests(page, 3)
  await tailCount(page, 3)
  t.equal(await page.locator('#bd-dim').inputValue(), 'user_id', 'the dimension is kept')
  t.equal(await page.locator('#bd-sort-requests').getAttribute('aria-pressed'), 'true', 'the sort is kept')
  const second = await context.newPage()
  await second.goto(page.url())
  await second.locator('#chips .chip', { hasText: 'user_id = u1' }).waitFor(WAIT)
  await requests(second, 3)
  await second.close()

  // 6. Removing the chip restores everything.
  await page.click('#chips .chip-remove')
  await page.locator('#filters-empty').waitFor({ state: 'visible', ...WAIT })
  await requests(page, 6)
  await tailCount(page, 6)
  t.notMatch(await hash(page), /user_id=/, 'the URL drops the filter')

  // 7. A metadata dimension from GET /analytics/dimensions; filtering on one of its values.
  await page.locator('#bd-dim option[value="metadata.feature"]').waitFor({ state: 'attached', ...WAIT })
  await page.selectOption('#bd-dim', 'metadata.feature')
  await page.locator('#bd-body button.bd-value:text-is("search")').waitFor(WAIT)
  await page.click('#bd-body button.bd-value:text-is("search")')
  await page.locator('#chips .chip', { hasText: 'metadata.feature = search' }).waitFor(WAIT)
  await requests(page, 1)
  await tailCount(page, 1)
  t.match(await hash(page), /metadata\.feature=search/)
  await page.click('#chips .chip-remove')
  await requests(page, 6)
  await context.close()

  // 8. A key that is not an owner's sees no picker, and its own project's figures.
  const reader = await open(READ_KEY, { width: 1280, height: 900 })
  await reader.page.goto(base + '/')
  await requests(reader.page, 6)
  t.equal(await reader.page.locator('#project-picker').isVisible(), false, 'no picker for a read key')
  await reader.context.close()
  // Its GET /projects was refused, as it should be (that is how the page knows): the browser logs it.
  const refused = problems.filter((p) => /status of 403 .*\/projects$/.test(p))
  t.equal(refused.length, 1, 'GET /projects answered 403 to the read key')
  problems.splice(0, problems.length, ...problems.filter((p) => !refused.includes(p)))

  // 9. A phone with rules present: nothing wider than 375 px; the tail shows every field; the
  // long model name shows whole in the cost bars.
  t.equal(
    (await call('POST', '/alerts/rules', { name: 'Spend per hour of the support assistant beyond budget', condition: 'cost_per_hour', threshold: 100, enabled: true, model: LONG_MODEL })).status,
    201
  )
  const phone = await open(ADMIN_KEY, { width: 375, height: 800 }, true)
  await phone.page.goto(base + '/#range=24h&by=user_id&sort=tokens')
  await requests(phone.page, 6)
  await tailCount(phone.page, 6)
  await phone.page.locator('#rules-body tr').waitFor(WAIT)
  await phone.page.waitForFunction(() => (globalThis as unknown as { document: Doc }).document.querySelectorAll('#bd-body tr').length === 3, null, WAIT)
  const widths = await phone.page.evaluate(() => {
    const d = (globalThis as unknown as { document: Doc }).document
    const cells = Array.from(d.querySelectorAll('#tail-body tr:first-child td, #rules-body td, #bd-body td, #chips li'))
    const labels = Array.from(d.querySelectorAll('#cost-bars .label'))
    return {
      scroll: d.documentElement.scrollWidth,
      cellRight: Math.max(...cells.map((c) => c.getBoundingClientRect().right)),
      cellLeft: Math.min(...cells.map((c) => c.getBoundingClientRect().left)),
      cut: labels.filter((l) => l.scrollWidth > l.clientWidth).map((l) => l.textContent),
      labels: labels.map((l) => l.textContent)
    }
  })
  t.ok(widths.scroll <= 375, `nothing overflows at 375 px (scrollWidth ${widths.scroll})`)
  t.ok(widths.cellRight <= 375 && widths.cellLeft >= 0, `every tail, rule and breakdown cell is on screen (${widths.cellLeft}..${widths.cellRight})`)
  t.ok(widths.labels.includes(LONG_MODEL), 'the long model name is in the cost bars')
  t.same(widths.cut, [], 'no cost-bar label is cut')
  // The newest event (u1's gpt-4o from step 4): every field in a labelled cell, all on screen.
  const cells = phone.page.locator('#tail-body tr:first-child td')
  t.same(await cells.evaluateAll((tds) => tds.map((td) => (td as unknown as { dataset: { label: string } }).dataset.label)), ['time', 'model', 'provider', 'user', 'tokens', 'cost', 'latency', 'status'])
  for (const cell of await cells.all()) t.ok(await cell.isVisible(), `${await cell.getAttribute('data-label')} is visible`)
  t.match(await phone.page.locator('#tail-body tr:first-child').innerText(), /gpt-4o[\s\S]*openai[\s\S]*u1[\s\S]*\$[\s\S]*ms[\s\S]*success/, 'model, provider, user, cost, latency and status')
  await phone.page.screenshot({ path: ARTIFACTS + 'dashboard-375.png', fullPage: true })
  await phone.context.close()

  t.same(problems, [], 'no script errors, no CSP violations')
})
