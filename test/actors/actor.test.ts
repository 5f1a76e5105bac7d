import t from 'tap'
import { Actor, assertNever, DEFAULT_MAILBOX_CAPACITY, DRAIN_BUDGET_MESSAGES } from '../../src/actors/actor.js'
import type { ActorOptions } from '../../src/actors/actor.js'
import type { Log } from '../../src/log.js'

type Entry = { level: string; obj: unknown; msg?: string }

function recordingLog(): Log & { entries: Entry[] } {
  const entries: Entry[] = []
  const at = (level: string) => (obj: unknown, msg?: string) => {
    entries.push({ level, obj, msg })
  }
  return { entries, error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug') }
}

const tick = () => new Promise<void>((resolve) => setImmediate(resolve))
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

type Msg = { type: 'add'; n: number } | { type: 'throw' } | { type: 'reject' } | { type: 'wait'; ms: number; n: number }

/** Records what it handled; behaviour chosen by the message. */
class Recorder extends Actor<Msg> {
  seen: number[] = []
  failures: [string, unknown][] = []
  active = 0
  maxActive = 0
  onAdd?: (n: number) => void

  constructor(options?: ActorOptions) {
    super('recorder', options)
  }

  protected receive(msg: Msg): void | Promise<void> {
    switch (msg.type) {
      case 'add':
        this.seen.push(msg.n)
        this.onAdd?.(msg.n)
        return
      case 'throw':
        throw new Error('sync boom')
      case 'reject':
        return Promise.reject(new Error('async boom'))
      case 'wait':
        return this.#wait(msg.ms, msg.n)
      default:
        assertNever(msg)
    }
  }

  async #wait(ms: number, n: number): Promise<void> {
    this.active++
    this.maxActive = Math.max(this.maxActive, this.active)
    await sleep(ms)
    this.seen.push(n)
    this.active--
  }

  protected override onFailure(msg: Msg, err: unknown): void {
    this.failures.push([msg.type, (err as Error).message])
  }
}

t.test('messages are handled in the order they were sent', async (t) => {
  const a = new Recorder()
  for (let n = 0; n < 50; n++) a.send({ type: 'add', n })
  await a.idle()
  t.same(a.seen, Array.from({ length: 50 }, (_, i) => i))
  t.equal(a.stats.processed, 50)
})

t.test('send() never runs receive() synchronously; a burst is handled on the next microtask', async (t) => {
  const a = new Recorder()
  a.send({ type: 'add', n: 1 })
  a.send({ type: 'add', n: 2 })
  t.same(a.seen, [], 'nothing handled inside send()')
  t.equal(a.depth, 2)
  await Promise.resolve()
  t.same(a.seen, [1, 2], 'the whole burst ran in one drain on the first microtask')
})

t.test('a send from inside receive() is queued, not handled re-entrantly', async (t) => {
  const a = new Recorder()
  const order: string[] = []
  a.onAdd = (n) => {
    order.push(`start ${n}`)
    if (n === 1) a.send({ type: 'add', n: 2 })
    order.push(`end ${n}`)
  }
  a.send({ type: 'add', n: 1 })
  await a.idle()
  t.same(order, ['start 1', 'end 1', 'start 2', 'end 2'])
})

t.test('async receive(): one message at a time, in order, no overlap', async (t) => {
  const a = new Recorder()
  a.send({ type: 'wait', ms: 15, n: 1 })
  a.send({ type: 'wait', ms: 1, n: 2 })
  a.send({ type: 'wait', ms: 5, n: 3 })
  await a.idle()
  t.same(a.seen, [1, 2, 3], 'a short later message did not overtake a long earlier one')
  t.equal(a.maxActive, 1, 'never two receive() calls in flight')
})

t.test('a sync throw is logged, counted and passed to onFailure; the next message still runs', async (t) => {
  const log = recordingLog()
  const a = new Recorder({ log })
  a.send({ type: 'add', n: 1 })
  a.send({ type: 'throw' })
  a.send({ type: 'add', n: 2 })
  await a.idle()
  t.same(a.seen, [1, 2])
  t.equal(a.stats.failed, 1)
  t.equal(a.stats.processed, 2)
  t.same(a.failures, [['throw', 'sync boom']])
  t.equal(log.entries.length, 1)
  const entry = log.entries[0] as Entry
  t.equal(entry.level, 'error')
  t.equal(entry.msg, 'actor message failed')
  t.match(entry.obj, { actor: 'recorder', type: 'throw', err: { message: 'sync boom' } })
})

