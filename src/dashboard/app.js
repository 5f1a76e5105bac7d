// LLMScope dashboard: plain ES module, no framework, no build step. Talks to the documented API
// only (X-API-Key on every call, ?api_key= on the WebSocket). Every string from the server is
// written with textContent, never as HTML.
//
// The view (project, range, filters, breakdown dimension and sort) lives in the URL's hash
// (`#project=acme&range=24h&by=user_id&sort=cost&user_id=u1`), rewritten with
// history.replaceState on every change, so a copied URL reopens the same view. The hash, not
// the query string: it never reaches the server or its logs. The API key is never in it.
/* global uPlot */

const KEY_STORAGE = 'llmscope.apiKey'
const SPANS = { '15m': 15 * 60_000, '1h': 3_600_000, '24h': 86_400_000, '7d': 7 * 86_400_000 }
const INTERVAL_MS = { '1m': 60_000, '5m': 300_000, '1h': 3_600_000 }
const TAIL_MAX = 200
/**
 * Log positions replayed to fill a fresh tail. The log is shared by every project and the
 * server replays only the events that match the project and filters, so a filtered tail looks
 * further back than the 50 rows an unfiltered one needs.
 */
const BACKFILL_PLAIN = 50
const BACKFILL_FILTERED = 2000
const ALERTS_MAX = 50
const NEW_MS = 15_000
const CONDITION_LABEL = {
  cost_per_hour: 'cost/hour',
  avg_latency: 'avg latency',
  p95_latency: 'p95 latency',
  error_rate: 'error rate',
  requests_per_minute: 'requests/min',
  tokens_per_minute: 'tokens/min'
}
const COMPARATOR_LABEL = { gt: '>', gte: '≥', lt: '<', lte: '≤' }
/** Filters every analytics route and /ws accepts (README: Dimensions), besides `metadata.KEY`. */
const FILTER_NAMES = new Set(['model', 'provider', 'status', 'user_id', 'session_id', 'tag'])
const BASE_DIMS = ['model', 'provider', 'user_id', 'session_id', 'tag']
const SORTS = ['cost', 'requests', 'tokens']
const PROJECT_RE = /^[a-z0-9][a-z0-9-]{0,62}$/
const BREAKDOWN_LIMIT = 20
const isFilterName = (name) => FILTER_NAMES.has(name) || /^metadata\.[^\s=&#]{1,128}$/.test(name)

const $ = (id) => document.getElementById(id)

const state = {
  key: localStorage.getItem(KEY_STORAGE),
  /** The page on screen: 'overview' (traffic and alerts) or 'money' (prices and budgets). */
  view: 'overview',
  range: '1h',
  custom: null, // { start, end } epoch ms
  metrics: null,
  costs: [],
  series: null, // { intervalMs, buckets: [{ t, requests, cost, latSum, avg, p95 }] }
  groupBy: 'model',
  // Projects: `owner` is known after GET /projects answers 200; only then is `project` sent.
  owner: false,
  project: 'default',
  projects: [],
  /** Active filters, name → value, in the order they were added. */
  filters: new Map(),
  bd: { by: 'model', sort: 'cost', data: null, dims: [] },
  lastHash: null,
  tail: [],
  paused: false,
  missedWhilePaused: 0,
  tailModel: '',
  models: new Set(),
  rules: [],
  alertEvents: [],
  ws: null,
  wsRetry: 0,
  lastSeq: null,
  liveFromSeq: 0,
  refreshTimer: null,
  lastRefreshAt: 0,
  refreshing: false,
  refreshAgain: false,
  /** No analytics refresh before this time (epoch ms): a 503's Retry-After is honoured. */
  holdUntil: 0,
  generation: 0 // bumped on key change: stale callbacks check it and stop
}

// ---------- formatting ----------

const nf = new Intl.NumberFormat()
const compact = new Intl.NumberFormat(undefined, { notation: 'compact', maximumFractionDigits: 1 })
function fmtCount(n) {
  return n >= 100_000 ? compact.format(n) : nf.format(n)
}
function fmtCost(c) {
  if (c === 0) return '$0'
  if (Math.abs(c) >= 100) return '$' + c.toFixed(0)
  if (Math.abs(c) >= 1) return '$' + c.toFixed(2)
  return '$' + c.toPrecision(3).replace(/0+$/, '').replace(/\.$/, '')
}
function fmtMs(ms) {
  if (ms === null || ms === undefined) return '–'
  return ms >= 1000 ? (ms / 1000).toFixed(2) + ' s' : Math.round(ms) + ' ms'
}
function fmtTime(iso) {
  const d = new Date(iso)
  const sameDay = d.toDateString() === new Date().toDateString()
  return sameDay ? d.toLocaleTimeString() : d.toLocaleString()
}

/** `el('td', { className: 'num' }, 'text', child)` */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag)
  for (const [k, v] of Object.entries(props)) {
    if (k === 'dataset') Object.assign(node.dataset, v)
    else if (k in node) node[k] = v
    else node.setAttribute(k, v)
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c))
  return node
}

// ---------- API ----------

class ApiError extends Error {
  constructor(status, body, retryAfter = null) {
    super(body?.message ?? `HTTP ${status}`)
    this.status = status
    this.code = body?.code
    /** The field path and message of each problem (`[{ path, message }]`). */
    this.details = Array.isArray(body?.details) ? body.details : []
    /** The Retry-After header as sent (seconds), or null. */
    this.retryAfter = retryAfter
  }
}

/**
 * Cluster mode: a partition has no live owner for a moment (a node died or left and another is
 * taking over). The server's message names the partition(s); it is worth a retry, not an error.
 */
const isUnavailable = (err) => err?.status === 503 && err.code === 'LLMS_ERR_UNAVAILABLE'

/** Milliseconds to wait before retrying `err`: its Retry-After (seconds), within 0.5 to 30 s; else 1 s. */
function retryDelay(err) {
  const s = err?.retryAfter === null || err?.retryAfter === undefined || err.retryAfter === '' ? NaN : Number(err.retryAfter)
  return Number.isFinite(s) && s >= 0 ? Math.min(30_000, Math.max(500, s * 1000)) : 1000
}

/**
 * `path` with `project=` added when the key is an owner's (other keys act in their own
 * project). For the WebSocket only: API calls name the project in a header (see api()).
 */
function inProject(path) {
  if (!state.owner) return path
  return path + (path.includes('?') ? '&' : '?') + 'project=' + encodeURIComponent(state.project)
}

/** The active filters as query parameters (`&user_id=u1&metadata.feature=search`), or ''. */
function filterQuery() {
  let q = ''
  for (const [name, value] of state.filters) q += `&${encodeURIComponent(name)}=${encodeURIComponent(value)}`
  return q
}

async function api(path, init = {}) {
  const gen = state.generation
  const headers = { 'x-api-key': state.key ?? '', ...(init.body ? { 'content-type': 'application/json' } : {}) }
  if (state.owner && !init.noProject) headers['x-llmscope-project'] = state.project
  const res = await fetch(path, { method: init.method, body: init.body, headers, signal: init.signal })
  const body = res.status === 204 ? null : await res.json().catch(() => null)
  if (res.status === 401 && gen === state.generation) {
    showKeyPanel('That key was refused (401): ' + (body?.message ?? 'invalid API key'))
  }
  if (!res.ok) throw new ApiError(res.status, body, res.headers.get('retry-after'))
  return body
}

function rangeQuery() {
  const { start, end } = currentRange()
  return `start_time=${start}&end_time=${end}`
}
function currentRange() {
  if (state.range === 'custom' && state.custom) return state.custom
  const end = Date.now()
  return { start: end - (SPANS[state.range] ?? SPANS['1h']), end }
}
function intervalFor(span) {
  if (span <= 2 * 3_600_000) return '1m'
  if (span <= 2 * 86_400_000) return '5m'
  return '1h'
}

// ---------- key panel ----------

function showKeyPanel(message = '') {
  stopLive()
  closeEvent()
  $('dash').hidden = true
  $('controls').hidden = true
  $('key-panel').hidden = false
  $('key-error').textContent = message
  $('key-input').value = ''
  $('key-input').focus()
}

async function onKeySubmit(ev) {
  ev.preventDefault()
  const key = $('key-input').value.trim()
  if (key === '') return
  state.key = key
  state.owner = false
  state.generation++
  try {
    await api('/alerts/rules')
  } catch (err) {
    if (err.status === 403) $('key-error').textContent = 'This key may only send events (ingest scope); the dashboard needs a read or admin key.'
    else if (err.status !== 401) $('key-error').textContent = 'Could not reach LLMScope: ' + err.message
    return
  }
  localStorage.setItem(KEY_STORAGE, key)
  start()
}

// ---------- start / stop ----------

async function start() {
  state.generation++
  const gen = state.generation
  $('key-panel').hidden = true
  $('dash').hidden = false
  $('controls').hidden = false
  readHash()
  renderControls()
  renderChips()
  startClusterPoll()
  await loadProjects()
  if (gen !== state.generation) return
  openView()
}

/**
 * (Re)loads everything shown for the current project and filters: tiles, charts, costs,
 * breakdown, alerts, and a fresh live tail (a new WebSocket with the filters, backfilled with
 * the newest events that match).
 */
function openView() {
  stopLive()
  state.tail = []
  state.lastSeq = null
  state.missedWhilePaused = 0
  // The figures on screen belong to the previous view until the new ones arrive.
  state.metrics = null
  state.costs = []
  state.bd.data = null
  if (state.series) state.series = { ...state.series, buckets: [] }
  renderTiles()
  renderCosts()
  renderBreakdown()
  renderSeries()
  renderCurl()
  renderTail()
  renderChips()
  writeHash()
  refresh()
  closeEvent()
  resetEvents()
  loadAlerts()
  loadDimensions()
  connect()
  renderView()
  if (state.view === 'money') loadMoney()
}

function renderCurl() {
  const project = state.owner && state.project !== 'default' ? ` -H "X-LLMScope-Project: ${state.project}"` : ''
  $('curl-example').textContent =
    `KEY=$(cat data/api-key)   # or your own key\n` +
    `curl -X POST ${location.origin}/events/ingest -H "X-API-Key: $KEY"${project} -H 'content-type: application/json' \\\n` +
    `  -d '{"model":"gpt-4o","provider":"openai","prompt_tokens":150,"completion_tokens":50,"latency_ms":1200,"user_id":"user-1"}'`
}

// ---------- projects ----------

/** GET /projects: 200 → an owner key, show the picker; 403 (or no such route) → hide it. */
async function loadProjects() {
  const gen = state.generation
  let body = null
  try {
    body = await api('/projects', { noProject: true })
  } catch (err) {
    if (gen !== state.generation) return
    if (err.status !== 403 && err.status !== 404 && err.status !== 401) setBanner('Could not list projects: ' + err.message)
  }
  if (gen !== state.generation) return
  state.owner = body !== null && Array.isArray(body.projects)
  state.projects = state.owner ? body.projects : []
  if (state.owner && !state.projects.some((p) => p.id === state.project)) {
    if (state.project !== 'default') setBanner(`Project “${state.project}” does not exist (any more); showing “default”.`)
    state.project = 'default'
  }
  renderProjects()
}

function renderProjects() {
  $('project-picker').hidden = !state.owner
  if (!state.owner) return
  const select = $('project')
  select.replaceChildren(
    ...state.projects.map((p) => {
      const label = p.name && p.name !== p.id ? `${p.name} (${p.id})` : p.id
      return el('option', { value: p.id, title: typeof p.events === 'number' ? `${fmtCount(p.events)} events` : '' }, label)
    })
  )
  select.value = state.project
}

function onProjectChange() {
  const id = $('project').value
  if (id === state.project) return
  state.project = id
  // Filter values (users, sessions, metadata) belong to one project: start the next one clean.
  state.filters.clear()
  state.alertEvents = []
  state.rules = []
  resetMoney()
  ev.bucket = null
  resetModels()
  setBanner('')
  openView()
}

function stopLive() {
  state.generation++
  stopEvents()
  if (state.ws) {
    state.ws.onclose = null
    state.ws.close()
    state.ws = null
  }
  clearTimeout(state.refreshTimer)
  state.refreshTimer = null
}

// ---------- analytics ----------

