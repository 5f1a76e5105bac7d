/**
 * A fixed-capacity FIFO over a preallocated array (undici's fixed-queue idea). Pushing into a
 * full ring overwrites the oldest entry and hands it back, so the caller can count the drop.
 *
 *        head (oldest)            tail (next write)
 *          ▼                        ▼
 *   [ . . a b c d e f . . . . . . . ]   size = 6, capacity = 16
 *
 * push and shift are O(1); take(n) copies n entries out.
 */
export class Ring<T> {
  readonly #items: Array<T | undefined>
  #head = 0
  #size = 0

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`capacity must be an integer >= 1, got ${capacity}`)
    this.#items = new Array(capacity)
  }

  get size(): number {
    return this.#size
  }

  get capacity(): number {
    return this.#items.length
  }

  /** Appends; when full, drops the oldest entry and returns it. */
  push(item: T): T | undefined {
    const cap = this.#items.length
    if (this.#size === cap) {
      const dropped = this.#items[this.#head]
      this.#items[this.#head] = item
      this.#head = (this.#head + 1) % cap
      return dropped
    }
    this.#items[(this.#head + this.#size) % cap] = item
    this.#size++
    return undefined
  }

  /** The oldest entry, or undefined. */
  peek(): T | undefined {
    return this.#size === 0 ? undefined : this.#items[this.#head]
  }

  /** Removes and returns up to `n` entries, oldest first. */
  take(n: number): T[] {
    const count = Math.min(n, this.#size)
    const out: T[] = new Array(count)
    const cap = this.#items.length
    for (let i = 0; i < count; i++) {
      out[i] = this.#items[this.#head] as T
      this.#items[this.#head] = undefined
      this.#head = (this.#head + 1) % cap
    }
    this.#size -= count
    return out
  }

  /** Removes everything. */
  clear(): T[] {
    return this.take(this.#size)
  }
}
