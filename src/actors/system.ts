import type { Actor, ActorStats } from './actor.js'

/**
 * Any actor, whatever its message union. (Method parameters are bivariant in
 * TypeScript, so an `Actor<FooMsg>` is assignable to this.)
 */
export type AnyActor = Actor<{ type: string }>

/**
 * Registry of the running actors by unique name (the idea of xstate's `system.ts`):
 * topology registers what it creates; /metrics (stats), the high-water check (deepest) and
 * graceful shutdown (close) go through it instead of holding references everywhere.
 */
export class ActorSystem {
  /** Insertion order is registration order; `close()` relies on it. */
  readonly #actors = new Map<string, AnyActor>()
  #closing: Promise<void> | undefined

  /** Whether close() was called: no actor may be registered any more. */
  get closed(): boolean {
    return this.#closing !== undefined
  }

  /**
   * Add an actor under its `name` and return it (so `const a = system.register(new A())`).
   * @throws Error `actor "<name>" is already registered` on a duplicate name
   * @throws Error `cannot register actor "<name>": the actor system is closed` after `close()`
   */
  register<A extends AnyActor>(actor: A): A {
    if (this.#closing !== undefined) {
      throw new Error(`cannot register actor "${actor.name}": the actor system is closed`)
    }
    if (this.#actors.has(actor.name)) {
      throw new Error(`actor "${actor.name}" is already registered`)
    }
    this.#actors.set(actor.name, actor)
    return actor
  }

  /**
   * Removes an actor (a deleted project's): it leaves the registry at once, so nothing new is
   * routed to it, then its queued messages are dropped. Safe for an actor not registered.
   */
  async retire(actor: AnyActor): Promise<void> {
    if (this.#actors.get(actor.name) === actor) this.#actors.delete(actor.name)
    await actor.destroy()
  }

  /** Every registered actor, in registration order (a copy). */
  list(): AnyActor[] {
    return [...this.#actors.values()]
  }

  /** Stats of every actor, in registration order. */
  stats(): ActorStats[] {
    return this.list().map((actor) => actor.stats)
  }

  /** Messages queued in the fullest mailbox now (admission checks it on every ingest: no allocation). */
  deepest(): number {
    let most = 0
    for (const actor of this.#actors.values()) if (actor.depth > most) most = actor.depth
    return most
  }

  /**
   * Resolves when every actor is idle at the same moment. Waiting for each actor in
   * turn is not enough: while we wait for B, A may forward work to B or B to A. So we
   * wait for all, then check them all synchronously, and go round again if any got
   * new work. (Actors that keep messaging each other forever never become idle.)
   */
  async idle(): Promise<void> {
    for (;;) {
      const actors = this.list()
      if (actors.every(isIdleNow)) return
      await Promise.all(actors.map((actor) => actor.idle()))
    }
  }

  /**
   * Close every actor, one after another, each draining its mailbox before the next
   * starts: first those named in `order` (in that order), then the rest in reverse
   * registration order (so an actor closes before the actors it was wired to feed,
   * when topology registers downstream actors first).
   *
   * Safe to call twice: later calls return the first call's promise. After it is
   * called, `register()` refuses.
   * @throws Error (as a rejection) `cannot close unknown actor "<name>"` when `order`
   *   names an actor that is not registered; nothing is closed then, so a corrected
   *   call can follow.
   */
  close(order: readonly string[] = []): Promise<void> {
    if (this.#closing !== undefined) return this.#closing
    const unknown = order.find((name) => !this.#actors.has(name))
    if (unknown !== undefined) {
      return Promise.reject(new Error(`cannot close unknown actor "${unknown}"`))
    }
    this.#closing = this.#closeAll(order)
    return this.#closing
  }

  async #closeAll(order: readonly string[]): Promise<void> {
    const named = new Set(order)
    const rest = this.list()
      .filter((actor) => !named.has(actor.name))
      .reverse()
    for (const name of named) await (this.#actors.get(name) as AnyActor).close()
    for (const actor of rest) await actor.close()
  }
}

function isIdleNow(actor: AnyActor): boolean {
  return actor.depth === 0 && !actor.stats.busy
}