/** Refetches tiles, cost bars and series; coalesces calls made while one is in flight. */
async function refresh() {
  if (state.refreshing) {
    state.refreshAgain = true
    return
  }
  const hold = state.holdUntil - Date.now()
  if (hold > 0) {
    scheduleRefresh(hold)
    return
  }
  state.refreshing = true
  state.lastRefreshAt = Date.now()
  const gen = state.generation
  try {
    const { start: s, end: e } = currentRange()
    const interval = intervalFor(e - s)
    const q = rangeQuery() + filterQuery()
    // The breakdown fails alone (a dimension the server refuses must not blank the tiles).
    const breakdown = loadBreakdown(q)
    const [metrics, costs, series] = await Promise.all([
      api(`/analytics/metrics?${q}`),
      api(`/analytics/costs?${q}`),
      api(`/analytics/timeseries?interval=${interval}&${q}`)
    ])
    const breakdownAnswered = await breakdown
    if (gen !== state.generation) return
    state.metrics = metrics
    state.costs = costs.breakdown
    for (const row of costs.breakdown) addModel(row.model)
    state.series = {
      interval,
      intervalMs: INTERVAL_MS[interval],
      buckets: series.buckets.map((b) => ({
        t: Date.parse(b.timestamp),
        requests: b.requests,
        cost: b.cost,
        latSum: (b.avg_latency_ms ?? 0) * b.requests,
        avg: b.avg_latency_ms,
        p95: b.p95_latency_ms
      }))
    }
    setBanner('')
    if (breakdownAnswered) setNotice('')
    renderTiles()
    renderCosts()
    renderSeries()
  } catch (err) {
    if (gen !== state.generation || err.status === 401) return
    if (isUnavailable(err)) {
      // The figures on screen stay (dimmed) until the partition has an owner again.
      showUnavailable(err)
      retryLater(err)
      return
    }
    if (err.status === 503) setBanner('LLMScope is not ready yet (recovering its state); retrying…')
    else if (err.status === 429) setBanner('Rate limited by the server (LLMSCOPE_RATE_LIMIT_MAX); retrying…')
    else setBanner('Could not load analytics: ' + err.message)
    scheduleRefresh(2000)
  } finally {
    state.refreshing = false
    if (state.refreshAgain) {
      state.refreshAgain = false
      scheduleRefresh(0)
    }
  }
}

/** Refreshes soon after the first event of a burst, then at most about once a second. */
function scheduleRefresh(ms) {
  if (state.refreshTimer !== null) return
  if (ms === undefined) ms = Math.max(150, 1000 - (Date.now() - state.lastRefreshAt))
  state.refreshTimer = setTimeout(() => {
    state.refreshTimer = null
    refresh()
  }, ms)
}

function setBanner(text) {
  $('banner').hidden = text === ''
  $('banner').textContent = text
}

/** A non-fatal notice (cluster takeover); '' removes it. While it shows, #dash has data-waiting. */
function setNotice(text) {
  $('notice').hidden = text === ''
  $('notice').textContent = text
  if (text === '') delete $('dash').dataset.waiting
  else $('dash').dataset.waiting = '1'
}

/** Retries the whole view after `err`'s Retry-After, and not sooner whatever else asks. */
function retryLater(err) {
  const ms = retryDelay(err)
  state.holdUntil = Math.max(state.holdUntil, Date.now() + ms)
  scheduleRefresh(ms)
}

function showUnavailable(err) {
  const s = retryDelay(err) / 1000
  // The server's own words name the partition(s); its "retry shortly" is said by ours.
  const why = err.message.replace(/[;,.]?\s*retry( shortly| later)?\.?$/i, '')
  setNotice(`Part of the data is briefly unavailable: ${why}. Showing the last figures; retrying in ${s} s…`)
}

function renderTiles() {
  const m = state.metrics
  if (!m) {
    // Nothing known for this view yet: never leave the figures of the previous one on screen.
    for (const id of ['t-requests', 't-tokens', 't-cost', 't-avg', 't-p95', 't-unpriced']) $(id).textContent = '–'
    $('t-unpriced').classList.remove('warn')
    return
  }
  $('t-requests').textContent = fmtCount(m.total_requests)
  $('t-tokens').textContent = fmtCount(m.total_tokens)
  $('t-cost').textContent = fmtCost(m.total_cost)
  $('t-avg').textContent = m.total_requests === 0 ? '–' : fmtMs(m.avg_latency_ms)
  $('t-p95').textContent = fmtMs(m.p95_latency_ms)
  $('t-unpriced').textContent = fmtCount(m.unpriced_requests)
  $('t-unpriced').classList.toggle('warn', m.unpriced_requests > 0)
  $('t-unpriced').title = m.unpriced_requests > 0 ? 'Events of models without a known price count at $0' : ''
}

function renderCosts() {
  const groups = new Map()
  for (const row of state.costs) {
    const k = state.groupBy === 'model' ? row.model : row.provider
    const g = groups.get(k) ?? { name: k, cost: 0, requests: 0, unpriced: 0 }
    g.cost += row.total_cost
    g.requests += row.requests
    g.unpriced += row.unpriced_requests
    groups.set(k, g)
  }
  const rows = [...groups.values()].sort((a, b) => b.cost - a.cost || b.requests - a.requests).slice(0, 12)
  const max = Math.max(...rows.map((r) => r.cost), 0)
  const list = $('cost-bars')
  list.replaceChildren(
    ...rows.map((r) => {
      const fill = el('span', { className: 'fill' })
      fill.style.width = max > 0 ? `${Math.max(1, (r.cost / max) * 100)}%` : '0'
      const amount = el('span', { className: 'amount' }, fmtCost(r.cost), ` · ${fmtCount(r.requests)} req`)
      if (r.unpriced > 0) amount.append(' ', el('span', { className: 'unpriced' }, `${fmtCount(r.unpriced)} unpriced`))
      return el('li', {}, el('span', { className: 'label', title: r.name }, r.name), el('span', { className: 'track', 'aria-hidden': 'true' }, fill), amount)
    })
  )
  $('cost-empty').hidden = rows.length > 0
}

// ---------- breakdown ----------

/**
 * GET /analytics/breakdown for the current dimension and sort; `q` is range + filters.
 * Resolves false only when a cluster partition was unavailable (a refresh is then scheduled).
 */
async function loadBreakdown(q = rangeQuery() + filterQuery()) {
  const gen = state.generation
  const { by, sort } = state.bd
  try {
    const data = await api(`/analytics/breakdown?by=${encodeURIComponent(by)}&sort=${sort}&limit=${BREAKDOWN_LIMIT}&${q}`)
    if (gen !== state.generation || by !== state.bd.by || sort !== state.bd.sort) return true
    state.bd.data = data
    $('bd-error').textContent = ''
  } catch (err) {
    if (gen !== state.generation || err.status === 401) return true
    if (isUnavailable(err)) {
      // Keep the groups on screen; the whole view is retried after Retry-After.
      showUnavailable(err)
      retryLater(err)
      return false
    }
    state.bd.data = null
    $('bd-error').textContent = `Could not load the breakdown by ${by}: ${err.message}`
  }
  renderBreakdown()
  return true
}

/** GET /analytics/dimensions: the metadata keys (and others) the picker offers besides the fixed ones. */
async function loadDimensions() {
  const gen = state.generation
  try {
    const body = await api('/analytics/dimensions')
    if (gen !== state.generation) return
    state.bd.dims = Array.isArray(body?.dimensions) ? body.dimensions : []
  } catch (err) {
    if (gen !== state.generation) return
    if (isUnavailable(err)) {
      setTimeout(() => {
        if (gen === state.generation) loadDimensions()
      }, retryDelay(err))
      return
    }
    state.bd.dims = []
  }
  renderDimPicker()
}

function renderDimPicker() {
  const select = $('bd-dim')
  const info = new Map(state.bd.dims.map((d) => [d.name, d]))
  const names = [...BASE_DIMS]
  for (const d of state.bd.dims) if (!names.includes(d.name)) names.push(d.name)
  // A dimension from a shared URL that this project has not seen (yet) stays selectable.
  if (!names.includes(state.bd.by)) names.push(state.bd.by)
  select.replaceChildren(
    ...names.map((name) => {
      const d = info.get(name)
      const count = d ? ` · ${fmtCount(d.values)}${d.capped ? '+' : ''} values` : ''
      return el('option', { value: name }, name + count)
    })
  )
  select.value = state.bd.by
}

const SORT_FIELD = { cost: 'total_cost', requests: 'requests', tokens: 'total_tokens' }

/** The label of a group's value: null is the group of events without the dimension. */
function groupLabel(value) {
  return value === null || value === undefined ? '(none)' : String(value)
}

/** One breakdown row; `kind` is 'group', 'other' or 'total'. */
function breakdownRow(g, kind, max) {
  const by = state.bd.by
  const field = SORT_FIELD[state.bd.sort]
  const label = kind === 'other' ? '(other)' : kind === 'total' ? 'Total' : groupLabel(g.value)
  // Only a real value filters: not the group without the dimension, not the values past a cap.
  const clickable = kind === 'group' && g.value !== null && g.value !== undefined && g.value !== '(other)'
  let name
  if (clickable) {
    name = el('button', { type: 'button', className: 'bd-value', title: `Filter every panel by ${by} = ${label}` }, label)
    name.dataset.value = String(g.value)
    name.setAttribute('aria-label', `Filter by ${by} = ${label}`)
    name.addEventListener('click', () => addFilter(by, String(g.value)))
  } else {
    name = el('span', { className: 'bd-value static' + (kind === 'group' ? ' muted-value' : '') }, label)
  }
  const cell = el('td', { className: 'bd-name', 'data-label': by }, name)
  if (kind === 'group' || kind === 'other') {
    const bar = el('span', { className: 'bd-bar', 'aria-hidden': 'true' })
    bar.style.width = max > 0 ? `${Math.max(0.5, ((g[field] ?? 0) / max) * 100)}%` : '0'
    cell.prepend(bar)
  }
  const err = g.error_rate === null || g.error_rate === undefined ? '–' : `${(g.error_rate * 100).toFixed(g.error_rate > 0 && g.error_rate < 0.01 ? 2 : 1)}%`
  return el(
    'tr',
    { className: kind },
    cell,
    el('td', { className: 'num', 'data-label': 'requests' }, fmtCount(g.requests)),
    el('td', { className: 'num', 'data-label': 'tokens' }, fmtCount(g.total_tokens)),
    el('td', { className: 'num', 'data-label': 'cost' }, fmtCost(g.total_cost)),
    el('td', { className: 'num', 'data-label': 'avg' }, g.requests > 0 ? fmtMs(g.avg_latency_ms) : '–'),
    el('td', { className: 'num', 'data-label': 'p95' }, g.requests > 0 ? fmtMs(g.p95_latency_ms) : '–'),
    el('td', { className: 'num', 'data-label': 'errors' }, err)
  )
}

function renderBreakdown() {
  const data = state.bd.data
  $('bd-col').textContent = state.bd.by
  const groups = data?.groups ?? []
  const field = SORT_FIELD[state.bd.sort]
  const max = Math.max(0, ...groups.map((g) => g[field] ?? 0), data?.other ? data.other[field] ?? 0 : 0)
  $('bd-body').replaceChildren(...groups.map((g) => breakdownRow(g, 'group', max)))
  const foot = []
  if (data?.other) foot.push(breakdownRow(data.other, 'other', max))
  if (data?.total && groups.length > 0) foot.push(breakdownRow(data.total, 'total', max))
  $('bd-foot').replaceChildren(...foot)
  $('bd-empty').hidden = data === null || groups.length > 0
  $('bd-table').hidden = data !== null && groups.length === 0
}

function setBreakdown(by, sort) {
  if (by === state.bd.by && sort === state.bd.sort) return
  state.bd.by = by
  state.bd.sort = sort
  state.bd.data = null
  renderControls()
  renderBreakdown()
  writeHash()
  loadBreakdown()
}

// ---------- filters ----------

function addFilter(name, value) {
  if (!isFilterName(name) || state.filters.get(name) === value) return
  // One value per name: a second user replaces the first (both at once would match nothing).
  state.filters.delete(name)
  state.filters.set(name, value)
  openView()
}

function removeFilter(name) {
  if (!state.filters.delete(name)) return
  openView()
  // Keep the keyboard somewhere sensible once the chip's button is gone.
  const next = $('chips').querySelector('button') ?? $('bd-dim')
  next.focus()
}

function renderChips() {
  const chips = [...state.filters].map(([name, value]) => {
    const remove = el('button', { type: 'button', className: 'chip-remove', title: 'Remove this filter' }, '×')
    remove.setAttribute('aria-label', `Remove filter ${name} = ${value}`)
    remove.addEventListener('click', () => removeFilter(name))
    return el('li', { className: 'chip', dataset: { name } }, el('span', { className: 'chip-text' }, el('span', { className: 'chip-name' }, name), ' = ', el('strong', {}, value)), remove)
  })
  $('chips').replaceChildren(...chips)
  $('filters-empty').hidden = chips.length > 0
  $('clear-filters').hidden = chips.length < 2
}

