/**
 * Where a metadata store (projects, API keys, rules, alert events) writes in cluster mode:
 * JetStream KV, through src/cluster/meta.ts. Without one, a store writes its own LMDB database
 * exactly as on a single node.
 *
 * With a backing, the bucket is the truth and a store's memory follows it: the watcher of the
 * bucket calls the store's `applyRemote` for every change made by any node (this one included),
 * and `loadRemote` once with the whole bucket at start. Every operation below resolves only once
 * this node's store has applied the change (read-your-writes on this node), and rejects with
 * `LLMS_ERR_UNAVAILABLE` when the bucket cannot be reached or the change is not seen in time.
 *
 * Keys are the store's own ids (the backing adds the store's prefix): they must be valid KV key
 * tokens, `[-_=a-zA-Z0-9]` — project slugs, `key_…`, `rule_…` and sequence numbers all are.
 */
export interface MetaBacking {
  /** Writes `value` under `id` (last writer wins). */
  put(id: string, value: unknown): Promise<void>
  /** Removes `id` (a delete marker in the bucket). */
  remove(id: string): Promise<void>
  /**
   * Writes `value` under `id` only if `id` is as this node last saw it — absent or removed, or
   * the very record this node holds (a tombstone a re-created project replaces). Answers false
   * when another write came first; this node then already mirrors that write.
   */
  create(id: string, value: unknown): Promise<boolean>
}
