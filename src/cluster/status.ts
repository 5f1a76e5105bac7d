/**
 * `llmscope cluster status`: asks every live node of the cluster (LLMSCOPE_NATS_URL,
 * LLMSCOPE_CLUSTER_NAME) for what its `/ready` shows and prints one line per node, then the
 * partitions nobody serves. Exit code 0 when every partition has an owner, 2 when some have
 * none or no node answers, 1 when NATS cannot be reached (then one line on stderr).
 */
import { connect } from '@nats-io/transport-node'
import type { ClusterConfig } from '../config.js'
import type { ClusterStatus } from './engine.js'

const decoder = new TextDecoder()

/** Every node's status, gathered for `waitMs` (nodes answer on `${name}.status`). */
export async function gatherStatus(cfg: ClusterConfig, waitMs = 1500): Promise<ClusterStatus[]> {
  const nc = await connect({ servers: [...cfg.servers], name: 'llmscope cluster status', timeout: 5000 })
  try {
    const out: ClusterStatus[] = []
    const it = await nc.requestMany(`${cfg.name}.status`, undefined, { strategy: 'timer', maxWait: waitMs })
    try {
      for await (const m of it) {
        // One garbled answer (another program on the subject) is skipped, not the rest.
        try {
          const st = JSON.parse(decoder.decode(m.data)) as ClusterStatus
          if (typeof st?.node === 'string' && Array.isArray(st.owned)) out.push(st)
        } catch {}
      }
    } catch {
      // No node answered (no responders): an empty list.
    }
    return out.sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0))
  } finally {
    await nc.close()
  }
}

/** The printed report; `unowned` are partitions no answering node serves. */
export function formatStatus(nodes: readonly ClusterStatus[], partitions: number): { text: string; unowned: number[] } {
  const served = new Set<number>()
  for (const n of nodes) for (const p of n.owned) served.add(p)
  const unowned: number[] = []
  for (let p = 0; p < partitions; p++) if (!served.has(p)) unowned.push(p)
  const rows = [['NODE', 'OWNED', 'PARTITIONS', 'LAG', 'RESTORED_FROM', 'ALERTS']]
  for (const n of nodes) rows.push([n.node, String(n.owned.length), n.owned.join(',') || '-', String(n.lag), n.restored_from ?? '-', n.alerts_lease ? 'lease' : '-'])
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)))
  const lines = rows.map((r) => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd())
  lines.push('', `${nodes.length} node(s), ${partitions} partitions, ${unowned.length === 0 ? 'every partition owned' : `unowned: ${unowned.join(',')}`}`)
  return { text: lines.join('\n') + '\n', unowned }
}

/** Prints the report to `write`; a failure (one line) to `writeErr`, stderr unless given. */
export async function clusterStatusCommand(cfg: ClusterConfig, write: (s: string) => void, writeErr: (s: string) => void = (s) => void process.stderr.write(s)): Promise<number> {
  let nodes: ClusterStatus[]
  try {
    nodes = await gatherStatus(cfg)
  } catch (err) {
    writeErr(`llmscope: cannot reach the cluster at ${cfg.servers.join(',')}: ${String((err as Error).message).replace(/\s+/g, ' ')}\n`)
    return 1
  }
  if (nodes.length === 0) {
    writeErr(`llmscope: no node of cluster "${cfg.name}" answered at ${cfg.servers.join(',')} (is LLMSCOPE_CLUSTER_NAME right? are the nodes running?)\n`)
    return 2
  }
  // The stream's partition count, as the nodes know it (LLMSCOPE_PARTITIONS here may differ).
  const partitions = Math.max(...nodes.map((n) => n.partitions))
  const { text, unowned } = formatStatus(nodes, partitions)
  write(text)
  return unowned.length === 0 ? 0 : 2
}