// ---------- the view in the URL ----------

/** Reads the view from the URL hash; anything unknown or malformed is ignored. */
function readHash() {
  const p = new URLSearchParams(location.hash.replace(/^#/, ''))
  state.view = p.get('view') === 'money' ? 'money' : 'overview'
  const project = p.get('project')
  if (project !== null && PROJECT_RE.test(project)) state.project = project
  const range = p.get('range')
  if (range === 'custom') {
    const s = Date.parse(p.get('start') ?? '')
    const e = Date.parse(p.get('end') ?? '')
    if (s < e) {
      state.range = 'custom'
      state.custom = { start: s, end: e }
    }
  } else if (range !== null && range in SPANS) {
    state.range = range
    state.custom = null
  }
  const by = p.get('by')
  if (by !== null && (BASE_DIMS.includes(by) || isFilterName(by))) state.bd.by = by
  const sort = p.get('sort')
  if (sort !== null && SORTS.includes(sort)) state.bd.sort = sort
  state.filters.clear()
  for (const [name, value] of p) if (isFilterName(name) && value !== '' && value.length <= 256) state.filters.set(name, value)
  const evSort = p.get('ev_sort')
  ev.sort = evSort !== null && EV_SORTS.includes(evSort) ? evSort : 'time'
  const bs = Date.parse(p.get('ev_start') ?? '')
  const be = Date.parse(p.get('ev_end') ?? '')
  ev.bucket = bs < be ? { start: bs, end: be } : null
  state.lastHash = location.hash
}

/** Writes the view into the URL hash (replacing the history entry, not adding one). */
function writeHash() {
  const p = new URLSearchParams()
  if (state.view !== 'overview') p.set('view', state.view)
  if (state.owner) p.set('project', state.project)
  p.set('range', state.range)
  if (state.range === 'custom' && state.custom) {
    p.set('start', new Date(state.custom.start).toISOString())
    p.set('end', new Date(state.custom.end).toISOString())
  }
  p.set('by', state.bd.by)
  p.set('sort', state.bd.sort)
  for (const [name, value] of state.filters) p.set(name, value)
  if (ev.sort !== 'time') p.set('ev_sort', ev.sort)
  if (ev.bucket) {
    p.set('ev_start', new Date(ev.bucket.start).toISOString())
    p.set('ev_end', new Date(ev.bucket.end).toISOString())
  }
  const hash = '#' + p.toString()
  if (hash !== location.hash) history.replaceState(null, '', hash)
  state.lastHash = location.hash
}

/** Puts the controls in line with the state (after reading a URL). */
function renderControls() {
  $('range').value = state.range
  $('custom-range').hidden = state.range !== 'custom'
  if (state.range === 'custom' && state.custom) {
    $('custom-start').value = toLocalInput(state.custom.start)
    $('custom-end').value = toLocalInput(state.custom.end)
  }
  renderDimPicker()
  for (const sort of SORTS) $(`bd-sort-${sort}`).setAttribute('aria-pressed', String(sort === state.bd.sort))
  if (state.owner) $('project').value = state.project
}

/** Someone edited or pasted the URL of another view into this tab. */
function onHashChange() {
  if (location.hash === state.lastHash || !state.key || $('dash').hidden) return
  const before = state.project
  readHash()
  if (state.owner && !state.projects.some((p) => p.id === state.project)) state.project = before
  if (state.project !== before) {
    state.alertEvents = []
    state.rules = []
    resetMoney()
    resetModels()
  }
  renderControls()
  openView()
}

// ---------- charts (uPlot) ----------

const charts = {}
function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim()
}

/** One small uPlot chart; `emptyMax` is the y range's top with no data, `incrs` its tick steps. */
function makeChart(id, series, valueFmt, emptyMax, incrs) {
  const host = $(id)
  const axisColor = cssVar('--muted')
  const grid = { stroke: cssVar('--line'), width: 1 }
  const opts = {
    width: Math.max(200, host.clientWidth),
    height: 180,
    cursor: { sync: { key: 'llmscope' } },
    legend: { show: true },
    // The last bucket is drawn whole: the x range ends one interval after its start.
    scales: { x: { time: true, range: (_u, min, max) => [min, max + (state.series?.intervalMs ?? 60_000) / 1000] }, y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : emptyMax] } },
    axes: [
      { stroke: axisColor, grid, ticks: grid },
      { stroke: axisColor, grid, ticks: grid, size: 70, ...(incrs ? { incrs } : {}), values: (_u, ticks) => ticks.map(valueFmt) }
    ],
    series: [{}, ...series],
    hooks: {
      // The x range (epoch seconds) the plot spans, on its host: where a bucket is drawn, for
      // people reading the DOM (and the browser test that clicks one).
      setScale: [
        (u, key) => {
          if (key !== 'x') return
          host.dataset.xMin = String(u.scales.x.min)
          host.dataset.xMax = String(u.scales.x.max)
        }
      ]
    }
  }
  const u = new uPlot(opts, [[], ...series.map(() => [])], host)
  // A click on a bar or point narrows the events table to that bucket (a drag still zooms).
  u.over.addEventListener('click', () => onChartClick(u))
  u.over.title = 'Click to see the events of this bucket'
  new ResizeObserver(() => u.setSize({ width: Math.max(200, host.clientWidth), height: 180 })).observe(host)
  return u
}

function ensureCharts() {
  if (charts.requests || typeof uPlot === 'undefined') return
  const accent = cssVar('--accent')
  const bars = uPlot.paths.bars ? uPlot.paths.bars({ size: [0.7, 40] }) : undefined
  charts.requests = makeChart('chart-requests', [{ label: 'requests', stroke: accent, fill: accent + '99', paths: bars, points: { show: false } }], (v) => fmtCount(v), 4, [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6])
  charts.cost = makeChart('chart-cost', [{ label: 'cost', stroke: cssVar('--accent-2'), fill: cssVar('--accent-2') + '99', paths: bars, points: { show: false }, value: (_u, v) => (v === null ? '–' : fmtCost(v)) }], (v) => fmtCost(v), 0.01)
  charts.latency = makeChart(
    'chart-latency',
    [
      { label: 'avg', stroke: cssVar('--accent'), width: 2, points: { show: true, size: 5 }, value: (_u, v) => fmtMs(v) },
      { label: 'p95', stroke: cssVar('--accent-3'), width: 2, dash: [5, 4], points: { show: true, size: 5 }, value: (_u, v) => fmtMs(v) }
    ],
    (v) => fmtMs(v),
    1000
  )
}

function renderSeries() {
  const s = state.series
  if (!s) return
  ensureCharts()
  $('ts-interval').textContent = `${s.interval} buckets, local time`
  const xs = s.buckets.map((b) => b.t / 1000)
  if (charts.requests) {
    charts.requests.setData([xs, s.buckets.map((b) => b.requests)])
    charts.cost.setData([xs, s.buckets.map((b) => b.cost)])
    // No latency in an empty bucket (not 0 ms): a gap in the line.
    charts.latency.setData([xs, s.buckets.map((b) => (b.requests > 0 ? b.avg : null)), s.buckets.map((b) => (b.requests > 0 ? b.p95 : null))])
  }
  const total = s.buckets.reduce((n, b) => n + b.requests, 0)
  $('ts-empty').hidden = total > 0
  // What the charts hold, for people reading the DOM (and the browser test).
  $('charts').dataset.requests = String(total)

}

/** Counts a live event in the tiles and its bucket at once; the next refresh makes it exact. */
function applyLive(e) {
  const t = Date.parse(e.timestamp)
  const { start: s, end } = currentRange()
  const relative = state.range !== 'custom'
  if (t < s || (!relative && t >= end)) return
  const m = state.metrics
  if (m) {
    const n = m.total_requests
    m.avg_latency_ms = ((m.avg_latency_ms ?? 0) * n + e.latency_ms) / (n + 1)
    m.total_requests = n + 1
    m.total_tokens += e.total_tokens
    m.total_cost += e.cost
    renderTiles()
  }
  const series = state.series
  if (series) {
    const bt = Math.floor(t / series.intervalMs) * series.intervalMs
    let b = series.buckets.find((x) => x.t === bt)
    if (!b && relative && bt > (series.buckets.at(-1)?.t ?? -Infinity)) {
      b = { t: bt, requests: 0, cost: 0, latSum: 0, avg: null, p95: null }
      series.buckets.push(b)
    }
    if (b) {
      b.requests++
      b.cost += e.cost
      b.latSum += e.latency_ms
      b.avg = b.latSum / b.requests
      renderSeries()
    }
  }
}

// ---------- live tail ----------

function resetModels() {
  state.models.clear()
  state.tailModel = ''
  $('tail-model').replaceChildren(el('option', { value: '' }, 'All models'))
  $('models-list').replaceChildren()
}

function addModel(model) {
  if (state.models.has(model) || state.models.size >= 500) return
  state.models.add(model)
  const sorted = [...state.models].sort()
  const select = $('tail-model')
  const chosen = select.value
  select.replaceChildren(el('option', { value: '' }, 'All models'), ...sorted.map((m) => el('option', { value: m }, m)))
  select.value = chosen
  $('models-list').replaceChildren(...sorted.map((m) => el('option', { value: m })))
}

function onEvent(e) {
  addModel(e.model)
  if (e.seq >= state.liveFromSeq) {
    applyLive(e)
    scheduleRefresh()
  }
  // Replayed ones too (a reconnect's since_seq fills its gap): the table places each by its
  // time, and keeps an event it already holds once.
  onEventLive(e)
  state.tail.unshift({ ...e, isNew: true })
  if (state.tail.length > TAIL_MAX) state.tail.length = TAIL_MAX
  if (state.paused) {
    state.missedWhilePaused++
    $('tail-paused').textContent = `Paused — ${fmtCount(state.missedWhilePaused)} new event(s) will show when you resume.`
  } else renderTailSoon()
}

let tailFrame = 0
function renderTailSoon() {
  if (tailFrame) return
  tailFrame = requestAnimationFrame(() => {
    tailFrame = 0
    renderTail()
  })
}

function renderTail() {
  const rows = state.tail.filter((e) => state.tailModel === '' || e.model === state.tailModel).slice(0, 100)
  $('tail-body').replaceChildren(
    ...rows.map((e) => {
      const status = e.status ?? (e.error === true ? 'error' : undefined)
      const tr = el(
        'tr',
        { className: e.isNew ? 'is-new' : '' },
        el('td', { className: 'time', 'data-label': 'time' }, fmtTime(e.timestamp)),
        el('td', { className: 'model full', 'data-label': 'model' }, e.model),
        el('td', { 'data-label': 'provider' }, e.provider ?? '–'),
        el('td', { className: 'user', 'data-label': 'user' }, e.user_id ?? '–'),
        el('td', { className: 'num', 'data-label': 'tokens' }, fmtCount(e.total_tokens)),
        el('td', { className: 'num', 'data-label': 'cost' }, fmtCost(e.cost)),
        el('td', { className: 'num', 'data-label': 'latency' }, fmtMs(e.latency_ms)),
        el('td', { 'data-label': 'status' }, status === undefined ? '–' : el('span', { className: `status status-${status}` }, status))
      )
      e.isNew = false
      return tr
    })
  )
  const empty = $('tail-empty')
  empty.hidden = rows.length > 0
  empty.firstElementChild.textContent =
    state.tail.length > 0 ? `No events for ${state.tailModel} yet.` : state.filters.size > 0 ? 'No recent event matches the filters; new ones show here as they arrive.' : 'No events yet — send one with:'
  empty.querySelector('pre').hidden = state.tail.length > 0 || state.filters.size > 0
}

function togglePause() {
  state.paused = !state.paused
  const b = $('tail-pause')
  b.setAttribute('aria-pressed', String(state.paused))
  b.textContent = state.paused ? 'Resume' : 'Pause'
  $('tail-paused').hidden = !state.paused
  $('tail-paused').textContent = 'Paused — new events will show when you resume.'
  state.missedWhilePaused = 0
  if (!state.paused) renderTail()
}

// ---------- events table (GET /events) ----------

/** Rows asked per page, and the most the table holds (past it: narrow the view or export). */
const EV_PAGE = 50
const EV_MAX_ROWS = 5000
const EV_SORTS = ['time', 'latency', 'cost']

