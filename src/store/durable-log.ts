/**
 * The durable event log behind one interface (DESIGN §9): LMDB on a single node
 * (src/store/event-log.ts, `EventLog`), a JetStream stream in cluster mode
 * (src/cluster/js-log.ts, `JetStreamLog`). Positions mean the same in both: `seq` is the
 * event's place in the log (its id is `evt_<seq base36>_<12 random>`), increasing in log
 * order, never reused, never moved by a purge; `since_seq` and snapshots carry it.
 *
 * The single node calls EventLog's synchronous reads on its hot paths (memory-mapped LMDB);
 * what both modes share goes through this interface.
 */
import type { PendingEvent, StoredEvent } from '../events.js'

/** Events given positions by one append, and the promise of their durability. */
export interface Appended {
  /** The stored events (their `seq` and `id` are final once `committed` resolves). */
  events: StoredEvent[]
  /** Resolves once the events are durable (LMDB commit, JetStream acknowledgement); rejects otherwise. */
  committed: Promise<void>
}

/** Where one partition of the log ends. */
export interface LogPosition {
  partition: number
  /** The last position written in it; one below the log's first position when none (-1 for LMDB, whose positions start at 0; 0 for JetStream). */
  last: number
}

export interface LogReadOptions {
  /** Only this partition's events (cluster mode; the single node has one partition, 0). */
  partition?: number
  /** Only this project's events. */
  project?: string
  /** The last position to read (default: the log's end when the read starts). */
  to?: number
}

export interface DurableLog {
  /** Assigns positions and ids to the events, in call order; many appends in flight share a commit. */
  append(pending: readonly PendingEvent[]): Appended
  /** Every stored event with `from <= seq` (and the options' filters), in seq order, in batches; bounded. */
  read(from: number, opts?: LogReadOptions): AsyncIterable<StoredEvent[]>
  /** The event at `seq`, or undefined (never written, or removed). */
  get(seq: number): StoredEvent | undefined | Promise<StoredEvent | undefined>
  /** The last position written; one below the first position when the log is empty (see LogPosition). */
  lastSeq(): Promise<number>
  /** Where each partition ends. */
  positions(): Promise<LogPosition[]>
}