t.test('an async rejection is logged, counted and passed to onFailure; the next message still runs', async (t) => {
  const log = recordingLog()
  const a = new Recorder({ log })
  a.send({ type: 'reject' })
  a.send({ type: 'add', n: 7 })
  await a.idle()
  t.same(a.seen, [7])
  t.equal(a.stats.failed, 1)
  t.equal(a.stats.processed, 1)
  t.same(a.failures, [['reject', 'async boom']])
  t.match(log.entries, [{ level: 'error', msg: 'actor message failed', obj: { actor: 'recorder', type: 'reject' } }])
})

t.test('a throwing onFailure hook is logged and does not stop the actor', async (t) => {
  const log = recordingLog()
  class Fragile extends Actor<{ type: 'fail' } | { type: 'ok' }> {
    ok = 0
    protected receive(msg: { type: 'fail' } | { type: 'ok' }): void {
      if (msg.type === 'fail') throw new Error('boom')
      this.ok++
    }
    protected override onFailure(): void {
      throw new Error('hook boom')
    }
  }
  const a = new Fragile('fragile', { log })
  a.send({ type: 'fail' })
  a.send({ type: 'ok' })
  await a.idle()
  t.equal(a.ok, 1)
  t.equal(a.stats.failed, 1)
  t.same(
    log.entries.map((e) => e.msg),
    ['actor message failed', 'actor onFailure hook failed']
  )
  t.match(log.entries[1]?.obj, { actor: 'fragile', type: 'fail', err: { message: 'hook boom' } })
})

t.test('failure without an onFailure hook is still logged and counted (default log is silent)', async (t) => {
  class Plain extends Actor<{ type: 'x' }> {
    protected receive(): void {
      throw new Error('plain')
    }
  }
  const a = new Plain('plain')
  t.equal(a.send({ type: 'x' }), true)
  await a.idle()
  t.equal(a.stats.failed, 1)
})

t.test('send() returns false and counts rejected when the mailbox is full', async (t) => {
  const a = new Recorder({ mailboxCapacity: 2 })
  t.equal(a.send({ type: 'add', n: 1 }), true)
  t.equal(a.send({ type: 'add', n: 2 }), true)
  t.equal(a.send({ type: 'add', n: 3 }), false)
  t.equal(a.stats.rejected, 1)
  await a.idle()
  t.same(a.seen, [1, 2])
  t.equal(a.send({ type: 'add', n: 4 }), true, 'room again once drained')
  await a.idle()
  t.same(a.seen, [1, 2, 4])
})

t.test('send() returns false and counts rejected once the actor is closing or closed', async (t) => {
  const a = new Recorder()
  a.send({ type: 'add', n: 1 })
  const closing = a.close()
  t.equal(a.closed, true)
  t.equal(a.send({ type: 'add', n: 2 }), false, 'refused while closing')
  await closing
  t.equal(a.send({ type: 'add', n: 3 }), false, 'refused once closed')
  t.equal(a.stats.rejected, 2)
  t.same(a.seen, [1])
})

t.test('close() handles everything already queued before resolving', async (t) => {
  const a = new Recorder()
  for (let n = 0; n < 5; n++) a.send({ type: 'wait', ms: 1, n })
  await a.close()
  t.same(a.seen, [0, 1, 2, 3, 4])
  t.equal(a.stats.processed, 5)
  t.equal(a.depth, 0)
})

t.test('close() on an idle actor resolves at once', async (t) => {
  const a = new Recorder()
  await a.close()
  t.equal(a.closed, true)
  t.equal(a.stats.processed, 0)
})

t.test('close() twice returns the same promise', async (t) => {
  const a = new Recorder()
  a.send({ type: 'wait', ms: 2, n: 1 })
  const first = a.close()
  const second = a.close()
  t.equal(first, second)
  await second
  t.same(a.seen, [1])
  t.equal(a.close(), first, 'still the same after it settled')
})

t.test('destroy() drops what is queued, counts it, and waits for the message in flight', async (t) => {
  const a = new Recorder()
  a.send({ type: 'wait', ms: 10, n: 1 })
  a.send({ type: 'add', n: 2 })
  a.send({ type: 'add', n: 3 })
  await Promise.resolve() // the first message is now in flight
  t.equal(a.stats.busy, true)
  const destroyed = a.destroy()
  t.equal(a.depth, 0)
  t.equal(a.stats.rejected, 2)
  t.equal(a.destroy(), destroyed, 'destroy twice: same promise')
  t.equal(a.stats.rejected, 2, 'nothing counted twice')
  await destroyed
  t.same(a.seen, [1], 'in-flight message finished, queued ones never ran')
  t.equal(a.stats.processed, 1)
  t.equal(a.stats.busy, false)
})

t.test('destroy() after close() drops what close() had yet to handle', async (t) => {
  const a = new Recorder()
  a.send({ type: 'wait', ms: 5, n: 1 })
  a.send({ type: 'add', n: 2 })
  await Promise.resolve()
  const closing = a.close()
  t.equal(a.destroy(), closing)
  await closing
  t.same(a.seen, [1])
  t.equal(a.stats.rejected, 1)
})

