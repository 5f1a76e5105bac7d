/** Whether a bench row met its goal (pure: tested in test/bench/goals.test.ts). */

/** What goalMet reads of a row. */
export interface Judged {
  value: number
  ratio?: number
  goal?: string
  met?: boolean
}

/**
 * Whether `r` meets its goal, for goals of the plain forms `≤ X`, `< X`, `≥ X`, `> X`, `X`
 * (against `value`) and `ratio ≥ X` (against `ratio`), a trailing remark allowed; an explicit
 * `met` wins. Undefined when the row has no goal or one this cannot read (the row must say).
 */
export function goalMet(r: Judged): boolean | undefined {
  if (r.met !== undefined) return r.met
  if (r.goal === undefined || r.goal.trim() === '') return undefined
  const m = /^\s*(ratio\s+)?(≤|<=|<|≥|>=|>|=)?\s*(-?[\d,]*\.?\d+)(?:\s|$|\()/.exec(r.goal)
  if (m === null) return undefined
  const x = m[1] === undefined ? r.value : r.ratio
  if (x === undefined || !Number.isFinite(x)) return undefined
  const bound = Number(m[3].replace(/,/g, ''))
  switch (m[2]) {
    case '≤': case '<=': return x <= bound
    case '<': return x < bound
    case '≥': case '>=': return x >= bound
    case '>': return x > bound
    default: return x === bound
  }
}

