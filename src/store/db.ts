/**
 * The one LMDB environment in the data dir and its named databases. Writes are
 * asynchronous and group-committed by lmdb-js: every put issued in the same event turn
 * (and while a commit is in flight) shares one transaction, so many concurrent requests
 * cost one commit, never one each.
 */
import { mkdirSync, accessSync, constants } from 'node:fs'
import { open, type RootDatabase, type Database } from 'lmdb'

export interface Stores {
  readonly root: RootDatabase
  /** seq of a batch's first event → that append's events (one put per append). */
  readonly events: Database<EventRecord, number>
  /** snapshot, schema version: binary values written by `snapshots.ts`. */
  readonly meta: Database<Buffer, string>
  /** alert rules by id. */
  readonly rules: Database<unknown, string>
  /** alert events (transitions, reminders, delivery outcomes) by sequence number: `alert-events.ts`. */
  readonly alertEvents: Database<unknown, number>
  close(): Promise<void>
}

/** One append in the log: events at seq = key, key+1, … in order. */
export interface EventRecord {
  v: 1
  ev: unknown[]
}

/** Opens (creating if needed) the data dir's LMDB environment. Throws a clear error if the dir is unusable. */
export function openStores(dataDir: string): Stores {
  try {
    mkdirSync(dataDir, { recursive: true })
    accessSync(dataDir, constants.W_OK | constants.R_OK)
  } catch (err) {
    throw new Error(`data dir ${dataDir} is not usable: ${(err as Error).message}`)
  }
  const root = open({
    path: `${dataDir}/llmscope.lmdb`,
    // A generous map: LMDB grows the file as needed up to this.
    mapSize: 64 * 1024 ** 3,
    maxDbs: 16
  })
  const events = root.openDB<EventRecord, number>('events', { sharedStructuresKey: Symbol.for('structures') })
  const meta = root.openDB<Buffer, string>('meta', { encoding: 'binary' })
  const rules = root.openDB<unknown, string>('rules', {})
  const alertEvents = root.openDB<unknown, number>('alert-events', {})
  let closing: Promise<void> | undefined
  return {
    root,
    events,
    meta,
    rules,
    alertEvents,
    close() {
      closing ??= (async () => {
        await root.flushed
        await root.close()
      })()
      return closing
    }
  }
}
