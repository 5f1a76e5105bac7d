/**
 * `npm run bench`: runs each question in bench/, prints one table with the machine it ran on,
 * and writes bench/results/latest.json. `BENCH_SECONDS` sets each load run's length (default 5).
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import { machine, table, type Row } from './lib.js'
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
console.log(`LLMScope bench — ${m.cpu}, ${m.cores} cores, ${m.memGiB} GiB, node ${m.node}, commit ${m.commit}, ${m.date}`)
const rows: Row[] = []
for (const [name, bench] of Object.entries(benches)) {
  if (only !== undefined && only !== name) continue
  console.log(`running ${name}…`)
  const t0 = performance.now()
  rows.push(...(await bench.run(seconds)))
  console.log(`  ${name}: ${((performance.now() - t0) / 1000).toFixed(0)} s`)
}
console.log(table(rows))
const dir = join(fileURLToPath(new URL('.', import.meta.url)), '../../bench/results')
mkdirSync(dir, { recursive: true })
writeFileSync(join(dir, 'latest.json'), JSON.stringify({ machine: m, seconds, rows }, null, 2))