const ev = {
  sort: 'time',
  /** A chart bucket narrowing the table: { start, end } epoch ms, half-open; null = the whole range. */
  bucket: null,
  /** EVENT objects in the table's order; a live one (from /ws) has `partial: true`. */
  rows: [],
  byId: new Map(),
  /**
   * The first page's query (range, filters, sort): every later page repeats it exactly, since the
   * cursor carries a hash of them (a relative range's end is fixed when the first page is asked).
   */
  query: '',
  cursor: null,
  done: false,
  /** The AbortController of the page in flight; never two at once. */
  loading: null,
  gen: 0,
  error: '',
  /** The id shown in the side panel, and the element focused before it opened. */
  open: null,
  returnFocus: null
}

/** Range, filters and sort of the table now: the bucket when one is chosen, else the view's range. */
function eventsQuery() {
  const { start, end } = ev.bucket ?? currentRange()
  return `start_time=${start}&end_time=${end}${filterQuery()}&sort=${ev.sort}`
}

/** Empties the table and asks its first page again (filters, range, sort or bucket changed). */
function resetEvents() {
  ev.gen++
  // The page in flight is cancelled; the new first page starts once it has settled (see loadEventsPage).
  ev.loading?.abort()
  ev.rows = []
  ev.byId.clear()
  ev.cursor = null
  ev.done = false
  ev.error = ''
  ev.query = eventsQuery()
  $('ev-body').replaceChildren()
  renderEventsChrome()
  loadEventsPage()
}

function stopEvents() {
  ev.gen++
  ev.loading?.abort()
}

/** Asks the next page (the first when no cursor yet). One at a time; nothing once the end is reached. */
async function loadEventsPage() {
  // ev.query is '' until the view opens (the observer reports the empty table's sentinel at once).
  if (ev.loading !== null || ev.done || ev.query === '' || !state.key || $('dash').hidden) return
  const gen = ev.gen
  const ctrl = new AbortController()
  ev.loading = ctrl
  renderEventsChrome()
  let retryIn = 0
  try {
    const cursor = ev.cursor === null ? '' : `&cursor=${encodeURIComponent(ev.cursor)}`
    const body = await api(`/events?${ev.query}&limit=${EV_PAGE}${cursor}`, { signal: ctrl.signal })
    if (gen !== ev.gen) return
    const fresh = []
    for (const e of body.events) {
      // A cursor page never repeats a row; a live row prepended meanwhile may come again: once only.
      if (ev.byId.has(e.id)) continue
      ev.byId.set(e.id, e)
      ev.rows.push(e)
      fresh.push(e)
    }
    $('ev-body').append(...fresh.map(eventRow))
    ev.cursor = body.next_cursor ?? null
    ev.done = ev.cursor === null || ev.rows.length >= EV_MAX_ROWS
    ev.error = ''
  } catch (err) {
    if (gen !== ev.gen || err.name === 'AbortError' || err.status === 401) return
    if (isUnavailable(err) || err.status === 503 || err.status === 429) {
      retryIn = retryDelay(err)
      ev.error = `${isUnavailable(err) ? 'Part of the events are briefly unavailable' : err.status === 429 ? 'Rate limited' : 'Not ready'}; retrying in ${retryIn / 1000} s…`
    } else {
      // A 400/409 (an expired or re-priced cursor) or anything else: say so and stop here.
      ev.error = 'Could not load events: ' + err.message
      ev.done = true
    }
  } finally {
    if (ev.loading === ctrl) ev.loading = null
    if (gen !== ev.gen) loadEventsPage() // a reset came while this page was in flight
  }
  if (gen !== ev.gen) return
  renderEventsChrome()
  if (retryIn > 0) {
    setTimeout(() => {
      if (gen === ev.gen) loadEventsPage()
    }, retryIn)
  } else if (sentinelNear()) loadEventsPage() // a short page left the sentinel in view
}

/** Whether the sentinel row is in (or within 200 px below) the table's visible part. */
function sentinelNear() {
  const wrap = $('ev-wrap')
  if (ev.done || wrap.offsetParent === null) return false
  const box = wrap.getBoundingClientRect()
  const s = $('ev-sentinel').getBoundingClientRect()
  return s.top <= box.bottom + 200 && s.bottom >= box.top
}

// The sentinel row: scrolling the table near its end asks the next page. An entry is measured
// at a rendering step and delivered later: one measured while the table was empty can arrive
// after the first page filled it, so the layout is measured again before asking.
new IntersectionObserver((entries) => {
  if (entries.some((e) => e.isIntersecting) && sentinelNear()) loadEventsPage()
}, { root: $('ev-wrap'), rootMargin: '0px 0px 200px 0px' }).observe($('ev-sentinel'))

function eventRow(e) {
  const status = e.status ?? (e.error === true ? 'error' : undefined)
  const tr = el(
    'tr',
    { tabIndex: 0, className: e.isNew ? 'is-new' : '', dataset: { id: e.id } },
    el('td', { className: 'time', 'data-label': 'time', title: e.timestamp }, fmtTime(e.timestamp)),
    el('td', { className: 'model full', 'data-label': 'model' }, e.model),
    el('td', { 'data-label': 'provider' }, e.provider ?? '–'),
    el('td', { className: 'user', 'data-label': 'user' }, e.user_id ?? '–'),
    el('td', { className: 'num', 'data-label': 'tokens' }, fmtCount(e.total_tokens)),
    el('td', { className: 'num', 'data-label': 'cost' }, fmtCost(e.cost)),
    el('td', { className: 'num', 'data-label': 'latency' }, fmtMs(e.latency_ms)),
    el('td', { 'data-label': 'status' }, status === undefined ? '–' : el('span', { className: `status status-${status}` }, status))
  )
  tr.setAttribute('aria-label', `Show event ${e.id}`)
  if (e.id === ev.open) tr.classList.add('selected')
  e.isNew = false
  return tr
}

/** The footer row, the empty state, the error, the sort buttons and the bucket chip. */
function renderEventsChrome() {
  const n = ev.rows.length
  $('ev-more').textContent = ev.loading !== null ? 'Loading…' : !ev.done || n === 0 ? '' : ev.rows.length >= EV_MAX_ROWS && ev.cursor !== null ? `The first ${fmtCount(n)} events — narrow the view or export them all as CSV.` : `${fmtCount(n)} event${n === 1 ? '' : 's'}, the end.`
  $('ev-empty').hidden = !(ev.done && n === 0 && ev.error === '')
  $('ev-error').textContent = ev.error
  // After a refusal (a cursor the server no longer takes: 400, or 409 once re-priced): from the top.
  $('ev-retry').hidden = !(ev.done && ev.error !== '')
  $('ev-table').dataset.rows = String(n)
  for (const s of EV_SORTS) $(`ev-sort-${s}`).setAttribute('aria-pressed', String(s === ev.sort))
  const chips = []
  if (ev.bucket) {
    const remove = el('button', { type: 'button', className: 'chip-remove', title: 'Show the whole range' }, '×')
    remove.setAttribute('aria-label', 'Remove the time bucket')
    remove.addEventListener('click', () => setEventsBucket(null))
    const from = new Date(ev.bucket.start)
    const to = new Date(ev.bucket.end)
    const label = from.toDateString() === to.toDateString() || to.getTime() - from.getTime() <= 86_400_000 ? `${fmtTime(from)} – ${to.toLocaleTimeString()}` : `${fmtTime(from)} – ${fmtTime(to)}`
    chips.push(el('li', { className: 'chip', dataset: { start: from.toISOString(), end: to.toISOString() } }, el('span', { className: 'chip-text' }, el('span', { className: 'chip-name' }, 'time'), ' ', el('strong', {}, label)), remove))
  }
  $('ev-chips').replaceChildren(...chips)
}

function setEventsSort(sort) {
  if (sort === ev.sort || !EV_SORTS.includes(sort)) return
  ev.sort = sort
  writeHash()
  resetEvents()
}

/** Narrows the table to one chart bucket (`{ start, end }`), or back to the range (null). */
function setEventsBucket(bucket) {
  if (bucket === null && ev.bucket === null) return
  if (bucket && ev.bucket && bucket.start === ev.bucket.start && bucket.end === ev.bucket.end) return
  ev.bucket = bucket
  writeHash()
  resetEvents()
  if (bucket === null) $('ev-sort-time').focus()
}

/** A click on chart `u`: the bucket under the cursor narrows the table. */
function onChartClick(u) {
  const i = u.cursor.idx
  const s = state.series
  if (i === null || i === undefined || !s || !s.buckets[i]) return
  const start = s.buckets[i].t
  setEventsBucket({ start, end: start + s.intervalMs })
}

/**
 * A live event (/ws, same filters; or one replayed after a reconnect) joins the table when the
 * table shows the newest events of the whole range (sort by time, no bucket) and its place is
 * among the rows loaded; else a later page or the next reset brings it.
 */
function onEventLive(e) {
  if (ev.sort !== 'time' || ev.bucket !== null || ev.byId.has(e.id) || ev.rows.length >= EV_MAX_ROWS) return
  if (ev.rows.length === 0 && !ev.done) return // the first page, in flight, has it
  const t = Date.parse(e.timestamp)
  const { start, end } = currentRange()
  if (t < start || (state.range === 'custom' && t >= end)) return
  // Newest event time first; on a tie the newer (larger seq) first.
  let i = ev.rows.findIndex((r) => Date.parse(r.timestamp) < t || (Date.parse(r.timestamp) === t && r.seq < e.seq))
  if (i === -1) {
    if (!ev.done) return
    i = ev.rows.length
  }
  const { type: _type, ...fields } = e
  const row = { ...fields, partial: true, isNew: true }
  ev.rows.splice(i, 0, row)
  ev.byId.set(row.id, row)
  $('ev-body').insertBefore(eventRow(row), $('ev-body').children[i] ?? null)
  renderEventsChrome()
}

// ---------- one event (side panel) ----------

async function openEvent(id, from) {
  const e = ev.byId.get(id)
  if (!e) return
  if (ev.open === null) ev.returnFocus = from ?? document.activeElement
  ev.open = id
  for (const tr of $('ev-body').querySelectorAll('tr.selected')) tr.classList.remove('selected')
  $('ev-body').querySelector(`tr[data-id="${CSS.escape(id)}"]`)?.classList.add('selected')
  const panel = $('ev-panel')
  panel.hidden = false
  $('ev-panel-error').textContent = ''
  renderEvent(e)
  $('ev-panel-close').focus()
  if (!e.partial) return
  // A live row carries the WebSocket's fields only: the whole event is GET /events/:id.
  try {
    const full = await api(`/events/${encodeURIComponent(id)}`)
    Object.assign(e, full)
    delete e.partial
    if (ev.open === id) renderEvent(e)
  } catch (err) {
    if (ev.open === id && err.status !== 401) $('ev-panel-error').textContent = `Could not load the whole event: ${err.message}`
  }
}

/** Every field of the event, in the server's order; objects (metadata, tags) as indented JSON text. */
function renderEvent(e) {
  $('ev-panel-title').textContent = `${e.model} · ${fmtTime(e.timestamp)}`
  const items = []
  for (const [name, value] of Object.entries(e)) {
    if (name === 'partial' || name === 'isNew') continue
    let dd
    if (value === null || value === undefined) dd = el('dd', { className: 'null' }, 'null')
    else if (typeof value === 'object') dd = el('dd', {}, el('pre', { className: `json ${name}` }, el('code', {}, JSON.stringify(value, null, 2))))
    else dd = el('dd', {}, String(value))
    dd.dataset.field = name
    items.push(el('dt', {}, name), dd)
  }
  $('ev-fields').replaceChildren(...items)
}

function closeEvent() {
  if ($('ev-panel').hidden) return
  $('ev-panel').hidden = true
  ev.open = null
  for (const tr of $('ev-body').querySelectorAll('tr.selected')) tr.classList.remove('selected')
  const back = ev.returnFocus
  ev.returnFocus = null
  if (back && back.isConnected) back.focus()
}

// ---------- CSV export ----------

/** The file name of a Content-Disposition header (`filename*=UTF-8''…` or `filename="…"`), or null. */
function dispositionName(header) {
  if (!header) return null
  const star = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(header)
  if (star) {
    try {
      return decodeURIComponent(star[1].trim())
    } catch {
      // fall through to the plain form
    }
  }
  const plain = /filename\s*=\s*"([^"]*)"|filename\s*=\s*([^;\s]+)/i.exec(header)
  return plain ? plain[1] ?? plain[2] : null
}

