import t from 'tap'
import { Mailbox } from '../../src/actors/mailbox.js'

t.test('items come out in the order they went in', async (t) => {
  const box = new Mailbox<string>(4)
  t.equal(box.push('a'), true)
  t.equal(box.push('b'), true)
  t.equal(box.push('c'), true)
  t.equal(box.size, 3)
  t.equal(box.shift(), 'a')
  t.equal(box.shift(), 'b')
  t.equal(box.shift(), 'c')
  t.equal(box.shift(), undefined)
  t.equal(box.isEmpty, true)
})

t.test('a full mailbox refuses the push and changes nothing', async (t) => {
  const box = new Mailbox<number>(2)
  box.push(1)
  box.push(2)
  t.equal(box.isFull, true)
  t.equal(box.push(3), false)
  t.equal(box.size, 2)
  t.equal(box.capacity, 2)
  t.equal(box.shift(), 1)
  t.equal(box.shift(), 2)
  t.equal(box.shift(), undefined)
})

t.test('keeps FIFO order across many wraparounds of the ring', async (t) => {
  const box = new Mailbox<number>(3)
  const out: number[] = []
  let next = 0
  // Push two, shift one, over and over: head and tail wrap many times.
  for (let round = 0; round < 10; round++) {
    while (box.push(next)) next++
    out.push(box.shift() as number, box.shift() as number)
  }
  while (!box.isEmpty) out.push(box.shift() as number)
  t.same(out, Array.from({ length: next }, (_, i) => i))
  t.equal(box.size, 0)
})

t.test('wrapped state: fills every slot after head has moved', async (t) => {
  const box = new Mailbox<string>(3)
  box.push('a')
  box.push('b')
  t.equal(box.shift(), 'a')
  t.equal(box.push('c'), true)
  t.equal(box.push('d'), true) // wraps to slot 0
  t.equal(box.push('e'), false)
  t.same([box.shift(), box.shift(), box.shift(), box.shift()], ['b', 'c', 'd', undefined])
})

t.test('clear() empties the mailbox and it keeps working after', async (t) => {
  const box = new Mailbox<number>(3)
  box.push(1)
  box.push(2)
  box.shift()
  box.push(3)
  box.clear()
  t.equal(box.size, 0)
  t.equal(box.isEmpty, true)
  t.equal(box.shift(), undefined)
  t.equal(box.push(4), true)
  t.equal(box.push(5), true)
  t.equal(box.push(6), true)
  t.equal(box.push(7), false)
  t.same([box.shift(), box.shift(), box.shift()], [4, 5, 6])
})

t.test('rejects a capacity that is not a positive integer, naming the option', async (t) => {
  for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    t.throws(() => new Mailbox(bad), {
      name: 'RangeError',
      message: `capacity must be a positive integer, got ${String(bad)}`
    })
  }
  t.equal(new Mailbox(1).capacity, 1)
})
