/**
 * The connection to NATS and everything cluster mode keeps in JetStream: the event stream, the
 * KV buckets, the snapshot object store (names in names.ts). `connectCluster` connects and
 * ensures them all; several nodes may do it at once (whatever exists already is used as it is).
 *
 * Replicas: `cfg.replicas`, or when 0, min(3, servers in the NATS cluster) — the servers the
 * one we reached announces to clients (its INFO `connect_urls`, itself included).
 */
import { connect, type NatsConnection } from '@nats-io/transport-node'
import {
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager
} from '@nats-io/jetstream'
import { Kvm } from '@nats-io/kv'
import { Objm } from '@nats-io/obj'
import type { ClusterConfig } from '../config.js'
import type { Log } from '../log.js'
import { clusterNames, type ClusterNames } from './names.js'

/** How long a first connection may take before `connectCluster` gives up. */
export const FIRST_CONNECT_TIMEOUT_MS = 30_000
/**
 * The event stream's `Nats-Msg-Id` dedupe window when the config names none: the dedupe window
 * of DESIGN §7 (LLMSCOPE_DEDUPE_WINDOW_HOURS, default 24 h), so an event id accepted by any node
 * is answered as a duplicate by every node within it.
 */
export const DUPLICATE_WINDOW_MS = 24 * 3_600_000

export interface NatsHandles {
  readonly nc: NatsConnection
  readonly js: JetStreamClient
  readonly jsm: JetStreamManager
  readonly kvm: Kvm
  readonly objm: Objm
  readonly names: ClusterNames
  /** Replicas of the stream and buckets made by this node (an existing stream keeps its own). */
  readonly replicas: number
  /** Partitions of the event stream (checked against the meta KV `config`). */
  readonly partitions: number
  /** Drains and closes the connection; safe twice. */
  close(): Promise<void>
}

const ms2ns = (ms: number) => ms * 1_000_000

const isApiError = (err: unknown, code: number): boolean => err instanceof JetStreamApiError && err.code === code

/** True for the error JetStream gives when a stream (or bucket) of that name was made meanwhile. */
const alreadyExists = (err: unknown): boolean => err instanceof Error && /already in use|already exists/i.test(err.message)

/**
 * Connects to `cfg.servers` (a first connection that fails for `firstConnectTimeoutMs`, default
 * 30 s, throws naming the servers), ensures the stream, buckets and object store, and checks the partition count. */
export async function connectCluster(cfg: ClusterConfig, opts: { log: Log; name?: string; firstConnectTimeoutMs?: number }): Promise<NatsHandles> {
  const { log } = opts
  const names = clusterNames(cfg.name)
  const nc = await firstConnect(cfg.servers, opts.name, log, opts.firstConnectTimeoutMs ?? FIRST_CONNECT_TIMEOUT_MS)
  try {
    watchStatus(nc, log)
    const jsm = await jetstreamManager(nc)
    const js = jsm.jetstream()
    const kvm = new Kvm(js)
    const objm = new Objm(js)
    const servers = nc.info?.connect_urls?.length ?? 1
    const replicas = cfg.replicas > 0 ? cfg.replicas : Math.max(1, Math.min(3, servers))
    // A NATS cluster that has just started may refuse placements for a moment ("no suitable
    // peers", "temporarily unavailable"): retry everything but a partition-count mismatch.
    const deadline = Date.now() + (opts.firstConnectTimeoutMs ?? FIRST_CONNECT_TIMEOUT_MS)
    for (let attempt = 0; ; attempt++) {
      try {
        await ensureAll({ jsm, kvm, objm, names }, cfg, replicas, log)
        break
      } catch (err) {
        if (err instanceof PartitionMismatch || Date.now() > deadline) throw err
        if (attempt === 0) log.warn({ err: err instanceof Error ? err.message : String(err) }, 'cluster: JetStream is not ready yet, retrying')
        await new Promise((r) => setTimeout(r, 500))
      }
    }
    log.info({ servers: cfg.servers, natsServers: servers, replicas, partitions: cfg.partitions, stream: names.stream }, 'cluster: connected to NATS JetStream')
    let closed: Promise<void> | null = null
    return {
      nc, js, jsm, kvm, objm, names, replicas,
      partitions: cfg.partitions,
      close: () => (closed ??= nc.drain().catch(() => nc.close()))
    }
  } catch (err) {
    await nc.close().catch(() => {})
    throw err
  }
}

