/**
 * A bounded FIFO queue on a ring buffer (the idea of undici's
 * `lib/dispatcher/fixed-queue.js`, minus its linked list of buffers: a mailbox must
 * refuse work past its capacity instead of growing).
 *
 * ```
 *  capacity = 8, head = 5, size = 5 (the queue has wrapped around)
 *
 *     0     1     2     3     4     5     6     7
 *  +-----+-----+-----+-----+-----+-----+-----+-----+
 *  |  d  |  e  |     |     |     |  a  |  b  |  c  |
 *  +-----+-----+-----+-----+-----+-----+-----+-----+
 *               ^                 ^
 *               tail              head
 *
 *  shift() takes `a` from `head`, clears its slot and moves `head` right.
 *  push()  writes at `tail = (head + size) mod capacity` and grows `size`.
 *  Both indexes wrap to 0 past the last slot.
 * ```
 *
 * Unlike undici we keep an explicit `size`, so every slot is usable (no wasted slot
 * to tell "full" from "empty") and the capacity need not be a power of two.
 *
 * The backing array grows lazily up to `capacity`, so a large but mostly idle
 * mailbox costs memory in proportion to its peak depth, not its capacity.
 * Invariant: while the array is shorter than `capacity` the queue has never wrapped,
 * so `tail === array.length` and a push is a plain append (the array stays packed).
 */
export class Mailbox<T> {
  readonly #capacity: number
  /** Slots; a slot outside `[head, head + size)` (mod capacity) holds `undefined`. */
  #slots: (T | undefined)[] = []
  /** Index of the oldest item. */
  #head = 0
  #size = 0

  /**
   * @param capacity - the most items the mailbox holds; a positive integer.
   * @throws RangeError `capacity must be a positive integer, got <value>`
   */
  constructor(capacity: number) {
    if (!Number.isSafeInteger(capacity) || capacity < 1) {
      throw new RangeError(`capacity must be a positive integer, got ${String(capacity)}`)
    }
    this.#capacity = capacity
  }

  /** The most items the mailbox can hold. */
  get capacity(): number {
    return this.#capacity
  }

  /** How many items are queued. */
  get size(): number {
    return this.#size
  }

  /** True when nothing is queued. */
  get isEmpty(): boolean {
    return this.#size === 0
  }

  /** True when a `push()` would be refused. */
  get isFull(): boolean {
    return this.#size === this.#capacity
  }

  /**
   * Append `item` at the tail.
   * @returns false, changing nothing, when the mailbox is full.
   */
  push(item: T): boolean {
    if (this.#size === this.#capacity) return false
    let tail = this.#head + this.#size
    if (tail >= this.#capacity) tail -= this.#capacity
    if (tail === this.#slots.length) this.#slots.push(item)
    else this.#slots[tail] = item
    this.#size++
    return true
  }

  /** Remove and return the oldest item; `undefined` when empty. */
  shift(): T | undefined {
    if (this.#size === 0) return undefined
    const item = this.#slots[this.#head]
    // Clear the slot so the mailbox does not keep a handled message alive.
    this.#slots[this.#head] = undefined
    this.#head++
    if (this.#head === this.#capacity) this.#head = 0
    this.#size--
    return item
  }

  /** Drop every queued item (and release the backing array). */
  clear(): void {
    this.#slots = []
    this.#head = 0
    this.#size = 0
  }
}
