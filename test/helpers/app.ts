/** Test helpers: a built app on a temp data dir with known keys, recovered and ready. */
import type { Test } from 'tap'
import { loadConfig, type EnvInput } from '../../src/config.js'
import { buildApp, type Built } from '../../src/app.js'
import type { Clock } from '../../src/clock.js'

export const ADMIN_KEY = 'test-admin-key-0001'
export const INGEST_KEY = 'test-ingest-key-0001'
export const READ_KEY = 'test-read-key-0001'

export interface TestApp extends Built {
  dir: string
  /** Closes the app (idempotent); teardown also calls it. */
  close(): Promise<void>
}

/** Builds and recovers an app on `dir` (default: a fresh t.testdir()). */
export async function makeApp(t: Test, opts: { env?: EnvInput; dir?: string; clock?: Clock; inlinePricing?: boolean } = {}): Promise<TestApp> {
  const dir = opts.dir ?? t.testdir()
  const config = loadConfig({
    LLMSCOPE_DATA_DIR: dir,
    LLMSCOPE_API_KEYS: `${ADMIN_KEY},${INGEST_KEY}:ingest,${READ_KEY}:read`,
    LLMSCOPE_LOG_LEVEL: 'silent',
    ...opts.env
  })
  const built = await buildApp(config, { logger: false, clock: opts.clock, inlinePricing: opts.inlinePricing })
  await built.engine.recover()
  let closed: Promise<void> | undefined
  const close = () => (closed ??= built.app.close().then(() => undefined))
  t.teardown(close)
  return { ...built, dir, close }
}

export const adminHeaders = { 'x-api-key': ADMIN_KEY }
export const readHeaders = { 'x-api-key': READ_KEY }
export const ingestHeaders = { 'x-api-key': INGEST_KEY }

/** A valid event body with overrides. */
export function event(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    timestamp: '2026-01-01T00:00:00.000Z',
    model: 'gpt-4',
    provider: 'openai',
    prompt_tokens: 1000,
    completion_tokens: 500,
    latency_ms: 120,
    ...over
  }
}
