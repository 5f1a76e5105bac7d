/**
 * Whether two engines' answers to the same analytics question agree: the bench's check that
 * LLMScope, ClickHouse and DuckDB computed the same thing before their times are compared.
 *
 * Counts, tokens and errors must be equal; cost equal to the nano-dollar (ours arrives as
 * dollars in a double, so past 2^53 nano-dollars the last one is rounding); latency
 * percentiles, when asked, within a relative tolerance (ours come from a sketch with 1%
 * relative accuracy, theirs are exact). A search page must list the same event times newest
 * first and the same events, except which of several events sharing the page's last
 * millisecond made it onto the page (engines break that tie differently).
 */

/** The figures of a range or of one group, in the same units for every engine. */
export interface Figures {
  requests: number
  tokens: number
  costNanos: number
  errors?: number
  /** Latency percentiles in ms by name (`p50`, `p95`, `p99`); null for no events. */
  pct?: Record<string, number | null>
}

export interface Answer {
  /** Top groups (`ordered`: the order must match too) or keyed buckets (costs, timeseries: any order). */
  groups: Array<Figures & { key: string }>
  ordered: boolean
  total?: Figures
  /** A search page, newest first: each event's time (epoch ms) and its other fields in one string. */
  page?: Array<{ ts: number; fields: string }>
}

export interface AgreeOptions {
  /** Compare percentiles too (the warm-up, where the peer computed the nearest rank). */
  percentiles: boolean
  /** Relative tolerance of a percentile (default 0.01). */
  tolerance?: number
}

/** Null when `theirs` agrees with `ours`, else the first difference, in words. */
export function differs(ours: Answer, theirs: Answer, opts: AgreeOptions): string | null {
  const tol = opts.tolerance ?? 0.01
  const one = (what: string, a: Figures, b: Figures): string | null => {
    if (a.requests !== b.requests) return `${what}: requests ${a.requests} vs ${b.requests}`
    if (a.requests === 0) return null
    if (a.tokens !== b.tokens) return `${what}: tokens ${a.tokens} vs ${b.tokens}`
    if (Math.abs(a.costNanos - b.costNanos) > Math.abs(b.costNanos) * 2 ** -52) return `${what}: cost ${a.costNanos} vs ${b.costNanos} nano-$`
    if (a.errors !== undefined && b.errors !== undefined && a.errors !== b.errors) return `${what}: errors ${a.errors} vs ${b.errors}`
    if (opts.percentiles && b.pct !== undefined) {
      for (const [name, y] of Object.entries(b.pct)) {
        const x = a.pct?.[name]
        if (x === undefined) continue
        if (x === null || y === null || Math.abs(x - y) > tol * Math.abs(y) + 1e-3) return `${what}: ${name} ${x} vs ${y} ms`
      }
    }
    return null
  }
  if (ours.ordered) {
    if (ours.groups.length !== theirs.groups.length) return `${ours.groups.length} groups vs ${theirs.groups.length}`
    for (let i = 0; i < ours.groups.length; i++) {
      if (ours.groups[i].key !== theirs.groups[i].key) return `group ${i + 1}: ${ours.groups[i].key} vs ${theirs.groups[i].key}`
      const d = one(ours.groups[i].key, ours.groups[i], theirs.groups[i])
      if (d !== null) return d
    }
  } else {
    // Keyed: groups without events are left out on both sides (ours fills empty buckets).
    const mine = new Map(ours.groups.filter((g) => g.requests > 0).map((g) => [g.key, g]))
    const other = theirs.groups.filter((g) => g.requests > 0)
    if (mine.size !== other.length) return `${mine.size} non-empty groups vs ${other.length}`
    for (const g of other) {
      const m = mine.get(g.key)
      if (m === undefined) return `group ${g.key}: missing vs ${g.requests} requests`
      const d = one(g.key, m, g)
      if (d !== null) return d
    }
  }
  if (ours.total !== undefined && theirs.total !== undefined) {
    const d = one('total', ours.total, theirs.total)
    if (d !== null) return d
  }
  const a = ours.page
  const b = theirs.page
  if (a !== undefined || b !== undefined) {
    if (a === undefined || b === undefined) return `page on one side only`
    if (a.length !== b.length) return `page of ${a.length} events vs ${b.length}`
    for (let i = 0; i < a.length; i++) {
      if (a[i].ts !== b[i].ts) return `page event ${i + 1}: time ${a[i].ts} vs ${b[i].ts}`
      if (i > 0 && a[i].ts > a[i - 1].ts) return `page event ${i + 1}: not newest first`
    }
    // Every event newer than the page's last millisecond is on both pages, ties in any order.
    const last = a.length === 0 ? 0 : a[a.length - 1].ts
    const bag = (p: typeof a) => p.filter((e) => e.ts > last).map((e) => `${e.ts}|${e.fields}`).sort()
    const x = bag(a)
    const y = bag(b)
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return `page: event ${x[i]} vs ${y[i]}`
  }
  return null
}

/** How many answers of one kind agreed with ours, and the first that did not. */
export class Verdict {
  checked = 0
  agreed = 0
  first: string | null = null

  judge(where: string, ours: Answer, theirs: Answer, opts: AgreeOptions): void {
    const d = differs(ours, theirs, opts)
    this.checked++
    if (d === null) this.agreed++
    else this.first ??= `${where}: ${d}`
  }

  get ok(): boolean {
    return this.agreed === this.checked
  }

  toString(): string {
    return this.ok ? `answers agree ${this.agreed}/${this.checked}` : `DISAGREE ${this.checked - this.agreed}/${this.checked}, first: ${this.first}`
  }
}