t.test('idle() resolves only when the mailbox is empty and nothing is in flight', async (t) => {
  const a = new Recorder()
  await a.idle() // idle from the start
  a.send({ type: 'wait', ms: 5, n: 1 })
  a.send({ type: 'wait', ms: 5, n: 2 })
  let resolved = false
  const idle = a.idle().then(() => {
    resolved = true
  })
  await sleep(6)
  t.equal(resolved, false, 'still busy with the second message')
  await idle
  t.same(a.seen, [1, 2])
  t.equal(a.stats.busy, false)
  t.equal(a.depth, 0)
})

t.test('stats report real counter values and the invariant holds', async (t) => {
  const a = new Recorder({ mailboxCapacity: 3 })
  t.same(a.stats, {
    name: 'recorder',
    depth: 0,
    capacity: 3,
    processed: 0,
    failed: 0,
    rejected: 0,
    maxDepth: 0,
    busy: false
  })
  a.send({ type: 'add', n: 1 })
  a.send({ type: 'throw' })
  a.send({ type: 'add', n: 2 })
  a.send({ type: 'add', n: 3 }) // full
  t.same(a.stats, {
    name: 'recorder',
    depth: 3,
    capacity: 3,
    processed: 0,
    failed: 0,
    rejected: 1,
    maxDepth: 3,
    busy: false
  })
  await a.idle()
  const s = a.stats
  t.same(s, {
    name: 'recorder',
    depth: 0,
    capacity: 3,
    processed: 2,
    failed: 1,
    rejected: 1,
    maxDepth: 3,
    busy: false
  })
  t.equal(s.processed + s.failed + s.rejected + s.depth, 4, 'every send accounted for exactly once')
})

t.test('default mailbox capacity', async (t) => {
  t.equal(new Recorder().stats.capacity, DEFAULT_MAILBOX_CAPACITY)
})

t.test('rejects a bad mailboxCapacity with a message naming the option', async (t) => {
  for (const bad of [0, -3, 2.5, Number.NaN]) {
    t.throws(() => new Recorder({ mailboxCapacity: bad }), {
      name: 'RangeError',
      message: `mailboxCapacity must be a positive integer, got ${String(bad)}`
    })
  }
})

t.test('yields to the event loop during a long burst of sync messages', async (t) => {
  const total = 100_000
  const a = new Recorder({ mailboxCapacity: total })
  let processedWhenImmediateRan = -1
  for (let n = 0; n < total; n++) a.send({ type: 'add', n })
  setImmediate(() => {
    processedWhenImmediateRan = a.stats.processed
  })
  await a.idle()
  t.equal(a.stats.processed, total)
  t.ok(processedWhenImmediateRan > 0, `the drain had started (${processedWhenImmediateRan})`)
  t.ok(processedWhenImmediateRan <= DRAIN_BUDGET_MESSAGES, `setImmediate ran after at most one budget (${processedWhenImmediateRan})`)
})

t.test('yields after the time budget when messages are slow', async (t) => {
  class Slow extends Actor<{ type: 'spin' }> {
    protected receive(): void {
      const end = performance.now() + 4
      while (performance.now() < end) {
        // busy-wait: a CPU-heavy synchronous message
      }
    }
  }
  const a = new Slow('slow')
  for (let i = 0; i < 10; i++) a.send({ type: 'spin' })
  let processedWhenImmediateRan = -1
  setImmediate(() => {
    processedWhenImmediateRan = a.stats.processed
  })
  await a.idle()
  t.equal(a.stats.processed, 10)
  t.ok(processedWhenImmediateRan >= 1 && processedWhenImmediateRan < 10, `yielded after ~10 ms (${processedWhenImmediateRan} done)`)
})

t.test('assertNever throws naming the unexpected type (counted as a failure in an actor)', async (t) => {
  t.throws(() => assertNever({ type: 'mystery' } as never), { message: 'unexpected message type: mystery' })
  t.throws(() => assertNever('raw' as never), { message: 'unexpected message type: raw' })
  const log = recordingLog()
  const a = new Recorder({ log })
  a.send({ type: 'mystery' } as unknown as Msg)
  await a.idle()
  t.equal(a.stats.failed, 1)
  t.match(log.entries, [{ obj: { type: 'mystery', err: { message: 'unexpected message type: mystery' } } }])
})

t.test('an actor can be restarted by sending after it went idle', async (t) => {
  const a = new Recorder()
  a.send({ type: 'add', n: 1 })
  await a.idle()
  await tick()
  a.send({ type: 'add', n: 2 })
  await a.idle()
  t.same(a.seen, [1, 2])
})