/** Connects (reconnecting forever afterwards), retrying the first connection for up to 30 s. */
async function firstConnect(servers: readonly string[], name: string | undefined, log: Log, timeoutMs: number): Promise<NatsConnection> {
  const deadline = Date.now() + timeoutMs
  let lastErr: unknown
  for (let attempt = 0; Date.now() < deadline; attempt++) {
    try {
      return await connect({
        servers: [...servers],
        name,
        maxReconnectAttempts: -1,
        waitOnFirstConnect: false,
        reconnectTimeWait: 500,
        timeout: Math.max(1000, Math.min(5000, deadline - Date.now()))
      })
    } catch (err) {
      lastErr = err
      if (attempt === 0) log.warn({ servers, err: String(err) }, 'cluster: cannot reach NATS yet, retrying')
      await new Promise((r) => setTimeout(r, Math.min(1000, Math.max(0, deadline - Date.now()))))
    }
  }
  throw new Error(`cannot connect to NATS at ${servers.join(', ')} (LLMSCOPE_NATS_URL) within ${timeoutMs / 1000} s: ${lastErr instanceof Error ? lastErr.message : String(lastErr)}`)
}

/** Logs disconnects and reconnects (the client reconnects by itself, forever). */
function watchStatus(nc: NatsConnection, log: Log): void {
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') log.warn({ server: s.server }, 'cluster: disconnected from NATS, reconnecting')
      else if (s.type === 'reconnect') log.info({ server: s.server }, 'cluster: reconnected to NATS')
    }
  })().catch(() => {})
}

/** A node whose LLMSCOPE_PARTITIONS differs from the stream's: never retried. */
class PartitionMismatch extends Error {}

/** Ensures the stream, buckets and object store, and the meta KV `config` ({ partitions }). */
async function ensureAll(h: { jsm: JetStreamManager; kvm: Kvm; objm: Objm; names: ClusterNames }, cfg: ClusterConfig, replicas: number, log: Log): Promise<void> {
  const { jsm, kvm, objm, names } = h
  await ensureStream(jsm, names, replicas, ms2ns(cfg.dedupeWindowMs ?? DUPLICATE_WINDOW_MS), log)
  await retryExists(() => kvm.create(names.clusterBucket, { history: 1, ttl: cfg.leaseMs, replicas, storage: StorageType.File }))
  const meta = await retryExists(() => kvm.create(names.metaBucket, { history: 1, replicas, storage: StorageType.File }))
  await retryExists(() => kvm.create(names.alertsBucket, { history: 1, replicas, storage: StorageType.File }))
  await retryExists(() => objm.create(names.snapshotBucket, { replicas, storage: StorageType.File }))
  // Delete tombstones (cluster/tombstones.ts); made here too for a stream made by an older version.
  await retryExists(() => kvm.create(names.forgetBucket, { history: 1, replicas, storage: StorageType.File }))
  // The partition count is fixed when the stream is made: every node must agree on it.
  for (let attempt = 0; ; attempt++) {
    const entry = await meta.get('config')
    if (entry !== null && entry.operation === 'PUT') {
      const have = (entry.json() as { partitions?: unknown }).partitions
      if (have !== cfg.partitions) {
        throw new PartitionMismatch(`the event stream ${names.stream} was made with ${String(have)} partitions and LLMSCOPE_PARTITIONS is ${cfg.partitions}: set LLMSCOPE_PARTITIONS=${String(have)} (or use another LLMSCOPE_CLUSTER_NAME)`)
      }
      break
    }
    try {
      await meta.create('config', JSON.stringify({ partitions: cfg.partitions }))
      break
    } catch (err) {
      // Another node created it between our get and create: read theirs (once more at most).
      if (attempt >= 2) throw err
    }
  }
}

async function ensureStream(jsm: JetStreamManager, names: ClusterNames, replicas: number, windowNs: number, log: Log): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      const info = await jsm.streams.info(names.stream)
      if (info.config.num_replicas !== replicas) {
        log.warn({ stream: names.stream, have: info.config.num_replicas, want: replicas }, 'cluster: the event stream exists with another replica count; kept as it is')
      }
      if (info.config.duplicate_window !== windowNs) {
        // The dedupe window is a setting (LLMSCOPE_DEDUPE_WINDOW_HOURS): the last node started with it wins.
        await jsm.streams.update(names.stream, { ...info.config, duplicate_window: windowNs })
        log.info({ stream: names.stream, was: info.config.duplicate_window / 1e6, now: windowNs / 1e6 }, 'cluster: the event stream\'s dedupe window (ms) changed')
      }
      return
    } catch (err) {
      if (!isApiError(err, JetStreamApiCodes.StreamNotFound)) throw err
    }
    try {
      await jsm.streams.add({
        name: names.stream,
        subjects: [names.allEvents],
        storage: StorageType.File,
        retention: RetentionPolicy.Limits,
        discard: DiscardPolicy.Old,
        num_replicas: replicas,
        duplicate_window: windowNs
      })
      log.info({ stream: names.stream, replicas }, 'cluster: made the event stream')
      return
    } catch (err) {
      if (!alreadyExists(err) || attempt >= 2) throw err
    }
  }
}

/** Runs an idempotent create again when another node made the same thing between its check and its add. */
async function retryExists<T>(create: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await create()
    } catch (err) {
      if (!alreadyExists(err) || attempt >= 2) throw err
    }
  }
}