/**
 * GET /events?format=csv for the table's filters, range (or bucket) and sort. The key goes in
 * a header, as on every call, so the file is fetched here and saved from a blob under the
 * server's file name (the whole file is held in the page's memory until saved).
 */
async function exportCsv() {
  const button = $('ev-export')
  button.disabled = true
  const label = button.textContent
  button.textContent = 'Exporting…'
  $('ev-error').textContent = ''
  try {
    const headers = { 'x-api-key': state.key ?? '', accept: 'text/csv' }
    if (state.owner) headers['x-llmscope-project'] = state.project
    const res = await fetch(`/events?format=csv&${eventsQuery()}`, { headers })
    if (!res.ok) {
      const body = await res.json().catch(() => null)
      throw new ApiError(res.status, body, res.headers.get('retry-after'))
    }
    const blob = await res.blob()
    const name = dispositionName(res.headers.get('content-disposition')) ?? `llmscope-events-${state.project}.csv`
    const url = URL.createObjectURL(blob)
    const a = el('a', { href: url, download: name, hidden: true })
    document.body.append(a)
    a.click()
    a.remove()
    // Revoked once the download has surely started from it.
    setTimeout(() => URL.revokeObjectURL(url), 60_000)
  } catch (err) {
    $('ev-error').textContent = 'Could not export: ' + err.message
  } finally {
    button.disabled = false
    button.textContent = label
  }
}

$('ev-body').addEventListener('click', (evt) => {
  const tr = evt.target.closest('tr[data-id]')
  if (tr) openEvent(tr.dataset.id, tr)
})
$('ev-body').addEventListener('keydown', (evt) => {
  if (evt.key !== 'Enter' && evt.key !== ' ') return
  const tr = evt.target.closest('tr[data-id]')
  if (!tr) return
  evt.preventDefault()
  openEvent(tr.dataset.id, tr)
})
$('ev-panel-close').addEventListener('click', closeEvent)
document.addEventListener('keydown', (evt) => {
  if (evt.key === 'Escape' && !$('ev-panel').hidden) {
    evt.preventDefault()
    closeEvent()
  }
})
for (const sort of EV_SORTS) $(`ev-sort-${sort}`).addEventListener('click', () => setEventsSort(sort))
$('ev-export').addEventListener('click', exportCsv)
$('ev-retry').addEventListener('click', resetEvents)

// ---------- WebSocket ----------

/** Log position the server will give the next event (public /metrics), for the tail backfill. */
async function nextSeq() {
  try {
    const text = await (await fetch('/metrics')).text()
    const m = /^llmscope_log_next_seq (\d+)/m.exec(text)
    return m ? Number(m[1]) : null
  } catch {
    return null
  }
}

async function connect() {
  const gen = state.generation
  setConn('connecting…', '')
  const next = await nextSeq()
  if (gen !== state.generation) return
  let since = state.lastSeq
  const back = state.filters.size > 0 || state.owner ? BACKFILL_FILTERED : BACKFILL_PLAIN
  if (since === null && next !== null) since = Math.max(-1, next - back - 1) // the newest events for the tail
  if (next !== null) state.liveFromSeq = next
  else if (state.lastSeq === null) state.liveFromSeq = Infinity
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:'
  // The same filters as the tiles: the server sends only the events that match.
  const url =
    inProject(`${proto}//${location.host}/ws?api_key=${encodeURIComponent(state.key)}`) + filterQuery() + (since === null ? '' : `&since_seq=${since}`)
  const ws = new WebSocket(url)
  state.ws = ws
  ws.onopen = () => {
    state.wsRetry = 0
    setConn('live', 'live')
    // Anything that happened while we were away is in the next refresh.
    if (state.liveFromSeq === Infinity) state.liveFromSeq = 0
    scheduleRefresh(0)
    loadAlerts()
  }
  ws.onmessage = (msg) => {
    let m
    try {
      m = JSON.parse(msg.data)
    } catch {
      return
    }
    if (m.type === 'event') {
      state.lastSeq = m.seq
      onEvent(m)
    } else if (m.type === 'alert' || m.type === 'budget') onAlert(m)
    else if (m.type === 'dropped') {
      setBanner(`The live stream skipped ${fmtCount(m.count)} message(s); totals are refreshed from the server.`)
      scheduleRefresh(0)
    }
  }
  ws.onclose = () => {
    if (gen !== state.generation) return
    state.ws = null
    const delay = Math.min(10_000, 500 * 2 ** state.wsRetry++)
    setConn('reconnecting…', 'down')
    setTimeout(() => {
      if (gen === state.generation) connect()
    }, delay)
  }
}

function setConn(text, cls) {
  const c = $('conn')
  c.textContent = text
  c.className = 'pill ' + cls
}

// ---------- cluster (GET /ready) ----------

/** How often the cluster strip asks /ready (no key needed) while the dashboard is on screen. */
const CLUSTER_POLL_MS = 4000
const cluster = { started: false, seen: false, at: 0 }

function startClusterPoll() {
  if (cluster.started) return
  cluster.started = true
  pollCluster()
}

/**
 * Cluster mode only: GET /ready carries `cluster` (this node, its partitions, lag, leases). A
 * single node answers without it: the strip stays hidden and polling stops (a node changes
 * mode only by a restart: reload the page then).
 */
async function pollCluster() {
  const again = () => setTimeout(pollCluster, CLUSTER_POLL_MS)
  if ($('dash').hidden || document.hidden) return again()
  let body = null
  let ok = false
  try {
    const res = await fetch('/ready', { cache: 'no-store' })
    ok = res.ok
    body = await res.json().catch(() => null)
  } catch {
    // Not answering: shown as stale below when the strip is up.
  }
  const strip = $('cluster')
  if (ok && body !== null && (body.cluster === undefined || body.cluster === null)) {
    strip.hidden = true
    strip.dataset.mode = 'single'
    return
  }
  if (ok && body?.cluster) {
    cluster.seen = true
    cluster.at = Date.now()
    renderCluster(body.cluster)
  } else if (cluster.seen) {
    strip.classList.add('stale')
    $('cl-stale').hidden = false
    $('cl-stale').textContent = `This node's /ready is not answering${body?.message ? ` (${body.message})` : ''}; figures from ${new Date(cluster.at).toLocaleTimeString()}.`
  }
  again()
}

function renderCluster(c) {
  const strip = $('cluster')
  strip.dataset.mode = 'cluster'
  strip.hidden = false
  strip.classList.remove('stale')
  $('cl-stale').hidden = true
  const nodes = Array.isArray(c.nodes) ? c.nodes : []
  const owned = Array.isArray(c.owned) ? c.owned : []
  const unowned = Array.isArray(c.unowned) ? c.unowned : []
  $('cl-node').textContent = String(c.node)
  const names = nodes.slice(0, 6).join(', ') + (nodes.length > 6 ? ', …' : '')
  $('cl-nodes').textContent = nodes.length === 0 ? '–' : `${nodes.length} (${names})`
  $('cl-nodes').title = nodes.join(', ')
  $('cl-owned').textContent = `${owned.length} / ${c.partitions}`
  $('cl-owned').title = owned.length === 0 ? 'no partition owned here' : `partitions ${owned.join(', ')}`
  const u = $('cl-unowned')
  u.textContent = unowned.length === 0 ? 'none' : unowned.join(', ')
  u.classList.toggle('warn', unowned.length > 0)
  u.title = unowned.length === 0 ? '' : 'Partitions without a live owner: their queries answer 503 until another node takes them over'
  $('cl-lag').textContent = `${fmtCount(Number(c.lag) || 0)} events`
  $('cl-lease').textContent = c.alerts_lease ? 'held here' : 'not here'
  $('cl-lease').title = typeof c.lease_ms === 'number' ? `lease ${c.lease_ms / 1000} s` : ''
  $('cl-restored').textContent = c.restored_from === 'snapshot' ? 'from a snapshot' : c.restored_from === 'stream' ? 'from the stream start' : 'none yet'
}

// ---------- alerts ----------

async function loadAlerts() {
  const gen = state.generation
  try {
    const [rules, events] = await Promise.all([api('/alerts/rules'), api(`/alerts/events?limit=${ALERTS_MAX}`)])
    if (gen !== state.generation) return
    state.rules = rules.rules
    const fresh = new Set(state.alertEvents.filter((a) => a.isNew).map((a) => a.key))
    state.alertEvents = events.events.map((a) => ({ ...a, key: alertKey(a), isNew: fresh.has(alertKey(a)) }))
    renderRules()
    renderAlerts()
  } catch (err) {
    if (gen === state.generation && err.status !== 401) $('rule-error').textContent = 'Could not load alert rules: ' + err.message
  }
}

/** A budget event (its frame's `type`, or a record of the budget kind in /alerts/events). */
const isBudgetAlert = (a) => a.type === 'budget' || a.kind === 'budget' || (a.budget_id !== undefined && a.rule_id === undefined)
/**
 * One key per alert event, the same for its /ws frame and its /alerts/events record. A budget
 * event is unique per (budget, period, threshold, group) by contract, so that is its key.
 */
const alertKey = (a) =>
  isBudgetAlert(a) ? `b|${a.budget_id}|${instantMs(a.period_start)}|${a.threshold}|${a.group ?? ''}` : `r|${a.rule_id}|${a.state}|${a.at}|${a.group ?? ''}`

/**
 * The group an alert event names, as shown, or null when it has none: a grouped rule's or
 * budget's events carry `group` (null = the events without the field, shown "(none)").
 */
function alertGroup(a) {
  if (a.group !== null && a.group !== undefined) return String(a.group)
  if (a.group === undefined) return null
  const owner = isBudgetAlert(a) ? money.budgets?.find((b) => b.id === a.budget_id) : state.rules.find((r) => r.id === a.rule_id)
  return a.group_by || owner?.group_by ? '(none)' : null
}

function onAlert(m) {
  const a = { ...m, key: alertKey(m), isNew: true }
  if (!state.alertEvents.some((x) => x.key === a.key)) {
    state.alertEvents.unshift(a)
    if (state.alertEvents.length > ALERTS_MAX) state.alertEvents.length = ALERTS_MAX
  }
  setTimeout(() => {
    a.isNew = false
    for (const x of state.alertEvents) if (x.key === a.key) x.isNew = false
    renderAlerts()
  }, NEW_MS)
  renderAlerts()
  renderRules()
  // A budget crossed a threshold: its bar has moved.
  if (isBudgetAlert(m) && state.view === 'money') loadBudgets()
}

/**
 * State per rule from the alert history (newest first): a grouped rule fires and resolves per
 * group, so it is firing while the latest event of any of its groups is.
 */
function ruleStates() {
  const latest = new Map()
  for (const a of state.alertEvents) {
    if (isBudgetAlert(a) || a.rule_id === undefined || a.state === 'test') continue
    const k = `${a.rule_id}|${a.group ?? ''}`
    if (!latest.has(k)) latest.set(k, a)
  }
  const states = new Map()
  for (const a of latest.values()) if (states.get(a.rule_id) !== 'firing') states.set(a.rule_id, a.state)
  return states
}

function renderAlerts() {
  const list = $('alert-events')
  list.replaceChildren(
    ...state.alertEvents.map((a) => {
      if (isBudgetAlert(a)) return budgetAlertItem(a)
      const group = alertGroup(a)
      const cls = [a.state === 'firing' ? 'firing' : 'resolved', a.isNew ? 'is-new' : ''].join(' ')
      const value = a.value === null || a.value === undefined ? 'no value' : String(Number(a.value.toPrecision(4)))
      return el(
        'li',
        { className: cls, dataset: { kind: 'rule', group: group ?? '' } },
        el('span', { className: 'state' }, a.reminder ? 'still firing' : a.state),
        ' ',
        el('strong', {}, a.rule_name),
        ...(group === null ? [] : [' ', el('span', { className: 'group', title: a.group_by ? `per ${a.group_by}` : 'the group that fired' }, group)]),
        ` — value ${value} vs threshold ${a.threshold}`,
        el('br'),
        el('span', { className: 'muted' }, fmtTime(a.at) + (a.reason && a.reason !== 'condition' ? ` (${a.reason.replace('_', ' ')})` : ''))
      )
    })
  )
  $('alerts-empty').hidden = state.alertEvents.length > 0
  const firing = [...ruleStates().values()].filter((s) => s === 'firing').length
  document.title = firing > 0 ? `(${firing} firing) LLMScope` : 'LLMScope'
}

