/** OTLP test helpers: fixtures, request builders, and reading back what was stored. */
import { readFileSync, readdirSync } from 'node:fs'
import { gzipSync } from 'node:zlib'
import { encodeTraceRequest } from '../../src/otlp/proto.js'
import { toPublic } from '../../src/events.js'
import type { Engine } from '../../src/engine.js'

const DIR = new URL('./fixtures/', import.meta.url)

export type Json = Record<string, unknown>

export interface Fixture {
  file: string
  source: string
  resource: Json[]
  scope: Json
  span?: Json
  spans?: Json[]
  expected?: Json & { metadata?: Json }
  /** Metadata keys the event must not have. */
  absent_metadata?: string[]
}

export function fixtures(): Fixture[] {
  return readdirSync(DIR)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((file) => ({ file, ...(JSON.parse(readFileSync(new URL(file, DIR), 'utf8')) as Omit<Fixture, 'file'>) }))
}

export function fixture(file: string): Fixture {
  const f = fixtures().find((x) => x.file === file)
  if (f === undefined) throw new Error(`no fixture ${file}`)
  return f
}

/** An OTLP/JSON ExportTraceServiceRequest holding the fixture's span(s). */
export function requestOf(...fxs: Fixture[]): Json {
  return {
    resourceSpans: fxs.map((fx) => ({
      resource: { attributes: fx.resource },
      scopeSpans: [{ scope: fx.scope, spans: fx.spans ?? [fx.span] }]
    }))
  }
}

const STATUS: Record<string, number> = { STATUS_CODE_UNSET: 0, STATUS_CODE_OK: 1, STATUS_CODE_ERROR: 2 }

/** The same request as protobuf bytes: hex ids → bytes, enum names → numbers. */
export function protobufOf(request: Json): Buffer {
  const walk = (v: unknown, key = ''): unknown => {
    if (Array.isArray(v)) return v.map((x) => walk(x))
    if (v !== null && typeof v === 'object') {
      const out: Json = {}
      for (const [k, x] of Object.entries(v)) out[k] = walk(x, k)
      return out
    }
    if ((key === 'traceId' || key === 'spanId' || key === 'parentSpanId') && typeof v === 'string') return Buffer.from(v, 'hex')
    if (key === 'code' && typeof v === 'string') return STATUS[v] ?? 0
    return v
  }
  return Buffer.from(encodeTraceRequest(walk(request) as Json))
}

export const gzip = (b: Buffer | string) => gzipSync(b)

/** Every stored event, in log order, as GET /events/:id shows it. */
export function storedEvents(engine: Engine): Array<ReturnType<typeof toPublic>> {
  const out: Array<ReturnType<typeof toPublic>> = []
  for (let seq = 0; seq < engine.log.nextSeq; seq++) {
    const e = engine.log.get(seq)
    if (e !== undefined) out.push(toPublic(engine.price(e)))
  }
  return out
}
