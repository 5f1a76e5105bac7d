/**
 * The `GET /events` cursor (DESIGN §7): opaque to clients, base64url of
 * `{"v":1,"sort","key","seq","f"}` — where the next page starts (strictly after (key, seq) in the
 * sort's order) and `f`, a hash of what the page was a page of (project, filters, range). A
 * cursor used with other filters, range or sort, or from another project, is a 400 naming
 * `cursor`; so is one that does not decode. It carries no value of the filters (only their
 * hash), so a cursor in a log or a URL shows nothing of the data.
 *
 * Re-pricing (DESIGN §8): a `sort=cost` page's keys are costs, which a re-price of the range
 * changes. A `sort=cost` cursor carries `pe`, how many re-pricings its project had when its page
 * was served; {@link repricedCheck} answers 409 when a later one covers part of its range (its
 * order would skip or repeat events).
 */
import { createHash } from 'node:crypto'
import { llmsError } from '../errors.js'
import { SEARCH_SORTS, type SearchAfter, type SearchSort } from '../analytics/search.js'
import type { RangeQuery } from '../queries.js'

/** Longest cursor accepted (a real one is about 100 characters). */
export const MAX_CURSOR_LENGTH = 512

interface CursorBody {
  v: 1
  sort: SearchSort
  key: number
  seq: number
  f: string
  /** `sort=cost` only: the project's re-pricing count when the page was served (absent: 0). */
  pe?: number
}

/** What a page was a page of: project, every filter, the range — canonical, then hashed. */
export function queryHash(q: RangeQuery): string {
  const sorted = (s: ReadonlySet<string> | undefined) => (s === undefined ? null : [...s].sort())
  const meta = q.metadata === undefined ? null : Object.keys(q.metadata).sort().map((k) => [k, (q.metadata as Record<string, string>)[k]])
  const canon = JSON.stringify([
    q.project ?? 'default',
    // ±Infinity as strings (JSON has none).
    String(q.start),
    String(q.end),
    sorted(q.models),
    sorted(q.providers),
    q.status ?? null,
    q.user_id ?? null,
    q.session_id ?? null,
    q.tag ?? null,
    meta
  ])
  return createHash('sha256').update(canon).digest('base64url').slice(0, 22)
}

/**
 * The cursor continuing after `after` on the page of `q` in `sort`; `priceEpoch` (see
 * {@link priceEpoch}) is kept for `sort=cost`.
 */
export function encodeCursor(q: RangeQuery, sort: SearchSort, after: SearchAfter, priceEpoch = 0): string {
  const body: CursorBody = { v: 1, sort, key: after.key, seq: after.seq, f: queryHash(q) }
  if (sort === 'cost' && priceEpoch > 0) body.pe = priceEpoch
  return Buffer.from(JSON.stringify(body)).toString('base64url')
}

/** What the re-pricing check reads of the price book: a project's re-pricings, in the order they were made. */
export interface RepricedRanges {
  reprices(project: string): ReadonlyArray<{ start: number; end: number }>
}

/** The project's re-pricing count now: a `sort=cost` cursor's `pe`. */
export function priceEpoch(book: RepricedRanges, q: RangeQuery): number {
  return book.reprices(q.project ?? 'default').length
}

/** The check of a `sort=cost` cursor: 409 when a re-pricing made since its page covers part of `q`'s range. */
export function repricedCheck(book: RepricedRanges, q: RangeQuery): CursorCheck {
  return {
    cost: (_after, epoch) => {
      const rs = book.reprices(q.project ?? 'default')
      for (let i = epoch; i < rs.length; i++) {
        if (rs[i].start < q.end && rs[i].end > q.start) {
          throw llmsError('LLMS_ERR_CONFLICT', 'the cursor is outdated: its range was re-priced since its first page (costs changed order); start again without a cursor', {
            details: [{ path: '(query) cursor', message: 'was made before a re-pricing of its range' }]
          })
        }
      }
    }
  }
}

const bad = (message: string) => llmsError('LLMS_ERR_BAD_QUERY', `invalid query: (query) cursor: ${message}`, { details: [{ path: '(query) cursor', message }] })

/** Optional checks a cursor must pass besides its filters (issue 14: re-priced since the first page → 409). */
export interface CursorCheck {
  /** Called for `sort=cost` cursors with their position and `pe` (0 when absent); throws to refuse. */
  cost?: (after: SearchAfter, priceEpoch: number) => void
}

/**
 * Where the page of `q` in `sort` starts after `cursor`; throws a 400 naming `cursor` when it
 * is malformed or was made for another query or sort.
 */
export function decodeCursor(cursor: string, q: RangeQuery, sort: SearchSort, check: CursorCheck = {}): SearchAfter {
  if (cursor.length === 0 || cursor.length > MAX_CURSOR_LENGTH || !/^[A-Za-z0-9_-]+$/.test(cursor)) throw bad('is not a cursor of this route')
  let body: unknown
  try {
    body = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'))
  } catch {
    throw bad('is not a cursor of this route')
  }
  if (!isBody(body)) throw bad('is not a cursor of this route')
  if (body.sort !== sort) throw bad(`was made for sort=${body.sort}, not sort=${sort}`)
  if (body.f !== queryHash(q)) throw bad('was made for other filters, another time range or another project')
  const after = { key: body.key, seq: body.seq }
  if (sort === 'cost') check.cost?.(after, body.pe ?? 0)
  return after
}

function isBody(x: unknown): x is CursorBody {
  if (x === null || typeof x !== 'object' || Array.isArray(x)) return false
  const b = x as Record<string, unknown>
  return (
    b.v === 1 &&
    typeof b.sort === 'string' &&
    (SEARCH_SORTS as readonly string[]).includes(b.sort) &&
    typeof b.key === 'number' &&
    Number.isSafeInteger(b.key) &&
    typeof b.seq === 'number' &&
    Number.isSafeInteger(b.seq) &&
    b.seq >= 0 &&
    typeof b.f === 'string' &&
    (b.pe === undefined || (typeof b.pe === 'number' && Number.isSafeInteger(b.pe) && b.pe >= 0))
  )
}