/** A budget threshold reached, in the alerts list. */
function budgetAlertItem(a) {
  const group = alertGroup(a)
  const pct = typeof a.threshold === 'number' ? `${Number((a.threshold * 100).toPrecision(4))}%` : String(a.threshold)
  const spent = typeof a.spent === 'number' ? fmtUsd(a.spent) : '–'
  const amount = typeof a.amount === 'number' ? fmtUsd(a.amount) : '–'
  const when = a.at ?? a.recorded_at ?? a.period_start
  return el(
    'li',
    { className: ['budget', a.isNew ? 'is-new' : ''].join(' '), dataset: { kind: 'budget', group: group ?? '' } },
    el('span', { className: 'state' }, 'budget'),
    ' ',
    el('strong', {}, a.name ?? a.budget_name ?? a.budget_id),
    ...(group === null ? [] : [' ', el('span', { className: 'group', title: 'the group that reached it' }, group)]),
    ` — reached ${pct}: ${spent} of ${amount}`,
    el('br'),
    el('span', { className: 'muted' }, (when ? fmtTime(when) : '') + (a.period_start ? ` (period from ${new Date(a.period_start).toLocaleDateString()})` : ''))
  )
}

function renderRules() {
  const states = ruleStates()
  $('rules-body').replaceChildren(
    ...state.rules.map((r) => {
      const st = !r.enabled ? 'disabled' : states.get(r.id) === 'firing' ? 'firing' : 'ok'
      const toggle = el('input', { type: 'checkbox', checked: r.enabled, 'aria-label': `Enable rule ${r.name}` })
      toggle.addEventListener('change', () => patchRule(r, { enabled: toggle.checked }, toggle))
      const del = el('button', { type: 'button', className: 'danger' }, 'Delete')
      del.setAttribute('aria-label', `Delete rule ${r.name}`)
      del.addEventListener('click', () => {
        if (del.dataset.armed === '1') deleteRule(r, del)
        else {
          del.dataset.armed = '1'
          del.textContent = 'Confirm delete'
        }
      })
      return el(
        'tr',
        { dataset: { ruleId: r.id } },
        el('td', {}, r.name),
        el('td', { 'data-label': 'when' }, `${CONDITION_LABEL[r.condition] ?? r.condition} ${COMPARATOR_LABEL[r.comparator] ?? r.comparator} ${r.threshold} over ${r.window_seconds}s${r.group_by ? `, per ${r.group_by}` : ''}`),
        el('td', { 'data-label': 'model' }, r.model ?? 'all'),
        el('td', { 'data-label': 'state' }, el('span', { className: `state-${st}` }, st)),
        el('td', { 'data-label': 'enabled' }, toggle),
        el('td', {}, del)
      )
    })
  )
  $('rules-empty').hidden = state.rules.length > 0
}

function ruleErr(err) {
  $('rule-error').textContent = err.status === 403 ? 'Changing rules needs an admin key; this key can only read.' : err.message
}

async function patchRule(rule, patch, input) {
  $('rule-error').textContent = ''
  try {
    const updated = await api(`/alerts/rules/${encodeURIComponent(rule.id)}`, { method: 'PATCH', body: JSON.stringify(patch) })
    state.rules = state.rules.map((r) => (r.id === updated.id ? updated : r))
    renderRules()
  } catch (err) {
    input.checked = rule.enabled
    ruleErr(err)
  }
}

async function deleteRule(rule, button) {
  $('rule-error').textContent = ''
  button.disabled = true
  try {
    await api(`/alerts/rules/${encodeURIComponent(rule.id)}`, { method: 'DELETE' })
    state.rules = state.rules.filter((r) => r.id !== rule.id)
    renderRules()
  } catch (err) {
    button.disabled = false
    ruleErr(err)
  }
}

async function onRuleSubmit(ev) {
  ev.preventDefault()
  $('rule-error').textContent = ''
  const body = {
    name: $('rule-name').value.trim(),
    condition: $('rule-condition').value,
    comparator: $('rule-comparator').value,
    threshold: Number($('rule-threshold').value),
    window_seconds: Number($('rule-window').value),
    enabled: true
  }
  const model = $('rule-model').value.trim()
  if (model !== '') body.model = model
  const groupBy = $('rule-group').value
  if (groupBy !== '') body.group_by = groupBy
  try {
    const rule = await api('/alerts/rules', { method: 'POST', body: JSON.stringify(body) })
    state.rules.push(rule)
    renderRules()
    $('rule-form').reset()
  } catch (err) {
    ruleErr(err)
  }
}

// ---------- money: prices, re-pricing, budgets (README: Prices and budgets) ----------

const money = {
  /** GET /prices answer, or null before it came (or when it failed). */
  prices: null,
  /** GET /budgets list, or null. */
  budgets: null,
  /** Price entries (provider|model) whose versions are unfolded. */
  openVersions: new Set(),
  /** Budgets whose groups are unfolded. */
  openGroups: new Set(),
  /** The last dry run `{ body, answer }`: Apply sends exactly that body, never the form's later state. */
  preview: null,
  applying: false
}
/** Price entries drawn at once (the pricing data knows many models); the model search narrows them. */
const PRICES_SHOWN = 200
const RATE_FIELDS = ['input', 'cached_input', 'cache_write', 'output', 'reasoning']

const usd = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD', minimumFractionDigits: 2, maximumFractionDigits: 6 })
const usdSigned = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD', minimumFractionDigits: 2, maximumFractionDigits: 6, signDisplay: 'exceptZero' })
/** Dollars to the micro-dollar: re-pricing differences are often fractions of a cent. */
function fmtUsd(x) {
  return typeof x === 'number' && Number.isFinite(x) ? usd.format(x) : '–'
}
function fmtUsdSigned(x) {
  return typeof x === 'number' && Number.isFinite(x) ? usdSigned.format(x) : '–'
}
const fmtPct = (f) => `${Number((f * 100).toPrecision(3))}%`
/** An instant the API gave (ISO or epoch ms); null, absent or -Infinity is the start of time. */
function instantMs(v) {
  if (v === null || v === undefined) return null
  const ms = typeof v === 'number' ? v : Date.parse(v)
  return Number.isFinite(ms) ? ms : null
}
function fmtInstant(v, empty = 'always') {
  const ms = instantMs(v)
  return ms === null ? empty : new Date(ms).toLocaleString()
}
/** `YYYY-MM-DDTHH:MM:SS` in local time, for a datetime-local input with seconds. */
function toLocalInputSec(ms) {
  return new Date(ms - new Date(ms).getTimezoneOffset() * 60_000).toISOString().slice(0, 19)
}
const rateOf = (v, k) => (v?.rates && typeof v.rates[k] === 'number' ? v.rates[k] : v?.[k])
const entryKey = (p) => `${p.provider}|${p.model}`

function resetMoney() {
  money.prices = null
  money.budgets = null
  money.openVersions.clear()
  money.openGroups.clear()
  discardPreview()
  $('rp-current').textContent = ''
  $('rp-done').textContent = ''
  renderPrices()
  renderBudgets()
}

function setView(view) {
  if (view === state.view) return
  state.view = view
  renderView()
  writeHash()
  if (view === 'money') loadMoney()
  else scheduleRefresh(0)
}

function renderView() {
  $('overview').hidden = state.view !== 'overview'
  $('money').hidden = state.view !== 'money'
  $('view-overview').setAttribute('aria-pressed', String(state.view === 'overview'))
  $('view-money').setAttribute('aria-pressed', String(state.view === 'money'))
}

function loadMoney() {
  if ($('rp-start').value === '' && $('rp-end').value === '') {
    const { start: s, end: e } = currentRange()
    $('rp-start').value = toLocalInputSec(Math.floor(s / 1000) * 1000)
    $('rp-end').value = toLocalInputSec(Math.ceil(e / 1000) * 1000)
  }
  fillTimeZones()
  return Promise.all([loadPrices(), loadBudgets()])
}

/** `err` as words for a money form: the admin scope, a missing route, else the server's message. */
function moneyMessage(err, what) {
  if (err.status === 403) return `${what} needs an admin key; this key can only read.`
  if (err.status === 404 && err.code !== 'LLMS_ERR_NOT_FOUND') return `${what}: this server has no such route (404).`
  return err.message
}

/**
 * Shows each problem of a 400 next to the field it names (`details[].path`, e.g. `input`,
 * `thresholds.1`, `(body) end_time`): the form's inputs carry the API's field names, and each
 * has a `<p id="PREFIX-FIELD-error">` under it. Problems no field claims (and a refusal without
 * details) go to the form's own line. Focus goes to the first field named.
 */
