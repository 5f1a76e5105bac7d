/**
 * The dashboard's files: public (no key), served from src/dashboard/ and uPlot's dist/, open
 * while recovering, and free of inline script/handlers so a strict CSP holds.
 */
import t from 'tap'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { loadConfig } from '../../src/config.js'
import { buildApp } from '../../src/app.js'
import { DASHBOARD_DIR, UPLOT_DIR } from '../../src/http/routes/dashboard.js'
import { ADMIN_KEY, makeApp } from '../helpers/app.js'

t.test('the asset folders resolve from the source tree (and so from dist/, one level alike)', async (t) => {
  t.ok(existsSync(join(DASHBOARD_DIR, 'index.html')), DASHBOARD_DIR)
  t.ok(existsSync(join(UPLOT_DIR, 'uPlot.iife.min.js')), UPLOT_DIR)
})

t.test('GET / and every asset answer without an API key, with their content types', async (t) => {
  const { app } = await makeApp(t)
  const page = await app.inject({ method: 'GET', url: '/' })
  t.equal(page.statusCode, 200)
  t.match(page.headers['content-type'], /^text\/html/)
  const html = page.body
  for (const [url, type] of [
    ['/assets/app.js', /javascript/],
    ['/assets/app.css', /^text\/css/],
    ['/assets/favicon.svg', /^image\/svg\+xml/],
    ['/assets/vendor/uPlot.iife.min.js', /javascript/],
    ['/assets/vendor/uPlot.min.css', /^text\/css/]
  ] as const) {
    t.ok(html.includes(`"${url}"`), `index.html links ${url}`)
    const r = await app.inject({ method: 'GET', url })
    t.equal(r.statusCode, 200, url)
    t.match(r.headers['content-type'], type, url)
    t.ok(r.body.length > 0, url)
  }
  t.equal((await app.inject({ method: 'GET', url: '/assets/nope.js' })).statusCode, 404, 'only the listed files')
  t.equal((await app.inject({ method: 'GET', url: '/assets/../package.json' })).statusCode, 404)
})

t.test('the page has no inline script, style attribute or inline handler (strict CSP holds)', async (t) => {
  const { app } = await makeApp(t)
  const html = (await app.inject({ method: 'GET', url: '/' })).body
  t.notMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/i, 'every <script> has a src')
  t.notMatch(html, /\son[a-z]+\s*=/i, 'no onclick= and the like')
  t.notMatch(html, /\sstyle\s*=/i, 'no style attributes')
  t.notMatch(html, /https?:\/\//i, 'no CDN or other origin')
})

t.test('the page loads while the server recovers; the API still answers 503', async (t) => {
  const config = loadConfig({ LLMSCOPE_DATA_DIR: t.testdir(), LLMSCOPE_API_KEYS: ADMIN_KEY, LLMSCOPE_LOG_LEVEL: 'silent' })
  const { app, engine } = await buildApp(config, { logger: false, inlinePricing: true })
  t.teardown(() => app.close())
  t.equal((await app.inject({ method: 'GET', url: '/' })).statusCode, 200)
  t.equal((await app.inject({ method: 'GET', url: '/assets/app.js' })).statusCode, 200)
  t.equal((await app.inject({ method: 'GET', url: '/analytics/metrics', headers: { 'x-api-key': ADMIN_KEY } })).statusCode, 503)
  await engine.recover()
})
