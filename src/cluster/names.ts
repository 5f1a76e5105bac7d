/**
 * Every stream, bucket and subject name of cluster mode (CLUSTER.md "Names"), made from one prefix
 * (`config.cluster.name`, default `llmscope`) so several clusters may share one NATS.
 *
 * Project ids are slugs `[a-z0-9][a-z0-9-]*`, so they are valid subject tokens as they are.
 */

/** The names of one cluster. */
export interface ClusterNames {
  /** The cluster prefix these names were made from. */
  readonly name: string
  /** The event stream: `${name}-events`. */
  readonly stream: string
  /** Subject of one event: `${name}.ev.<partition>.<project>`. */
  subject(partition: number, project: string): string
  /** Every event of one partition: `${name}.ev.<partition>.>`. */
  partitionSubject(partition: number): string
  /** Every event: `${name}.ev.>` (the stream's subjects). */
  readonly allEvents: string
  /** KV bucket of heartbeats and leases (history 1, TTL = lease): `${name}-cluster`. */
  readonly clusterBucket: string
  /** KV bucket of `config` and the stores' records (no TTL): `${name}-meta`. */
  readonly metaBucket: string
  /** KV bucket of alert event records (no TTL): `${name}-alerts`. */
  readonly alertsBucket: string
  /** Object store of partition snapshots (object `p<N>`): `${name}-snapshots`. */
  readonly snapshotBucket: string
  /** KV bucket of delete tombstones (DELETE /events: seqs per partition, no TTL): `${name}-forget`. */
  readonly forgetBucket: string
  /** Told after a delete completed: every node drops its local copies of partitions it does not own. */
  readonly forgetDone: string
  /** Query subject of partition N (request-reply, its owner subscribes): `${name}.q.<N>`. */
  query(partition: number): string
  /** Alert frames of one project: `${name}.alert.<project>`. */
  alertSubject(project: string): string
  /** Every alert frame: `${name}.alert.>`. */
  readonly allAlerts: string
}

/** The names of the cluster called `name`. */
export function clusterNames(name: string): ClusterNames {
  return Object.freeze({
    name,
    stream: `${name}-events`,
    subject: (partition: number, project: string) => `${name}.ev.${partition}.${project}`,
    partitionSubject: (partition: number) => `${name}.ev.${partition}.>`,
    allEvents: `${name}.ev.>`,
    clusterBucket: `${name}-cluster`,
    metaBucket: `${name}-meta`,
    alertsBucket: `${name}-alerts`,
    snapshotBucket: `${name}-snapshots`,
    forgetBucket: `${name}-forget`,
    forgetDone: `${name}.forget.done`,
    query: (partition: number) => `${name}.q.${partition}`,
    alertSubject: (project: string) => `${name}.alert.${project}`,
    allAlerts: `${name}.alert.>`
  })
}

const encoder = new TextEncoder()

/**
 * The partition of a (project, model) pair: FNV-1a 32-bit over the UTF-8 bytes of
 * `project + '\u0000' + model`, unsigned, modulo `partitions`. Stable across nodes and versions:
 * changing it would move series between partitions of an existing stream.
 */
export function partitionOf(project: string, model: string, partitions: number): number {
  const bytes = encoder.encode(project + '\u0000' + model)
  let h = 0x811c9dc5
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i]!
    h = Math.imul(h, 0x01000193)
  }
  return (h >>> 0) % partitions
}
