/**
 * Postings: for each user (or session) of a project, the (series, hour) cells that hold its
 * events, so a filter on one user reads the rows of those cells only instead of every row of
 * the range. A user with 100 calls over 30 days touches ~100 cells of a few hundred rows each,
 * where a scan of the range reads every row of every series.
 *
 * One Uint32 per cell: the series' number in the project (12 bits) and the hour key (20 bits,
 * hours since the epoch: up to the year 2089). A value whose cells do not fit (an event before
 * 1970 or after 2089, or a project with more than 4,096 series) is marked unindexed and its
 * queries scan, exactly as without the index. A cell is appended once per run of events of the
 * same value in the same cell (consecutive duplicates are skipped); queries dedupe the rest.
 *
 * Built lazily, on the first query that filters on the dimension (one pass over the series'
 * rows), then kept up to date as events are routed: projects that never filter pay nothing.
 */
import { HOUR_MS } from './time.js'

const SERIES_BITS = 12
const MAX_SERIES = 1 << SERIES_BITS
const HOUR_BITS = 32 - SERIES_BITS
const MAX_HOUR = 2 ** HOUR_BITS

/** Cells of one value, growable. */
interface List {
  cells: Uint32Array
  n: number
}

export class Postings {
  readonly #lists: (List | undefined)[] = []
  /** Values whose cells could not all be packed: their queries scan. */
  readonly #unindexed = new Set<number>()
  #cells = 0

  /** Records that value `id` (≥ 2: a kept value) has an event of series `series` at `ts`. */
  add(id: number, series: number, ts: number): void {
    if (id < 2 || this.#unindexed.has(id)) return
    const hour = Math.floor(ts / HOUR_MS)
    if (series >= MAX_SERIES || hour < 0 || hour >= MAX_HOUR) {
      this.#unindexed.add(id)
      this.#lists[id] = undefined
      return
    }
    const cell = ((series << HOUR_BITS) | hour) >>> 0
    let list = this.#lists[id]
    if (list === undefined) {
      list = { cells: new Uint32Array(4), n: 0 }
      this.#lists[id] = list
    } else if (list.cells[list.n - 1] === cell) {
      return
    } else if (list.n === list.cells.length) {
      const grown = new Uint32Array(list.n * 2)
      grown.set(list.cells)
      list.cells = grown
    }
    list.cells[list.n++] = cell
    this.#cells++
  }

  /**
   * The distinct (series, hour start) cells of value `id` overlapping [start, end), or null when
   * the value is unindexed (scan instead). Empty for a value with no event.
   */
  cells(id: number, start: number, end: number): Array<{ series: number; hourStart: number }> | null {
    if (this.#unindexed.has(id)) return null
    const list = this.#lists[id]
    if (list === undefined) return []
    const seen = new Set<number>()
    const out: Array<{ series: number; hourStart: number }> = []
    for (let i = 0; i < list.n; i++) {
      const cell = list.cells[i]
      const hourStart = (cell & (MAX_HOUR - 1)) * HOUR_MS
      if (hourStart + HOUR_MS <= start || hourStart >= end || seen.has(cell)) continue
      seen.add(cell)
      out.push({ series: cell >>> HOUR_BITS, hourStart })
    }
    return out
  }

  /** Cells held (a diagnostic: 4 bytes each, plus a small array per value). */
  get size(): number {
    return this.#cells
  }
}
