import t from 'tap'
import { Actor } from '../../src/actors/actor.js'
import { ActorSystem } from '../../src/actors/system.js'

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

type Ball = { type: 'ball'; hits: number }

/** Passes the ball to its peer until `hits` runs out; async so work crosses ticks. */
class Player extends Actor<Ball> {
  peer?: Player
  received = 0
  protected async receive(msg: Ball): Promise<void> {
    this.received++
    await sleep(1)
    if (msg.hits > 0) this.peer?.send({ type: 'ball', hits: msg.hits - 1 })
  }
}

/** Records when it starts and finishes closing, and each message it handles. */
class Closer extends Actor<{ type: 'work' }> {
  constructor(
    name: string,
    readonly events: string[]
  ) {
    super(name)
  }
  protected async receive(): Promise<void> {
    await sleep(1)
    this.events.push(`${this.name} handled`)
  }
  override async close(): Promise<void> {
    this.events.push(`${this.name} closing`)
    await super.close()
    this.events.push(`${this.name} closed`)
  }
}

/** Messages queued across every registered actor, as /metrics and admission see them. */
const queued = (system: ActorSystem) => system.stats().reduce((n, s) => n + s.depth, 0)

t.test('register returns the actor; list() and stats() show every one in registration order', async (t) => {
  const system = new ActorSystem()
  const a = system.register(new Player('a'))
  const b = system.register(new Player('b'))
  t.same(system.list(), [a, b])
  t.same(
    system.stats().map((s) => s.name),
    ['a', 'b']
  )
  system.list().pop()
  t.equal(system.list().length, 2, 'list() is a copy')
})

t.test('registering a duplicate name throws a clear error', async (t) => {
  const system = new ActorSystem()
  const first = system.register(new Player('router'))
  t.throws(() => system.register(new Player('router')), { message: 'actor "router" is already registered' })
  t.same(system.list(), [first], 'the first one is kept')
})

t.test('stats() and deepest() cover every actor', async (t) => {
  const system = new ActorSystem()
  const a = system.register(new Player('a'))
  const b = system.register(new Player('b'))
  a.send({ type: 'ball', hits: 0 })
  a.send({ type: 'ball', hits: 0 })
  b.send({ type: 'ball', hits: 0 })
  t.equal(queued(system), 3)
  t.equal(system.deepest(), 2, 'the fullest mailbox')
  t.same(
    system.stats().map((s) => [s.name, s.depth]),
    [
      ['a', 2],
      ['b', 1]
    ]
  )
  await system.idle()
  t.equal(queued(system), 0)
  t.equal(system.deepest(), 0)
  t.same(
    system.stats().map((s) => [s.name, s.processed]),
    [
      ['a', 2],
      ['b', 1]
    ]
  )
})

t.test('idle() waits until actors that forward to each other are all idle at once', async (t) => {
  const system = new ActorSystem()
  const a = system.register(new Player('a'))
  const b = system.register(new Player('b'))
  a.peer = b
  b.peer = a
  a.send({ type: 'ball', hits: 9 }) // 10 messages: a, b, a, b, ...
  await system.idle()
  t.equal(a.received, 5)
  t.equal(b.received, 5)
  t.equal(queued(system), 0)
  t.equal(a.stats.busy || b.stats.busy, false)
})

t.test('idle() on an empty or already idle system resolves', async (t) => {
  await new ActorSystem().idle()
  const system = new ActorSystem()
  system.register(new Player('a'))
  await system.idle()
  t.pass('resolved')
})

t.test('close(order): named actors first, then the rest in reverse registration order, one at a time', async (t) => {
  const events: string[] = []
  const system = new ActorSystem()
  for (const name of ['store', 'aggregator', 'alerts', 'router']) {
    const actor = system.register(new Closer(name, events))
    actor.send({ type: 'work' })
    actor.send({ type: 'work' })
  }
  await system.close(['router', 'store'])
  t.same(
    events.filter((e) => !e.endsWith('handled')),
    [
      'router closing',
      'router closed',
      'store closing',
      'store closed',
      'alerts closing',
      'alerts closed',
      'aggregator closing',
      'aggregator closed'
    ],
    'each actor finished closing before the next one started'
  )
  t.same(
    system.stats().map((s) => s.processed),
    [2, 2, 2, 2],
    'every queued message was handled'
  )
})

t.test('close() without an order closes in reverse registration order', async (t) => {
  const events: string[] = []
  const system = new ActorSystem()
  system.register(new Closer('first', events))
  system.register(new Closer('second', events))
  await system.close()
  t.same(
    events.filter((e) => e.endsWith('closed')),
    ['second closed', 'first closed']
  )
})

t.test('close() twice returns the same promise and closes each actor once', async (t) => {
  const events: string[] = []
  const system = new ActorSystem()
  const only = system.register(new Closer('only', events))
  const first = system.close()
  t.equal(system.close(['only']), first)
  await first
  t.same(events, ['only closing', 'only closed'])
  t.equal(only.closed, true)
})

t.test('close() with an unknown name rejects and closes nothing', async (t) => {
  const events: string[] = []
  const system = new ActorSystem()
  const a = system.register(new Closer('a', events))
  await t.rejects(system.close(['nope']), { message: 'cannot close unknown actor "nope"' })
  t.same(events, [])
  t.equal(a.closed, false)
  await system.close(['a'])
  t.equal(a.closed, true)
})

t.test('register() after close() throws', async (t) => {
  const system = new ActorSystem()
  await system.close()
  t.throws(() => system.register(new Player('late')), {
    message: 'cannot register actor "late": the actor system is closed'
  })
})