function showFormErrors(form, prefix, err, what) {
  let first = null
  const loose = []
  for (const d of err.details ?? []) {
    const path = String(d.path ?? '').replace(/^\((body|query)\)\s*/, '')
    const field = path.split(/[.[]/)[0]
    const box = field === '' ? null : $(`${prefix}-${field}-error`)
    if (box === null) {
      loose.push(d.message ? `${path}: ${d.message}` : path)
      continue
    }
    box.textContent = box.textContent === '' ? d.message : `${box.textContent}; ${d.message}`
    const input = form.elements.namedItem(field)
    if (input) {
      input.setAttribute('aria-invalid', 'true')
      input.setAttribute('aria-describedby', box.id)
      first ??= input
    }
  }
  const line = $(`${form.id}-error`) ?? $(`${prefix}-error`)
  // A 400's unplaced problems are worth reading; a 403's header detail is not.
  if (first === null) line.textContent = moneyMessage(err, what) + (loose.length && err.status === 400 ? ` (${loose.join('; ')})` : '')
  else {
    line.textContent = loose.length ? loose.join('; ') : ''
    first.focus()
  }
}

/** A problem found before sending (an empty required field), shown the same way. */
function fieldError(form, prefix, field, message) {
  showFormErrors(form, prefix, { details: [{ path: field, message }], status: 400, message })
}

function clearFormErrors(form, prefix) {
  for (const box of form.querySelectorAll('.field-error')) box.textContent = ''
  for (const input of form.querySelectorAll('[aria-invalid]')) {
    input.removeAttribute('aria-invalid')
    input.removeAttribute('aria-describedby')
  }
  const line = $(`${form.id}-error`) ?? $(`${prefix}-error`)
  if (line) line.textContent = ''
}

// ----- prices -----

async function loadPrices() {
  const gen = state.generation
  const q = $('prices-q').value.trim()
  try {
    const body = await api('/prices' + (q === '' ? '' : `?model=${encodeURIComponent(q)}`))
    if (gen !== state.generation) return
    money.prices = body
    $('prices-error').textContent = ''
    for (const p of body?.prices ?? []) for (const m of p.models ?? []) addModel(m)
    for (const u of body?.unpriced ?? []) addModel(u.model)
  } catch (err) {
    if (gen !== state.generation || err.status === 401) return
    money.prices = null
    $('prices-error').textContent = 'Could not load prices: ' + moneyMessage(err, 'GET /prices')
  }
  renderPrices()
}

function rateCells(v) {
  return RATE_FIELDS.map((k) => el('td', { className: 'num', 'data-label': k.replace('_', ' '), dataset: { rate: k } }, fmtUsd(rateOf(v, k))))
}

function renderPrices() {
  const entries = money.prices?.prices ?? []
  const rows = []
  for (const p of entries.slice(0, PRICES_SHOWN)) {
    const key = entryKey(p)
    const versions = Array.isArray(p.versions) ? p.versions : []
    const models = Array.isArray(p.models) ? p.models : []
    const open = money.openVersions.has(key)
    const toggle = el('button', { type: 'button', className: 'link', 'aria-expanded': String(open) }, `${versions.length} version${versions.length === 1 ? '' : 's'}`)
    toggle.setAttribute('aria-label', `Versions of ${p.provider} ${p.model}`)
    toggle.disabled = versions.length === 0
    toggle.addEventListener('click', () => {
      if (money.openVersions.has(key)) money.openVersions.delete(key)
      else money.openVersions.add(key)
      renderPrices()
      $('prices-body').querySelector(`tr[data-key="${CSS.escape(key)}"] button[aria-expanded]`)?.focus()
    })
    const reuse = el('button', { type: 'button' }, 'New version')
    reuse.setAttribute('aria-label', `New version of ${p.provider} ${p.model}`)
    reuse.addEventListener('click', () => fillPriceForm(p.provider, p.model, p))
    const shown = models.slice(0, 4).join(', ') + (models.length > 4 ? `, +${models.length - 4} more` : '')
    rows.push(
      el(
        'tr',
        { dataset: { key, provider: p.provider, model: p.model } },
        el('td', { className: 'model' }, el('strong', {}, p.model)),
        el('td', { 'data-label': 'provider' }, p.provider),
        el('td', { 'data-label': 'source', className: p.source === 'override' ? 'src-override' : 'src-default' }, p.source ?? '–'),
        ...rateCells(p),
        el('td', { 'data-label': 'since' }, fmtInstant(p.effective_from)),
        el('td', { 'data-label': 'prices', className: 'priced', title: models.join('\n') }, models.length === 0 ? el('span', { className: 'muted' }, 'no model seen') : shown),
        el('td', { className: 'actions full' }, toggle, ' ', reuse)
      )
    )
    if (open) rows.push(versionsRow(p, versions))
  }
  $('prices-body').replaceChildren(...rows)
  $('prices-empty').hidden = money.prices === null || entries.length > 0
  $('prices-more').hidden = entries.length <= PRICES_SHOWN
  $('prices-more').textContent = `Showing ${PRICES_SHOWN} of ${fmtCount(entries.length)} entries; search a model to see the others.`

  const unpriced = money.prices?.unpriced ?? []
  $('unpriced-body').replaceChildren(
    ...unpriced.map((u) => {
      const price = el('button', { type: 'button' }, 'Set a price')
      price.setAttribute('aria-label', `Set a price for ${u.provider} ${u.model}`)
      price.addEventListener('click', () => fillPriceForm(u.provider, u.model, null))
      return el(
        'tr',
        { dataset: { provider: u.provider, model: u.model } },
        el('td', { className: 'model' }, u.model),
        el('td', { 'data-label': 'provider' }, u.provider),
        el('td', { className: 'num', 'data-label': 'requests' }, fmtCount(u.requests)),
        el('td', {}, price)
      )
    })
  )
  $('unpriced-empty').hidden = money.prices === null || unpriced.length > 0
  $('unpriced-table').hidden = unpriced.length === 0
}

/** The versions of one entry, newest first, in a row spanning the table. */
function versionsRow(p, versions) {
  const sorted = [...versions].sort((a, b) => (instantMs(b.effective_from) ?? -Infinity) - (instantMs(a.effective_from) ?? -Infinity))
  const table = el(
    'table',
    { className: 'versions' },
    el(
      'thead',
      {},
      el('tr', {}, el('th', { scope: 'col' }, 'From'), ...RATE_FIELDS.map((k) => el('th', { scope: 'col', className: 'num' }, k.replace('_', ' '))), el('th', { scope: 'col' }, 'Source'), el('th', { scope: 'col' }, 'Added'))
    ),
    el(
      'tbody',
      {},
      ...sorted.map((v) =>
        el(
          'tr',
          { dataset: { versionId: v.id ?? '' } },
          el('td', { 'data-label': 'from' }, fmtInstant(v.effective_from)),
          ...rateCells(v),
          el('td', { 'data-label': 'source' }, v.source ?? (v.id ? 'PUT' : 'configuration')),
          el('td', { 'data-label': 'added' }, fmtInstant(v.created_at, '–'))
        )
      )
    )
  )
  return el('tr', { className: 'versions-row', dataset: { versionsOf: entryKey(p) } }, el('td', { colSpan: 11, className: 'full' }, el('div', { className: 'table-wrap' }, table)))
}

/** Puts an entry (or an unpriced model) into the add-version form, rates from `p` when given. */
function fillPriceForm(provider, model, p) {
  const form = $('price-form')
  clearFormErrors(form, 'pf')
  $('pf-provider').value = provider
  $('pf-model').value = model
  for (const [k, id] of [['input', 'pf-input'], ['output', 'pf-output'], ['cached_input', 'pf-cached'], ['cache_write', 'pf-cache-write'], ['reasoning', 'pf-reasoning']]) {
    const v = p ? rateOf(p, k) : undefined
    $(id).value = typeof v === 'number' ? String(v) : ''
  }
  $('pf-from').value = ''
  $('pf-input').focus()
  $('pf-input').scrollIntoView({ block: 'center' })
}

async function onPriceSubmit(evt) {
  evt.preventDefault()
  const form = $('price-form')
  clearFormErrors(form, 'pf')
  $('price-form-done').textContent = ''
  const body = { provider: $('pf-provider').value.trim(), model: $('pf-model').value.trim() }
  for (const field of ['provider', 'model']) if (body[field] === '') return fieldError(form, 'pf', field, 'required')
  for (const k of RATE_FIELDS) {
    const input = form.elements.namedItem(k)
    // A number input holding text the browser cannot read reports '' with badInput.
    if (input.validity.badInput) return fieldError(form, 'pf', k, 'not a number')
    if (input.value.trim() !== '') body[k] = Number(input.value)
    else if (k === 'input' || k === 'output') return fieldError(form, 'pf', k, 'required')
  }
  const from = $('pf-from').value
  if (from !== '') {
    const ms = new Date(from).getTime()
    if (!Number.isFinite(ms)) return fieldError(form, 'pf', 'effective_from', 'not a date')
    body.effective_from = new Date(ms).toISOString()
  }
  const button = form.querySelector('button[type=submit]')
  button.disabled = true
  try {
    await api('/prices', { method: 'PUT', body: JSON.stringify(body) })
    $('price-form-done').textContent = `Added: ${body.provider} ${body.model} from ${body.effective_from ? new Date(body.effective_from).toLocaleString() : 'now'}. It prices events from then on; re-price below to move stored ones.`
    for (const k of RATE_FIELDS) form.elements.namedItem(k).value = ''
    $('pf-from').value = ''
    money.openVersions.add(`${body.provider}|${body.model}`)
    await loadPrices()
  } catch (err) {
    if (err.status !== 401) showFormErrors(form, 'pf', err, 'Adding a price')
  } finally {
    button.disabled = false
  }
}

// ----- re-pricing -----

/** The form as a reprice body, or null after showing what is missing. */
function repriceBody() {
  const form = $('reprice-form')
  const body = {}
  for (const [field, id] of [['start_time', 'rp-start'], ['end_time', 'rp-end']]) {
    const v = $(id).value
    const ms = v === '' ? NaN : new Date(v).getTime()
    if (!Number.isFinite(ms)) {
      fieldError(form, 'rp', field, v === '' ? 'required' : 'not a date')
      return null
    }
    body[field] = new Date(ms).toISOString()
  }
  const model = $('rp-model').value.trim()
  if (model !== '') body.model = model
  return body
}

/** The cost the server now counts in the range (GET /analytics/metrics), shown above the preview. */
async function loadRangeCost(body) {
  const gen = state.generation
  try {
    const q = `start_time=${Date.parse(body.start_time)}&end_time=${Date.parse(body.end_time)}` + (body.model ? `&model=${encodeURIComponent(body.model)}` : '')
    const m = await api(`/analytics/metrics?${q}`)
    if (gen !== state.generation) return
    const line = $('rp-current')
    line.dataset.value = String(m.total_cost)
    line.replaceChildren('Cost counted now in this range', body.model ? ` for ${body.model}` : '', ': ', el('strong', { id: 'rp-current-cost' }, fmtUsd(m.total_cost)), ` (${fmtCount(m.total_requests)} requests)`)
  } catch (err) {
    if (gen === state.generation && err.status !== 401) $('rp-current').textContent = 'Could not read the cost in this range: ' + err.message
  }
}

async function onRepricePreview(evt) {
  evt.preventDefault()
  const form = $('reprice-form')
  clearFormErrors(form, 'rp')
  discardPreview()
  $('rp-done').textContent = ''
  const body = repriceBody()
  if (body === null) return
  const button = $('rp-preview')
  button.disabled = true
  button.textContent = 'Computing…'
  const gen = state.generation
  try {
    const [answer] = await Promise.all([api('/prices/reprice', { method: 'POST', body: JSON.stringify({ ...body, dry_run: true }) }), loadRangeCost(body)])
    if (gen !== state.generation) return
    money.preview = { body, answer }
    renderPreview()
    $('rp-apply').focus()
  } catch (err) {
    if (gen === state.generation && err.status !== 401) showFormErrors(form, 'rp', err, 'Re-pricing')
  } finally {
    button.disabled = false
    button.textContent = 'Preview (dry run)'
  }
}

function diffCells(r) {
  const cls = (d) => 'num ' + (d > 0 ? 'up' : d < 0 ? 'down' : '')
  return [
    el('td', { className: 'num', 'data-label': 'requests', dataset: { field: 'requests', value: String(r.requests) } }, fmtCount(r.requests)),
    el('td', { className: 'num', 'data-label': 'before', dataset: { field: 'before', value: String(r.before) } }, fmtUsd(r.before)),
    el('td', { className: 'num', 'data-label': 'after', dataset: { field: 'after', value: String(r.after) } }, fmtUsd(r.after)),
    el('td', { className: cls(r.difference), 'data-label': 'difference', dataset: { field: 'difference', value: String(r.difference) } }, fmtUsdSigned(r.difference))
  ]
}

function renderPreview() {
  const p = money.preview
  $('rp-result').hidden = p === null
  $('rp-apply').hidden = p === null
  $('rp-cancel').hidden = p === null
  if (p === null) {
    $('rp-body').replaceChildren()
    $('rp-foot').replaceChildren()
    return
  }
  const models = Array.isArray(p.answer?.models) ? p.answer.models : []
  $('rp-body').replaceChildren(
    ...models.map((r) => el('tr', { dataset: { model: r.model, provider: r.provider } }, el('td', { className: 'model' }, r.model), el('td', { 'data-label': 'provider' }, r.provider), ...diffCells(r)))
  )
  const total = p.answer?.total
  $('rp-foot').replaceChildren(...(total ? [el('tr', { className: 'total' }, el('td', { className: 'full' }, 'Total'), el('td', {}), ...diffCells(total))] : []))
  $('rp-empty').hidden = models.length > 0
  const apply = $('rp-apply')
  apply.disabled = false
  apply.textContent = total ? `Apply: ${fmtUsdSigned(total.difference)} over ${fmtCount(total.requests)} requests` : 'Apply these prices'
}

function discardPreview() {
  money.preview = null
  renderPreview()
}

async function onRepriceApply() {
  const p = money.preview
  if (p === null || money.applying) return
  money.applying = true
  const apply = $('rp-apply')
  apply.disabled = true
  apply.textContent = 'Applying…'
  $('rp-error').textContent = ''
  const gen = state.generation
  try {
    const answer = await api('/prices/reprice', { method: 'POST', body: JSON.stringify({ ...p.body, dry_run: false }) })
    if (gen !== state.generation) return
    discardPreview()
    const total = answer?.total
    $('rp-done').textContent = total
      ? `Applied: ${fmtCount(total.requests)} requests from ${fmtUsd(total.before)} to ${fmtUsd(total.after)} (${fmtUsdSigned(total.difference)}). Every figure in the range shows the new prices.`
      : 'Applied. Every figure in the range shows the new prices.'
    // Everything that shows a cost moves: this card's figure, budgets, the overview.
    await Promise.all([loadRangeCost(p.body), loadPrices(), loadBudgets()])
    scheduleRefresh(0)
    resetEvents()
  } catch (err) {
    if (gen !== state.generation || err.status === 401) return
    apply.disabled = false
    apply.textContent = 'Apply these prices'
    $('rp-error').textContent = 'Could not apply: ' + moneyMessage(err, 'Re-pricing')
  } finally {
    money.applying = false
  }
}

// ----- budgets -----

async function loadBudgets() {
  const gen = state.generation
  try {
    const body = await api('/budgets')
    if (gen !== state.generation) return
    money.budgets = Array.isArray(body) ? body : Array.isArray(body?.budgets) ? body.budgets : []
    $('budgets-error').textContent = ''
  } catch (err) {
    if (gen !== state.generation || err.status === 401) return
    money.budgets = null
    $('budgets-error').textContent = 'Could not load budgets: ' + moneyMessage(err, 'GET /budgets')
  }
  renderBudgets()
  renderAlerts()
}

const clamp01 = (x) => (Number.isFinite(x) ? Math.min(1, Math.max(0, x)) : 0)

/**
 * A bar whose whole width is the amount: the fill is spent ÷ amount (full when over), a tick
 * per threshold, a diamond where the forecast lands (at the end, marked over, past the amount).
 */
function budgetMeter(name, spent, amount, forecast, thresholds) {
  const ratio = amount > 0 ? spent / amount : spent > 0 ? 1 : 0
  const fill = el('span', { className: 'bfill' + (ratio >= 1 ? ' over' : '') })
  fill.style.width = `${clamp01(ratio) * 100}%`
  const meter = el('div', { className: 'bmeter', role: 'progressbar', dataset: { spent: String(spent), amount: String(amount) } }, fill)
  meter.setAttribute('aria-valuemin', '0')
  meter.setAttribute('aria-valuemax', String(amount))
  meter.setAttribute('aria-valuenow', String(Math.max(0, spent)))
  meter.setAttribute('aria-label', `${name}: ${fmtUsd(spent)} of ${fmtUsd(amount)} spent`)
  meter.setAttribute('aria-valuetext', `${fmtUsd(spent)} of ${fmtUsd(amount)} (${fmtPct(ratio)})`)
  for (const t of thresholds) {
    if (!(t > 0) || t > 1) continue
    const tick = el('span', { className: 'btick' + (ratio >= t ? ' reached' : ''), title: `threshold ${fmtPct(t)}`, dataset: { threshold: String(t) } })
    tick.style.left = `${t * 100}%`
    meter.append(tick)
  }
  if (typeof forecast === 'number' && Number.isFinite(forecast) && amount > 0) {
    const f = forecast / amount
    const mark = el('span', { className: 'bforecast' + (f > 1 ? ' over' : ''), title: `forecast ${fmtUsd(forecast)} at the period's end`, dataset: { forecast: String(forecast) } })
    mark.style.left = `${clamp01(f) * 100}%`
    meter.append(mark)
  }
  return meter
}

function budgetFacts(spent, amount, remaining, forecast, end) {
  const facts = el(
    'p',
    { className: 'bfacts' },
    el('span', { className: 'spent' }, el('strong', {}, fmtUsd(spent)), ` of ${fmtUsd(amount)}`, amount > 0 ? ` (${fmtPct(spent / amount)})` : ''),
    el('span', { className: 'remaining' + (remaining < 0 ? ' over' : '') }, remaining < 0 ? `${fmtUsd(-remaining)} over` : `${fmtUsd(remaining)} left`)
  )
  if (typeof forecast === 'number' && Number.isFinite(forecast)) {
    facts.append(el('span', { className: 'forecast' + (forecast > amount ? ' over' : '') }, `forecast ${fmtUsd(forecast)}` + (end ? ` by ${fmtInstant(end, '')}` : ' by the period’s end')))
  }
  return facts
}

const periodEnd = (b) => b.period_end ?? b.current_period?.end ?? null
const periodStart = (b) => b.period_start ?? b.current_period?.start ?? null

function renderBudgets() {
  const list = money.budgets ?? []
  $('budget-list').replaceChildren(
    ...list.map((b) => {
      const thresholds = Array.isArray(b.thresholds) ? b.thresholds : []
      const filters = b.filters && typeof b.filters === 'object' ? Object.entries(b.filters) : []
      const about = [`${b.period}${b.timezone ? ` · ${b.timezone}` : ''}`]
      if (b.group_by) about.push(`per ${b.group_by}`)
      for (const [k, v] of filters) about.push(`${k} = ${v}`)
      // Thresholds past 100% have no place on the bar (its width is the amount): named here.
      if (thresholds.length > 0) about.push(`alerts at ${thresholds.map(fmtPct).join(', ')}`)
      const start = periodStart(b)
      if (start) about.push(`since ${fmtInstant(start, '')}`)
      const del = el('button', { type: 'button', className: 'danger' }, 'Delete')
      del.setAttribute('aria-label', `Delete budget ${b.name}`)
      del.addEventListener('click', () => {
        if (del.dataset.armed === '1') deleteBudget(b, del)
        else {
          del.dataset.armed = '1'
          del.textContent = 'Confirm delete'
        }
      })
      const item = el(
        'li',
        { className: 'budget', dataset: { budgetId: b.id } },
        el('div', { className: 'bhead' }, el('strong', { className: 'bname' }, b.name), el('span', { className: 'muted' }, about.join(' · ')), del),
        budgetMeter(b.name, b.spent, b.amount, b.forecast, thresholds),
        budgetFacts(b.spent, b.amount, b.remaining, b.forecast, periodEnd(b))
      )
      if (Array.isArray(b.groups)) item.append(budgetGroups(b, thresholds))
      return item
    })
  )
  $('budgets-empty').hidden = money.budgets === null || list.length > 0
}

/** A grouped budget's groups, folded (a native <details>: keyboard and screen readers know it). */
function budgetGroups(b, thresholds) {
  const groups = [...b.groups].sort((x, y) => y.spent - x.spent)
  // Past the cap (1,000 groups) the rest spent together, unsplit: said, with its sum.
  const capped = b.groups_capped === true
  const other = typeof b.other_spent === 'number' ? ` ${fmtUsd(b.other_spent)}` : ''
  const details = el(
    'details',
    { className: 'bgroups', open: money.openGroups.has(b.id) },
    el('summary', {}, `${fmtCount(groups.length)} group${groups.length === 1 ? '' : 's'} by ${b.group_by}` + (capped ? ` (capped: more groups spent${other}, not split)` : ''))
  )
  details.addEventListener('toggle', () => {
    if (details.open) money.openGroups.add(b.id)
    else money.openGroups.delete(b.id)
  })
  details.append(
    el(
      'ol',
      { className: 'budget-list groups' },
      ...groups.map((g) => {
        const label = groupLabel(g.group)
        return el('li', { className: 'budget group-item', dataset: { group: g.group === null ? '' : String(g.group) } }, el('div', { className: 'bhead' }, el('span', { className: 'bname' + (g.group === null ? ' muted-value' : '') }, label)), budgetMeter(`${b.name} ${label}`, g.spent, b.amount, g.forecast, thresholds), budgetFacts(g.spent, b.amount, g.remaining, g.forecast, periodEnd(b)))
      })
    )
  )
  return details
}

async function deleteBudget(b, button) {
  $('budgets-error').textContent = ''
  button.disabled = true
  try {
    await api(`/budgets/${encodeURIComponent(b.id)}`, { method: 'DELETE' })
    money.budgets = (money.budgets ?? []).filter((x) => x.id !== b.id)
    renderBudgets()
    $('bf-name').focus()
  } catch (err) {
    button.disabled = false
    if (err.status !== 401) $('budgets-error').textContent = 'Could not delete: ' + moneyMessage(err, 'Deleting a budget')
  }
}

async function onBudgetSubmit(evt) {
  evt.preventDefault()
  const form = $('budget-form')
  clearFormErrors(form, 'bf')
  const body = { name: $('bf-name').value.trim(), period: $('bf-period').value }
  if (body.name === '') return fieldError(form, 'bf', 'name', 'required')
  const amount = $('bf-amount')
  if (amount.value.trim() === '') return fieldError(form, 'bf', 'amount', amount.validity.badInput ? 'not a number' : 'required')
  body.amount = Number(amount.value)
  const tz = $('bf-timezone').value.trim()
  if (tz !== '') body.timezone = tz
  if ($('bf-group').value !== '') body.group_by = $('bf-group').value
  const filter = $('bf-filter').value.trim()
  if (filter !== '') {
    const m = /^([^=\s]+)\s*=\s*(.+)$/.exec(filter)
    if (!m) return fieldError(form, 'bf', 'filters', 'write NAME=VALUE, e.g. model=gpt-4o or user_id=u1')
    body.filters = { [m[1]]: m[2].trim() }
  }
  const thresholds = $('bf-thresholds').value.trim()
  if (thresholds !== '') {
    // "0.5, 0.8, 1" or "50%, 80%, 100%".
    const parts = thresholds.split(/[\s,;]+/).filter((x) => x !== '')
    const values = parts.map((x) => (x.endsWith('%') ? Number(x.slice(0, -1)) / 100 : Number(x)))
    if (values.some((v) => !Number.isFinite(v))) return fieldError(form, 'bf', 'thresholds', 'fractions of the amount, e.g. 0.5, 0.8, 1')
    body.thresholds = values
  }
  const hook = $('bf-webhook').value.trim()
  if (hook !== '') body.webhook_url = hook
  const button = form.querySelector('button[type=submit]')
  button.disabled = true
  try {
    const created = await api('/budgets', { method: 'POST', body: JSON.stringify(body) })
    form.reset()
    if (created && typeof created === 'object' && created.id) {
      money.budgets = [...(money.budgets ?? []).filter((b) => b.id !== created.id), created]
      renderBudgets()
    }
    await loadBudgets()
  } catch (err) {
    if (err.status !== 401) showFormErrors(form, 'bf', err, 'Creating a budget')
  } finally {
    button.disabled = false
  }
}

let zonesFilled = false
function fillTimeZones() {
  if (zonesFilled || typeof Intl.supportedValuesOf !== 'function') return
  zonesFilled = true
  $('tz-list').replaceChildren(...Intl.supportedValuesOf('timeZone').map((z) => el('option', { value: z })))
}

$('view-overview').addEventListener('click', () => setView('overview'))
$('view-money').addEventListener('click', () => setView('money'))
$('prices-search').addEventListener('submit', (evt) => {
  evt.preventDefault()
  loadPrices()
})
$('price-form').addEventListener('submit', onPriceSubmit)
$('reprice-form').addEventListener('submit', onRepricePreview)
// Apply sends what the preview showed: any change to the form first discards the preview.
$('reprice-form').addEventListener('input', () => {
  if (money.preview !== null) discardPreview()
})
$('rp-apply').addEventListener('click', onRepriceApply)
$('rp-cancel').addEventListener('click', () => {
  discardPreview()
  $('rp-preview').focus()
})
$('budget-form').addEventListener('submit', onBudgetSubmit)
// Editing a field the server refused takes its message away (the next submit judges it again).
for (const id of ['price-form', 'reprice-form', 'budget-form']) {
  $(id).addEventListener('input', (evt) => {
    const input = evt.target
    if (input.getAttribute('aria-invalid') !== 'true') return
    const box = $(input.getAttribute('aria-describedby') ?? '')
    if (box) box.textContent = ''
    input.removeAttribute('aria-invalid')
    input.removeAttribute('aria-describedby')
  })
}

// ---------- controls ----------

function toLocalInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60_000)
  return d.toISOString().slice(0, 16)
}

