/**
 * Walks an ExportTraceServiceRequest — parsed OTLP/JSON or decoded protobuf, both as plain
 * objects — into flat span views. OTLP/JSON differences handled here: ids are hex strings
 * (protobuf: bytes), int64/fixed64 may be numbers or decimal strings, enums may be numbers or
 * their names, and keys are lowerCamelCase (the proto field names are accepted too, as the
 * proto3 JSON mapping requires of parsers).
 *
 * Structure above the span (resourceSpans, scopeSpans, spans not being arrays) is a malformed
 * request: it throws a 400 naming the path. A problem inside one span only marks that span.
 */
import { llmsError } from '../errors.js'

/** An OTLP AnyValue as a plain object (`{ stringValue }`, `{ intValue }`, …). */
export type AnyValue = Record<string, unknown>

/** One span, flattened with what it inherits from its resource and scope. */
export interface SpanView {
  traceId: string
  spanId: string
  /** '' for a root span. */
  parentSpanId: string
  name: string
  /** Unix nanoseconds; null when absent or unreadable. */
  start: bigint | null
  end: bigint | null
  /** 0 unset, 1 ok, 2 error (names like `STATUS_CODE_ERROR` are mapped). */
  statusCode: number
  statusMessage: string
  attrs: ReadonlyMap<string, AnyValue>
  resource: ReadonlyMap<string, AnyValue>
  scopeName: string
}

/** A span entry that is not even an object: rejected without further reading. */
export interface MalformedSpan {
  malformed: string
}

type Obj = Record<string, unknown>

const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Uint8Array)

/** A field by its lowerCamelCase name or its proto name. */
function field(o: Obj, camel: string, snake: string): unknown {
  const v = o[camel]
  return v !== undefined ? v : o[snake]
}

function list(o: Obj, camel: string, snake: string, path: string): unknown[] {
  const v = field(o, camel, snake)
  if (v === undefined || v === null) return []
  if (!Array.isArray(v)) throw llmsError('LLMS_ERR_VALIDATION', `${path}.${camel} must be an array`, { details: [{ path: `${path}.${camel}`, message: 'expected an array' }] })
  return v
}

/** Attributes as a map; entries that are not `{ key: string, value: object }` are skipped. */
export function attributeMap(v: unknown): Map<string, AnyValue> {
  const out = new Map<string, AnyValue>()
  if (!Array.isArray(v)) return out
  for (const kv of v) {
    if (!isObj(kv) || typeof kv.key !== 'string') continue
    const value = kv.value
    if (isObj(value)) out.set(kv.key, value)
  }
  return out
}

const HEX = '0123456789abcdef'

/** An id as lower-case hex: bytes (protobuf) are encoded, strings (OTLP/JSON hex) kept. */
export function idToHex(v: unknown): string {
  if (v instanceof Uint8Array) {
    let s = ''
    for (const b of v) s += HEX[b >> 4] + HEX[b & 15]
    return s
  }
  if (typeof v !== 'string') return ''
  // OTLP/JSON ids are hex; anything else (base64 from a non-conforming sender) is kept as sent.
  const s = v.length > 64 ? v.slice(0, 64) : v
  return /^[0-9a-fA-F]*$/.test(s) ? s.toLowerCase() : s
}

/** A fixed64 time: a decimal string, a safe non-negative integer, else null. */
export function nanos(v: unknown): bigint | null {
  if (typeof v === 'string' && /^\d{1,20}$/.test(v)) return BigInt(v)
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return BigInt(v)
  return null
}

const STATUS_NAMES: Record<string, number> = { STATUS_CODE_UNSET: 0, STATUS_CODE_OK: 1, STATUS_CODE_ERROR: 2 }

function statusCode(v: unknown): number {
  if (typeof v === 'number') return v
  if (typeof v === 'string') return STATUS_NAMES[v] ?? (/^\d+$/.test(v) ? Number(v) : 0)
  return 0
}

/**
 * Every span of the request, in order. Throws a 400 (LLMS_ERR_VALIDATION) when the request
 * itself is not an ExportTraceServiceRequest.
 */
export function readSpans(body: unknown): Array<SpanView | MalformedSpan> {
  if (!isObj(body)) throw llmsError('LLMS_ERR_VALIDATION', 'body must be an ExportTraceServiceRequest object', { details: [{ path: '(body)', message: 'expected an object' }] })
  const out: Array<SpanView | MalformedSpan> = []
  const resourceSpans = list(body, 'resourceSpans', 'resource_spans', '(body)')
  for (let r = 0; r < resourceSpans.length; r++) {
    const rs = resourceSpans[r]
    const rPath = `resourceSpans[${r}]`
    if (!isObj(rs)) throw llmsError('LLMS_ERR_VALIDATION', `${rPath} must be an object`, { details: [{ path: rPath, message: 'expected an object' }] })
    const resourceObj = rs.resource
    const resource = attributeMap(isObj(resourceObj) ? resourceObj.attributes : undefined)
    const scopeSpans = list(rs, 'scopeSpans', 'scope_spans', rPath)
    for (let s = 0; s < scopeSpans.length; s++) {
      const ss = scopeSpans[s]
      const sPath = `${rPath}.scopeSpans[${s}]`
      if (!isObj(ss)) throw llmsError('LLMS_ERR_VALIDATION', `${sPath} must be an object`, { details: [{ path: sPath, message: 'expected an object' }] })
      const scope = ss.scope
      const scopeName = isObj(scope) && typeof scope.name === 'string' ? scope.name : ''
      const spans = list(ss, 'spans', 'spans', sPath)
      for (let i = 0; i < spans.length; i++) {
        const span = spans[i]
        if (!isObj(span)) {
          out.push({ malformed: `${sPath}.spans[${i}] is not an object` })
          continue
        }
        const status = span.status
        out.push({
          traceId: idToHex(field(span, 'traceId', 'trace_id')),
          spanId: idToHex(field(span, 'spanId', 'span_id')),
          parentSpanId: idToHex(field(span, 'parentSpanId', 'parent_span_id')),
          name: typeof span.name === 'string' ? span.name : '',
          start: nanos(field(span, 'startTimeUnixNano', 'start_time_unix_nano')),
          end: nanos(field(span, 'endTimeUnixNano', 'end_time_unix_nano')),
          statusCode: isObj(status) ? statusCode(status.code) : 0,
          statusMessage: isObj(status) && typeof status.message === 'string' ? status.message : '',
          attrs: attributeMap(span.attributes),
          resource,
          scopeName
        })
      }
    }
  }
  return out
}
