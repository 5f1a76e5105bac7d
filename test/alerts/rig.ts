/**
 * The alert tests' rig (not a test file): an app on a temp data dir with a manual clock and no
 * alert timer (ticks by hand), a webhook receiver on loopback, and small helpers to ingest,
 * evaluate and read what alerting produced.
 */
import type { Test } from 'tap'
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { loadConfig } from '../../src/config.js'
import { buildApp, type Built } from '../../src/app.js'
import type { ManualClock } from '../../src/clock.js'
import type { AlertNotice } from '../../src/actors/broadcaster.js'
import { ADMIN_KEY, READ_KEY, adminHeaders, readHeaders } from '../helpers/app.js'

export interface Rig extends Built {
  dir: string
  /** Alert frames handed to the broadcaster (what WebSocket clients are sent), in order. */
  frames: AlertNotice[]
  close(): Promise<void>
}

/** Builds and recovers an app on `dir` (default a fresh testdir) with `clock` and no alert timer. */
export async function rig(t: Test, clock: ManualClock, dir = t.testdir()): Promise<Rig> {
  const config = loadConfig({ LLMSCOPE_DATA_DIR: dir, LLMSCOPE_API_KEYS: `${ADMIN_KEY},${READ_KEY}:read`, LLMSCOPE_LOG_LEVEL: 'silent' })
  const built = await buildApp(config, { logger: false, clock, inlinePricing: true, alertTickMs: 0, webhook: { backoffMs: 5, timeoutMs: 5000 } })
  await built.engine.recover()
  const frames: AlertNotice[] = []
  const b = built.engine.topology.broadcaster
  const send = b.send.bind(b)
  b.send = (m) => {
    if (m.type === 'alert' && m.alert.type === 'alert') frames.push(m.alert)
    return send(m)
  }
  let closed: Promise<void> | undefined
  const close = () => (closed ??= built.app.close().then(() => undefined))
  t.teardown(close)
  return { ...built, dir, frames, close }
}

/** POST /events/batch (all or nothing); throws on anything but 202. */
export async function ingest(r: Built, events: object[]): Promise<void> {
  const res = await r.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: events })
  if (res.statusCode !== 202) throw new Error(res.body)
}

/** Creates a rule; throws on anything but 201. */
export async function createRule(r: Built, payload: object): Promise<Record<string, any>> {
  const res = await r.app.inject({ method: 'POST', url: '/alerts/rules', headers: adminHeaders, payload })
  if (res.statusCode !== 201) throw new Error(res.body)
  return res.json()
}

/** What the evaluator does on a 1 s tick, done now: sync, tick, wait for records and webhooks. */
export async function evaluate(r: Built): Promise<void> {
  await r.engine.sync()
  r.engine.topology.alerts.send({ type: 'tick' })
  await r.engine.topology.alerts.idle()
  await r.engine.alerting.idle()
}

/** GET /alerts/events (newest first). */
export async function alertEvents(r: Built, query = ''): Promise<Array<Record<string, any>>> {
  const res = await r.app.inject({ url: `/alerts/events${query}`, headers: readHeaders })
  if (res.statusCode !== 200) throw new Error(res.body)
  return res.json().events
}

/** GET /alerts/rules/:id/state. */
export async function ruleState(r: Built, id: string): Promise<Record<string, any>> {
  const res = await r.app.inject({ url: `/alerts/rules/${id}/state`, headers: readHeaders })
  if (res.statusCode !== 200) throw new Error(res.body)
  return res.json()
}

/** A webhook receiver on 127.0.0.1 answering 200; `hits` holds each body (parsed) and its headers. */
export async function receiver(t: Test): Promise<{ url: string; hits: Array<{ body: any; headers: IncomingHttpHeaders }> }> {
  const hits: Array<{ body: any; headers: IncomingHttpHeaders }> = []
  const server = createServer((req, res: ServerResponse) => {
    let data = ''
    req.on('data', (c: Buffer) => (data += c.toString()))
    req.on('end', () => {
      hits.push({ body: JSON.parse(data), headers: req.headers })
      res.writeHead(200).end('ok')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, hits }
}

/** `[group, state, reminder]` of alert records, oldest first, for compact assertions. */
export const trail = (events: Array<Record<string, any>>) => [...events].reverse().map((e) => `${e.group === null ? '∅' : e.group}:${e.state}${e.reminder === true ? ':reminder' : ''}`)
