/**
 * `npm run bench`: runs each question in bench/, prints one table with the machine it ran on
 * and its load average (at the start, and at the start and end of each question), and writes
 * bench/results/latest.json. `BENCH_SECONDS` sets each load run's length (default 4);
 * `LLMSCOPE_BENCH_EVENTS` the event count of the questions that load a data set (analytics,
 * dimensions; each has its own variable too).
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import { load1, machine, machineLine, table, type Row } from './lib.js'
import * as ingest from './ingest.js'
import * as ws from './ws.js'
import * as analytics from './analytics.js'
import * as restart from './restart.js'
import * as cost from './cost.js'
import * as dimensions from './dimensions.js'
import * as search from './search.js'
import * as cluster from './cluster.js'
import * as money from './money.js'

const seconds = Number(process.env.BENCH_SECONDS ?? 4)
const only = process.argv[2]
// One question per file; `npm run bench <name>` runs one. The soak (bench/soak.ts) runs apart.
const benches: Record<string, { run(seconds: number): Promise<Row[]> }> = { ingest, ws, cost, analytics, restart, dimensions, search, cluster, money }

const m = machine()
console.log(`LLMScope bench — ${machineLine(m)}`)
if (only !== undefined && !(only in benches)) {
  console.error(`no question ${only}; one of: ${Object.keys(benches).join(', ')}`)
  process.exit(2)
}
const rows: Row[] = []
for (const [name, bench] of Object.entries(benches)) {
  if (only !== undefined && only !== name) continue
  const l0 = load1()
  console.log(`running ${name}… (load average ${l0})`)
  const t0 = performance.now()
  rows.push(...(await bench.run(seconds)))
  const s = (performance.now() - t0) / 1000
  console.log(`  ${name}: ${s.toFixed(0)} s, load average ${l0} → ${load1()}`)
  rows.push({ bench: name, metric: 'question: wall time; machine load average (1 min) start → end', value: s, unit: 's', note: `load ${l0} → ${load1()}` })
}
console.log(`LLMScope bench ended ${new Date().toISOString()}, load average ${machine().load.join(' ')}`)
console.log(table(rows))
const dir = join(fileURLToPath(new URL('.', import.meta.url)), '../../bench/results')
mkdirSync(dir, { recursive: true })
writeFileSync(join(dir, 'latest.json'), JSON.stringify({ machine: m, seconds, rows }, null, 2))
