/**
 * The dashboard's money page in a real browser (Debian's chromium driven by playwright-core, as
 * in browser.test.ts) against a real listening app: GET /prices shown as the server answers it
 * (rates, sources, the names each entry priced, unpriced models with their request counts), a
 * refused PUT shown next to the field it names, versions added through the form, a re-price
 * preview whose table equals the server's dry run (and changes nothing) before an Apply button
 * appears (the keyboard on it: Enter applies), Apply moving the shown cost to the server's new
 * figure (the card's and the overview tile), budgets whose bars are
 * spent ÷ amount wide with threshold ticks and the forecast marker where the server's forecast
 * lands, a grouped budget unfolded by keyboard, a budget refused for its time zone, a delete,
 * grouped firings (budget and rule) in the alerts list with their group, markup in data kept as
 * text, and the page at 1280 and 375 px (screenshots in test/artifacts/).
 *
 * Skipped when /usr/bin/chromium is missing (`.ci/run` installs it). Every wait is for a DOM
 * condition, bounded; no timing assertions.
 */
import t from 'tap'
import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { AddressInfo } from 'node:net'
import { chromium, type Browser, type Locator, type Page } from 'playwright-core'
import { ADMIN_KEY, READ_KEY, makeApp } from '../helpers/app.js'

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const ARTIFACTS = fileURLToPath(new URL('../artifacts/', import.meta.url))
const APP_JS = fileURLToPath(new URL('../../src/dashboard/app.js', import.meta.url))
const WAIT = { timeout: 60_000 }
/** The same strict CSP as browser.test.ts: the page, its bars and its forms hold under it. */
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
const skip = existsSync(CHROMIUM) ? false : `Chromium not found at ${CHROMIUM}: install it (apt-get install -y chromium) or set CHROMIUM_PATH; .ci/run installs it`
const LAUNCH = { executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'] }

/** Markup in a model name and a budget name: it must stay text. */
const MARKUP_MODEL = '<img src=x id=injected onerror="document.title=1">'
const MARKUP_BUDGET = '<b id=injected-b>Team</b> month'

/** How the page writes dollars (Intl, en-US, 2 to 6 decimals): the text of a money cell. */
const usd = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD', minimumFractionDigits: 2, maximumFractionDigits: 6 })
const usdSigned = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD', minimumFractionDigits: 2, maximumFractionDigits: 6, signDisplay: 'exceptZero' })

/** `YYYY-MM-DDTHH:MM:SS` in the browser's (= this process's) local time, for datetime-local inputs. */
const localInput = (ms: number) => new Date(ms - new Date(ms).getTimezoneOffset() * 60_000).toISOString().slice(0, 19)

interface PriceEntry {
  provider: string
  model: string
  source: string
  input: number
  cached_input: number
  cache_write: number
  output: number
  reasoning: number
  versions: Array<Record<string, unknown>>
  models: string[]
}
interface PricesAnswer {
  prices: PriceEntry[]
  unpriced: Array<{ provider: string; model: string; requests: number }>
}
interface DiffRow {
  provider?: string
  model?: string
  requests: number
  before: number
  after: number
  difference: number
}
interface RepriceAnswer {
  models: DiffRow[]
  total: DiffRow
}
interface Budget {
  id: string
  name: string
  amount: number
  spent: number
  remaining: number
  forecast: number
  thresholds: number[]
  groups?: Array<{ group: string | null; spent: number; remaining: number; forecast: number }>
}

/** Geometry of a budget's bar: fill width, tick and marker positions, as fractions of the bar. */
type El = { getBoundingClientRect(): { left: number; width: number; right: number }; querySelector(s: string): El | null; querySelectorAll(s: string): ArrayLike<El & { dataset: Record<string, string> }>; clientLeft: number; clientWidth: number }
/**
 * Where a budget bar's fill and marks sit, as parts of its inside width. Waits (60 s at most) for
 * the bar to have a width: a refresh of the list can replace it between the wait for it and this
 * read (seen once in a doubled suite: a width of 0, every figure NaN).
 */
async function barGeometry(meter: Locator) {
  const deadline = Date.now() + 60_000
  for (;;) {
    const g = await readBar(meter)
    if (g.width > 0 || Date.now() > deadline) return g
    await new Promise((r) => setTimeout(r, 50))
  }
}

const readBar = (meter: Locator) =>
  meter.evaluate((m) => {
    const bar = m as unknown as El
    const box = bar.getBoundingClientRect()
    // The bar's inside (its border excluded) is what the fill and the marks are placed in.
    const left = box.left + bar.clientLeft
    const width = bar.clientWidth
    const at = (e: El) => {
      const b = e.getBoundingClientRect()
      return (b.left + b.width / 2 - left) / width
    }
    const fill = bar.querySelector('.bfill')!
    const marker = bar.querySelector('.bforecast')
    return {
      width,
      fill: fill.getBoundingClientRect().width / width,
      ticks: Array.from(bar.querySelectorAll('.btick')).map((tk) => ({ threshold: Number(tk.dataset.threshold), at: at(tk) })),
      forecast: marker === null ? null : at(marker)
    }
  })

t.test('the money page: prices, a re-price previewed then applied, budgets, grouped firings', { skip }, async (t) => {
  const built = await makeApp(t, { inlinePricing: true })
  built.app.addHook('onSend', async (_request, reply) => {
    if (!reply.hasHeader('content-security-policy')) reply.header('content-security-policy', CSP)
  })
  // A 500 answers only "internal error": keep the server's own account of it for the report.
  const serverErrors: string[] = []
  built.app.addHook('onError', async (request, _reply, err) => {
    if (!(err as { statusCode?: number }).statusCode || (err as { statusCode: number }).statusCode >= 500) serverErrors.push(`${request.method} ${request.url}: ${err.stack ?? err.message}`)
  })
  await built.app.listen({ port: 0, host: '127.0.0.1' })
  const base = `http://127.0.0.1:${(built.app.server.address() as AddressInfo).port}`
  const call = async <T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> => {
    const r = await fetch(base + path, { method, headers: { 'x-api-key': ADMIN_KEY, ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, body: body === undefined ? undefined : JSON.stringify(body) })
    return { status: r.status, body: (r.status === 204 ? null : await r.json()) as T }
  }
  const metricsCost = async (start: number, end: number) => (await call<{ total_cost: number }>('GET', `/analytics/metrics?start_time=${start}&end_time=${end}`)).body.total_cost

  // Events of the last minute: gpt-4o (priced by the pricing data) for u1 and u2, a self-hosted
  // model nobody priced (u2), and one whose name is markup (unpriced too).
  const now = Date.now()
  const events: Array<Record<string, unknown>> = []
  const ev = (i: number, model: string, provider: string, user: string) => ({ timestamp: new Date(now - (i + 1) * 1000).toISOString(), model, provider, prompt_tokens: 1000, completion_tokens: 500, latency_ms: 100, user_id: user })
  for (let i = 0; i < 6; i++) events.push(ev(i, 'gpt-4o', 'openai', i < 4 ? 'u1' : 'u2'))
  for (let i = 6; i < 9; i++) events.push(ev(i, 'house-llm', 'selfhost', 'u2'))
  events.push(ev(9, MARKUP_MODEL, 'selfhost', 'u3'))
  const ingested = await call<{ accepted: number }>('POST', '/events/batch', events)
  t.equal(ingested.status, 202, 'events ingested')
  const first = now - 11_000
  const rangeStart = now - 3_600_000
  const rangeEnd = now + 60_000

  const browser: Browser = await chromium.launch(LAUNCH)
  t.teardown(() => browser.close())
  const context = await browser.newContext({ viewport: { width: 1280, height: 1000 }, colorScheme: 'light' })
  await context.addInitScript(`localStorage.setItem('llmscope.apiKey', ${JSON.stringify(ADMIN_KEY)})`)
  const page: Page = await context.newPage()
  const problems: string[] = []
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`))
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console error: ${msg.text()}`)
  })
  t.teardown(() => {
    if (problems.length > 0) console.error(`browser problems:\n${problems.join('\n')}`)
  })
  // The frames the page's /ws receives: grouped firings must reach it live, not only by history.
  const frames: Array<{ type?: string; group?: string | null }> = []
  page.on('websocket', (ws) =>
    ws.on('framereceived', (f) => {
      try {
        frames.push(JSON.parse(String(f.payload)))
      } catch {
        // not JSON: not ours to judge here
      }
    })
  )
  mkdirSync(ARTIFACTS, { recursive: true })

  // 1. The page opens on the overview; the keyboard reaches the money page.
  await page.goto(base + '/')
  await page.locator('#conn.live').waitFor(WAIT)
  await page.focus('#view-money')
  await page.keyboard.press('Enter')
  await page.locator('#money').waitFor({ state: 'visible', ...WAIT })
  t.equal(await page.locator('#overview').isVisible(), false, 'the overview is hidden')
  t.match(await page.evaluate(() => (globalThis as unknown as { location: { hash: string } }).location.hash), /view=money/, 'the URL keeps the page')

  // 2. Prices: every entry shown as GET /prices answers it.
  const prices = (await call<PricesAnswer>('GET', '/prices')).body
  t.ok(Array.isArray(prices.prices) && Array.isArray(prices.unpriced), 'GET /prices answers prices and unpriced')
  const shown = Math.min(200, prices.prices.length)
  await page.waitForFunction((n) => (globalThis as unknown as { document: { querySelectorAll(s: string): ArrayLike<unknown> } }).document.querySelectorAll('#prices-body tr[data-key]').length === n, shown, WAIT)
  const checkEntry = async (p: PriceEntry) => {
    const row = page.locator(`#prices-body tr[data-key="${p.provider}|${p.model}"]`)
    t.equal(await row.locator('td').nth(0).innerText(), p.model, `${p.model}: the model`)
    t.equal(await row.locator('td').nth(1).innerText(), p.provider, `${p.model}: the provider`)
    t.equal(await row.locator('td').nth(2).innerText(), p.source, `${p.model}: the source`)
    for (const k of ['input', 'cached_input', 'cache_write', 'output', 'reasoning'] as const) {
      t.equal(await row.locator(`td[data-rate="${k}"]`).innerText(), usd.format(p[k]), `${p.model}: ${k} ${p[k]} $/Mtok`)
    }
    t.equal(await row.locator('td.priced').getAttribute('title'), p.models.join('\n'), `${p.model}: the names it priced`)
  }
  for (const p of prices.prices.slice(0, 20)) await checkEntry(p)
  // Unpriced models with their request counts (the markup one as text).
  const unpricedRow = (model: string) => page.locator('#unpriced-body tr').filter({ has: page.locator('td.model', { hasText: model }) })
  for (const [model, requests] of [['house-llm', 3], [MARKUP_MODEL, 1]] as const) {
    const fromServer = prices.unpriced.find((u) => u.model === model)
    t.equal(fromServer?.requests, requests, `the server counts ${requests} unpriced request(s) of ${model}`)
    await unpricedRow(model).waitFor(WAIT)
    t.equal(await unpricedRow(model).locator('td[data-label="requests"]').innerText(), String(requests), `the page shows them for ${model}`)
  }
  t.equal(await page.locator('#injected').count(), 0, 'a model name with markup is text, not an element')
  // The model search asks GET /prices?model= and shows its answer.
  await page.fill('#prices-q', 'gpt-4o')
  await page.press('#prices-q', 'Enter')
  const searched = (await call<PricesAnswer>('GET', '/prices?model=gpt-4o')).body
  t.ok(searched.prices.some((p) => p.models?.includes('gpt-4o')), 'the server has an entry that priced gpt-4o')
  await page.waitForFunction((n) => (globalThis as unknown as { document: { querySelectorAll(s: string): ArrayLike<unknown> } }).document.querySelectorAll('#prices-body tr[data-key]').length === n, Math.min(200, searched.prices.length), WAIT)
  for (const p of searched.prices.slice(0, 20)) await checkEntry(p)

  // 3. A refused version: the server's problem shows next to the field it names.
  await page.fill('#pf-provider', 'openai')
  await page.fill('#pf-model', 'gpt-4o')
  await page.fill('#pf-input', '-1')
  await page.fill('#pf-output', '4')
  const [refused] = await Promise.all([page.waitForResponse((r) => r.url().endsWith('/prices') && r.request().method() === 'PUT', WAIT), page.click('#price-form button[type=submit]')])
  t.equal(refused.status(), 400, 'a negative rate is refused')
  const refusal = (await refused.json()) as { details: Array<{ path: string; message: string }> }
  const detail = refusal.details.find((d) => d.path.replace(/^\(body\)\s*/, '').startsWith('input'))
  t.ok(detail, 'the server names the field input')
  await page.locator('#pf-input-error', { hasText: detail!.message }).waitFor(WAIT)
  t.equal(await page.getAttribute('#pf-input', 'aria-invalid'), 'true', 'the field is marked invalid')
  problems.splice(0, problems.length, ...problems.filter((p) => !/status of 400/.test(p)))

  // 4. Two versions from two hours ago: gpt-4o cheaper, the self-hosted model priced ("Set a price").
  const from = localInput(now - 2 * 3_600_000)
  await page.fill('#pf-input', '1.5')
  await page.fill('#pf-from', from)
  await page.click('#price-form button[type=submit]')
  await page.locator('#price-form-done', { hasText: 'Added: openai gpt-4o' }).waitFor(WAIT)
  t.equal(await page.locator('#pf-input-error').innerText(), '', 'the error went')
  const after = (await call<PricesAnswer>('GET', '/prices?model=gpt-4o')).body
  const gptNow = after.prices.find((p) => p.versions?.some((v) => ((v.rates as Record<string, number> | undefined)?.input ?? v.input) === 1.5))
  t.ok(gptNow, 'the server holds the version added')
  t.ok(gptNow!.models.includes('gpt-4o'), 'in an entry that prices gpt-4o')
  // The page unfolded the versions of the entry it added to.
  const versions = page.locator(`#prices-body tr[data-versions-of="${gptNow!.provider}|${gptNow!.model}"] tbody tr`)
  await versions.first().waitFor(WAIT)
  t.equal(await versions.count(), gptNow!.versions.length, 'every version of the entry is listed')
  t.ok((await versions.locator('td[data-rate="input"]').allInnerTexts()).includes('$1.50'), 'the new version among them')
  await checkEntry(gptNow!)
  // Back to every entry; the self-hosted model gets its price from its unpriced row.
  await page.fill('#prices-q', '')
  await page.press('#prices-q', 'Enter')
  await unpricedRow('house-llm').locator('button').click()
  t.equal(await page.inputValue('#pf-model'), 'house-llm', '"Set a price" fills the model')
  t.equal(await page.inputValue('#pf-provider'), 'selfhost', 'and its provider')
  t.equal(await page.evaluate(() => (globalThis as unknown as { document: { activeElement: { id: string } } }).document.activeElement.id), 'pf-input', 'and puts the keyboard on the input rate')
  await page.keyboard.type('10')
  await page.fill('#pf-output', '20')
  await page.fill('#pf-from', from)
  await page.click('#price-form button[type=submit]')
  await page.locator('#price-form-done', { hasText: 'Added: selfhost house-llm' }).waitFor(WAIT)

  // 5. Re-pricing: the dry run's table first, equal to the server's answer; nothing changes.
  const cost0 = await metricsCost(rangeStart, rangeEnd)
  t.equal(await page.locator('#rp-apply').isVisible(), false, 'no Apply button before a preview')
  // A range that ends before it starts: the server's word lands under "To".
  await page.fill('#rp-start', localInput(rangeStart))
  await page.fill('#rp-end', localInput(rangeStart - 60_000))
  await page.click('#rp-preview')
  await page.locator('#rp-end_time-error:not(:empty)').waitFor(WAIT)
  t.match(await page.locator('#rp-end_time-error').innerText(), /start_time/, 'the end is refused for ending before the start')
  t.equal(await page.locator('#rp-apply').isVisible(), false, 'and no Apply button')
  problems.splice(0, problems.length, ...problems.filter((p) => !/status of 400/.test(p)))
  await page.fill('#rp-end', localInput(rangeEnd))
  t.equal(await page.getAttribute('#rp-end', 'aria-invalid'), null, 'editing the field takes the mark away')
  t.equal(await page.locator('#rp-end_time-error').innerText(), '', 'and the message')
  const [previewReq] = await Promise.all([page.waitForRequest((r) => r.url().endsWith('/prices/reprice'), WAIT), page.click('#rp-preview')])
  const sent = previewReq.postDataJSON() as { start_time: string; end_time: string; dry_run: boolean; model?: string }
  t.equal(sent.dry_run, true, 'the preview is a dry run')
  t.equal(Date.parse(sent.start_time), Math.floor(rangeStart / 1000) * 1000, 'from the range start (to the second)')
  await page.locator('#rp-apply').waitFor({ state: 'visible', ...WAIT })
  const dry = await call<RepriceAnswer>('POST', '/prices/reprice', sent)
  t.equal(dry.status, 200, 'the same dry run asked by the test')
  const answer = dry.body
  const rows = page.locator('#rp-body tr')
  t.equal(await rows.count(), answer.models.length, 'one row per model of the answer')
  t.ok(answer.models.length >= 2, 'gpt-4o and house-llm change')
  for (const [i, m] of answer.models.entries()) {
    const row = rows.nth(i)
    t.equal(await row.locator('td').nth(0).innerText(), m.model, `row ${i}: model`)
    for (const f of ['requests', 'before', 'after', 'difference'] as const) {
      const cell = row.locator(`td[data-field="${f}"]`)
      t.equal(Number(await cell.getAttribute('data-value')), m[f], `${m.model}: ${f} is the server's ${m[f]}`)
      const text = await cell.innerText()
      t.equal(text, f === 'requests' ? String(m[f]) : f === 'difference' ? usdSigned.format(m[f]) : usd.format(m[f]), `${m.model}: ${f} shown as ${text}`)
    }
  }
  for (const f of ['requests', 'before', 'after', 'difference'] as const) {
    t.equal(Number(await page.locator(`#rp-foot td[data-field="${f}"]`).getAttribute('data-value')), answer.total[f], `total ${f}`)
  }
  // By hand: 6 gpt-4o events of 1000 + 500 tokens at $1.5/$4 per Mtok; 3 house-llm at $10/$20.
  const byModel = new Map(answer.models.map((m) => [m.model, m]))
  t.ok(Math.abs(byModel.get('gpt-4o')!.after - 6 * (1000 * 1.5 + 500 * 4) / 1e6) < 1e-9, `gpt-4o after = 6 × $0.0035 (${byModel.get('gpt-4o')!.after})`)
  t.equal(byModel.get('house-llm')!.before, 0, 'house-llm was unpriced')
  t.ok(Math.abs(byModel.get('house-llm')!.after - 3 * (1000 * 10 + 500 * 20) / 1e6) < 1e-9, `house-llm after = 3 × $0.02 (${byModel.get('house-llm')!.after})`)
  t.equal(await metricsCost(rangeStart, rangeEnd), cost0, 'the dry run changed nothing')
  await page.locator('#rp-current[data-value]').waitFor(WAIT)
  t.equal(Number(await page.getAttribute('#rp-current', 'data-value')), cost0, 'the page shows the cost counted now')
  t.ok(Math.abs(cost0 - answer.total.before) < 1e-9, 'which is the total before')
  await page.screenshot({ path: ARTIFACTS + 'dashboard-money-preview-1280.png', fullPage: true })

  // 6. Apply: the shown cost moves to the server's new figure.
  // The preview hands the keyboard to Apply: Enter applies.
  t.equal(await page.evaluate(() => (globalThis as unknown as { document: { activeElement: { id: string } } }).document.activeElement.id), 'rp-apply', 'the keyboard is on Apply')
  const [applyRes] = await Promise.all([page.waitForResponse((r) => r.url().endsWith('/prices/reprice') && (r.request().postDataJSON() as { dry_run: boolean }).dry_run === false, WAIT), page.keyboard.press('Enter')])
  const applied = applyRes.request().postDataJSON() as Record<string, unknown>
  t.same(applied, { ...sent, dry_run: false }, 'Apply sends the previewed body')
  t.equal(applyRes.status(), 200, `the re-pricing is applied (${applyRes.status() === 200 ? 'ok' : `${await applyRes.text()} ${serverErrors.join('\n')}`})`)
  await page.locator('#rp-done', { hasText: 'Applied' }).waitFor(WAIT)
  const cost1 = await metricsCost(rangeStart, rangeEnd)
  t.ok(Math.abs(cost1 - answer.total.after) < 1e-9, `the server now counts the total after (${cost1})`)
  t.not(cost1, cost0, 'a different cost')
  await page.waitForFunction((c) => (globalThis as unknown as { document: { getElementById(id: string): { dataset: Record<string, string> } | null } }).document.getElementById('rp-current')?.dataset.value === String(c), cost1, WAIT)
  t.equal(await page.locator('#rp-current-cost').innerText(), usd.format(cost1), 'the page shows it')
  t.equal(await page.locator('#rp-apply').isVisible(), false, 'the preview is spent')
  // The overview's cost tile (the last hour: every event) follows too.
  await page.click('#view-overview')
  const tile = cost1 >= 1 ? `$${cost1.toFixed(2)}` : `$${cost1.toPrecision(3).replace(/0+$/, '').replace(/\.$/, '')}`
  await page.locator('#t-cost', { hasText: new RegExp(`^\\${tile}$`) }).waitFor(WAIT)
  await page.click('#view-money')

  // 7. Budgets: a refused time zone next to its field, then a whole-project and a per-user budget.
  await page.fill('#bf-name', MARKUP_BUDGET)
  await page.fill('#bf-amount', '0.2')
  await page.fill('#bf-timezone', 'Mars/Olympus_Mons')
  await page.click('#budget-form button[type=submit]')
  await page.locator('#bf-timezone-error:not(:empty)').waitFor(WAIT)
  problems.splice(0, problems.length, ...problems.filter((p) => !/status of 400/.test(p)))
  await page.fill('#bf-timezone', 'Europe/Paris')
  await page.click('#budget-form button[type=submit]')
  await page.locator('#budget-list > li').first().waitFor(WAIT)
  t.equal(await page.locator('#bf-timezone-error').innerText(), '', 'the error went')
  await page.fill('#bf-name', 'Per user')
  await page.fill('#bf-amount', '0.05')
  await page.selectOption('#bf-period', 'month')
  await page.selectOption('#bf-group', 'user_id')
  await page.fill('#bf-thresholds', '50%')
  await page.click('#budget-form button[type=submit]')
  await page.waitForFunction(() => (globalThis as unknown as { document: { querySelectorAll(s: string): ArrayLike<unknown> } }).document.querySelectorAll('#budget-list > li').length === 2, null, WAIT)
  t.equal(await page.locator('#injected-b').count(), 0, 'a budget name with markup is text')
  t.equal(await page.locator('#budget-list > li .bname').first().innerText(), MARKUP_BUDGET, 'and reads as typed')

  // The bars against GET /budgets (read after the page's, and asked again until both agree: spend moves with the tick).
  const budgetsNow = async () => {
    const b = (await call<{ budgets: Budget[] } | Budget[]>('GET', '/budgets')).body
    return Array.isArray(b) ? b : b.budgets
  }
  let budgets = await budgetsNow()
  t.equal(budgets.length, 2, 'two budgets on the server')
  const perUser = budgets.find((b) => b.name === 'Per user')!
  const whole = budgets.find((b) => b.name === MARKUP_BUDGET)!
  t.same(whole.thresholds, [0.5, 0.8, 1], 'the default thresholds')
  t.same(perUser.thresholds, [0.5], '50% read as 0.5')
  // Spending is counted by the evaluator's tick: wait until it shows the re-priced events.
  const parisMonth = (ms: number) => new Intl.DateTimeFormat('en', { timeZone: 'Europe/Paris', year: 'numeric', month: '2-digit' }).format(ms)
  const periodHasAll = parisMonth(first) === parisMonth(Date.now())
  if (periodHasAll) {
    for (let i = 0; i < 600 && !(Math.abs((budgets.find((b) => b.id === whole.id)?.spent ?? 0) - cost1) < 1e-9); i++) {
      await page.waitForTimeout(100)
      budgets = await budgetsNow()
    }
    t.ok(Math.abs(budgets.find((b) => b.id === whole.id)!.spent - cost1) < 1e-9, `the whole-project budget spent what the range cost (${cost1})`)
  }
  await page.click('#view-overview')
  await page.click('#view-money')
  for (const b of await budgetsNow()) {
    const li = page.locator(`#budget-list > li[data-budget-id="${b.id}"]`)
    await li.locator(`.bmeter[data-spent="${b.spent}"]`).first().waitFor(WAIT)
    const g = await barGeometry(li.locator('.bmeter').first())
    const ratio = Math.min(1, b.spent / b.amount)
    t.ok(Math.abs(g.fill - ratio) < 0.01, `${b.name}: the bar is ${(g.fill * 100).toFixed(1)}% wide, spent/amount = ${(ratio * 100).toFixed(1)}%`)
    t.same(g.ticks.map((k) => k.threshold), b.thresholds.filter((x) => x > 0 && x <= 1), `${b.name}: a tick per threshold`)
    for (const k of g.ticks) t.ok(Math.abs(k.at - k.threshold) < 0.01, `${b.name}: the ${k.threshold} tick sits at ${(k.at * 100).toFixed(1)}%`)
    // The forecast grows as the period elapses (spent ÷ elapsed part): the page shows the one
    // it was answered, within a hair of the test's own answer read just after.
    const shownForecast = Number(await li.locator('.bmeter').first().locator('.bforecast').getAttribute('data-forecast'))
    t.ok(Math.abs(shownForecast - b.forecast) <= 1e-3 * b.forecast, `${b.name}: the page's forecast ${shownForecast} is the server's (${b.forecast})`)
    t.ok(g.forecast !== null && Math.abs(g.forecast - Math.min(1, shownForecast / b.amount)) < 0.01, `${b.name}: the forecast marker at ${((g.forecast ?? NaN) * 100).toFixed(1)}% (forecast ${shownForecast} of ${b.amount})`)
    const facts = await li.locator('.bfacts').first().innerText()
    t.match(facts, usd.format(b.spent), `${b.name}: spent shown`)
    t.match(facts, b.remaining < 0 ? `${usd.format(-b.remaining)} over` : `${usd.format(b.remaining)} left`, `${b.name}: remaining shown`)
    t.match(facts, `forecast ${usd.format(shownForecast)}`, `${b.name}: forecast shown`)
  }

  // The per-user budget unfolds to its groups by keyboard; each group's bar is its spent/amount.
  const grouped = page.locator(`#budget-list > li[data-budget-id="${perUser.id}"]`)
  await grouped.locator('summary').focus()
  await page.keyboard.press('Enter')
  await grouped.locator('.group-item').first().waitFor({ state: 'visible', ...WAIT })
  const serverGroups = (await budgetsNow()).find((b) => b.id === perUser.id)!.groups ?? []
  t.same(serverGroups.map((g) => g.group).sort(), ['u1', 'u2', 'u3'], 'the server splits by user')
  for (const sg of serverGroups) {
    const item = grouped.locator(`.group-item[data-group="${sg.group ?? ''}"]`)
    await item.locator(`.bmeter[data-spent="${sg.spent}"]`).waitFor(WAIT)
    const g = await barGeometry(item.locator('.bmeter'))
    t.ok(Math.abs(g.fill - Math.min(1, sg.spent / perUser.amount)) < 0.01, `group ${sg.group}: ${(g.fill * 100).toFixed(1)}% wide for ${sg.spent} of ${perUser.amount}`)
  }
  const wide = await page.evaluate(() => (globalThis as unknown as { document: { documentElement: { scrollWidth: number } } }).document.documentElement.scrollWidth)
  t.ok(wide <= 1280, `nothing overflows at 1280 px (scrollWidth ${wide})`)
  await page.screenshot({ path: ARTIFACTS + 'dashboard-money-1280.png', fullPage: true })

  // 8. Grouped firings in the alerts list: the per-user budget's 50% for u2 (spent $0.067 of
  // $0.05), and a per-user rule that fires for the users of fresh events.
  const rule = await call<{ id: string }>('POST', '/alerts/rules', { name: 'busy user', condition: 'requests_per_minute', comparator: 'gt', threshold: 0, window_seconds: 60, group_by: 'user_id', enabled: true })
  t.equal(rule.status, 201, 'a grouped rule')
  await page.focus('#view-overview')
  await page.keyboard.press('Enter')
  await page.locator('#overview').waitFor({ state: 'visible', ...WAIT })
  await call('POST', '/events/batch', [ev(-1, 'gpt-4o', 'openai', 'u7'), ev(-1, 'gpt-4o', 'openai', 'u8')].map((e) => ({ ...e, timestamp: new Date().toISOString() })))
  await page.locator('#alert-events li[data-kind="budget"][data-group="u2"]').waitFor(WAIT)
  t.ok(frames.some((f) => f.type === 'budget' && f.group === 'u2'), 'the budget event came on /ws with its group')
  t.match(await page.locator('#alert-events li[data-kind="budget"][data-group="u2"]').innerText(), /Per user u2 — reached 50%/, 'the budget event names its group')
  for (const user of ['u7', 'u8']) {
    await page.locator(`#alert-events li[data-kind="rule"][data-group="${user}"]`).first().waitFor(WAIT)
    t.match(await page.locator(`#alert-events li[data-kind="rule"][data-group="${user}"]`).first().innerText(), new RegExp(`busy user ${user}`), `the rule firing for ${user}`)
    t.ok(frames.some((f) => f.type === 'alert' && f.group === user), `its /ws frame carries the group ${user}`)
  }
  const history = (await call<{ events: Array<{ rule_id?: string; group?: string | null }> }>('GET', '/alerts/events')).body.events
  t.ok(history.some((a) => a.rule_id === rule.body.id && a.group === 'u7'), 'the history holds the same grouped firing')
  await page.locator('#rules-body', { hasText: 'per user_id' }).waitFor(WAIT)

  // 9. Delete a budget (two clicks); the server no longer has it.
  await page.click('#view-money')
  const del = page.locator(`#budget-list > li[data-budget-id="${whole.id}"] button.danger`)
  await del.click()
  await del.click()
  await page.locator(`#budget-list > li[data-budget-id="${whole.id}"]`).waitFor({ state: 'detached', ...WAIT })
  t.same((await budgetsNow()).map((b) => b.id), [perUser.id], 'deleted on the server')

  // 10. A read key sees the page; adding a price says it needs an admin key.
  const reader = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: 'light' })
  await reader.addInitScript(`localStorage.setItem('llmscope.apiKey', ${JSON.stringify(READ_KEY)})`)
  const readPage = await reader.newPage()
  readPage.on('pageerror', (err) => problems.push(`read-key page error: ${err.message}`))
  await readPage.goto(base + '/#view=money')
  await readPage.locator('#budget-list > li').first().waitFor(WAIT)
  await readPage.fill('#pf-provider', 'openai')
  await readPage.fill('#pf-model', 'gpt-4o')
  await readPage.fill('#pf-input', '1')
  await readPage.fill('#pf-output', '1')
  await readPage.click('#price-form button[type=submit]')
  await readPage.locator('#price-form-error', { hasText: 'needs an admin key' }).waitFor(WAIT)
  t.equal(await readPage.locator('#price-form-error').innerText(), 'Adding a price needs an admin key; this key can only read.', 'a read key is told why (403)')
  await reader.close()

  // 11. A phone: nothing wider than the screen.
  const phone = await browser.newContext({ viewport: { width: 375, height: 800 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true, colorScheme: 'light' })
  await phone.addInitScript(`localStorage.setItem('llmscope.apiKey', ${JSON.stringify(ADMIN_KEY)})`)
  const mobile = await phone.newPage()
  mobile.on('pageerror', (err) => problems.push(`phone page error: ${err.message}`))
  await mobile.goto(base + '/#view=money')
  await mobile.locator('#budget-list > li').first().waitFor(WAIT)
  await mobile.locator('#prices-body tr').first().waitFor(WAIT)
  await mobile.locator('#budget-list summary').first().click()
  const width = await mobile.evaluate(() => (globalThis as unknown as { document: { documentElement: { scrollWidth: number } } }).document.documentElement.scrollWidth)
  t.ok(width <= 375, `nothing overflows at 375 px (scrollWidth ${width})`)
  const g = await barGeometry(mobile.locator(`#budget-list > li[data-budget-id="${perUser.id}"] .bmeter`).first())
  const pu = (await budgetsNow())[0]
  t.ok(Math.abs(g.fill - Math.min(1, pu.spent / pu.amount)) < 0.01, 'the bar keeps its proportion at 375 px')
  await mobile.screenshot({ path: ARTIFACTS + 'dashboard-money-375.png', fullPage: true })
  await phone.close()

  // No data written as HTML: the script never uses an HTML sink.
  t.notMatch(readFileSync(APP_JS, 'utf8'), /\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write/, 'app.js has no HTML sink')
  t.same(problems, [], 'no script errors, no CSP violations')
  t.same(serverErrors, [], 'no server error')
  await context.close()
})