function onRangeChange() {
  const v = $('range').value
  $('custom-range').hidden = v !== 'custom'
  if (v === 'custom') {
    const { start: s, end: e } = currentRange()
    $('custom-start').value = toLocalInput(s)
    $('custom-end').value = toLocalInput(e)
    return
  }
  state.range = v
  state.custom = null
  ev.bucket = null
  writeHash()
  refresh()
  resetEvents()
}

function onCustomSubmit(ev) {
  ev.preventDefault()
  const s = new Date($('custom-start').value).getTime()
  const e = new Date($('custom-end').value).getTime()
  if (!(s < e)) {
    setBanner('The custom range must end after it starts.')
    return
  }
  state.range = 'custom'
  state.custom = { start: s, end: e }
  ev.bucket = null
  setBanner('')
  writeHash()
  refresh()
  resetEvents()
}

function setGroup(by) {
  state.groupBy = by
  $('by-model').setAttribute('aria-pressed', String(by === 'model'))
  $('by-provider').setAttribute('aria-pressed', String(by === 'provider'))
  renderCosts()
}

$('key-form').addEventListener('submit', onKeySubmit)
$('change-key').addEventListener('click', () => {
  localStorage.removeItem(KEY_STORAGE)
  state.key = null
  state.owner = false
  showKeyPanel()
})
$('range').addEventListener('change', onRangeChange)
$('custom-range').addEventListener('submit', onCustomSubmit)
$('by-model').addEventListener('click', () => setGroup('model'))
$('by-provider').addEventListener('click', () => setGroup('provider'))
$('tail-model').addEventListener('change', () => {
  state.tailModel = $('tail-model').value
  renderTail()
})
$('tail-pause').addEventListener('click', togglePause)
$('project').addEventListener('change', onProjectChange)
$('bd-dim').addEventListener('change', () => setBreakdown($('bd-dim').value, state.bd.sort))
for (const sort of SORTS) $(`bd-sort-${sort}`).addEventListener('click', () => setBreakdown(state.bd.by, sort))
$('clear-filters').addEventListener('click', () => {
  state.filters.clear()
  openView()
  $('bd-dim').focus()
})
window.addEventListener('hashchange', onHashChange)
$('rule-form').addEventListener('submit', onRuleSubmit)
// A sliding range moves even without traffic; firing rules resolve by themselves.
setInterval(() => {
  if (!state.key || $('dash').hidden || document.hidden) return
  if (state.range !== 'custom') scheduleRefresh(0)
  loadAlerts()
  // Spending moves with traffic: the bars follow (the price book changes only by a form here).
  if (state.view === 'money') loadBudgets()
}, 15_000)

if (state.key) start()
else showKeyPanel()
