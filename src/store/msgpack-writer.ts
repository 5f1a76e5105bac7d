/**
 * A msgpack writer for JSON-shaped values (null, booleans, numbers, strings, arrays, plain
 * objects with string keys), appending value after value into one growing buffer: how the
 * event log writes a format-7 record's parts (src/store/event-log.ts), thousands of small
 * values per append. msgpackr's `pack` costs a call's setup and a result buffer per value,
 * which made those parts about 1 µs an event; here a part is a few byte writes. Anything it
 * writes is plain msgpack, read back by msgpackr.
 *
 * Encodings: the shortest integer form for integers of up to 32 bits, float64 for every other
 * number (so -0, fractions and integers past 32 bits read back as the same number), strings
 * as str8/16/32 by an upper bound of their UTF-8 length (fixstr when short), arrays and maps by
 * their element count. `undefined` (absent in JSON) is written as nil.
 */
import { ByteBuffer } from '../byte-buffer.js'

export class MsgpackWriter extends ByteBuffer {
  nil(): void {
    this.room(1)
    this.buf[this.pos++] = 0xc0
  }

  /** The header of an array of `n` elements (write them next). */
  arrayHeader(n: number): void {
    this.#header(n, 0x90, 0xdc, 0xdd)
  }

  /** A container's header: fixarray/fixmap (`fix` | n) below 16 elements, else its 16- or 32-bit form. */
  #header(n: number, fix: number, code16: number, code32: number): void {
    this.room(5)
    const b = this.buf
    if (n < 16) b[this.pos++] = fix | n
    else if (n < 0x10000) {
      b[this.pos] = code16
      b.writeUInt16BE(n, this.pos + 1)
      this.pos += 3
    } else {
      b[this.pos] = code32
      b.writeUInt32BE(n, this.pos + 1)
      this.pos += 5
    }
  }

  string(s: string): void {
    const len = s.length
    // UTF-8 takes at most 3 bytes per UTF-16 unit (a surrogate pair: 4 bytes for 2 units).
    const max = len * 3
    this.room(5 + max)
    const b = this.buf
    const pos = this.pos
    if (len < 32) {
      // Short ASCII, the usual case, byte by byte; anything else through Buffer#write.
      let i = 0
      for (; i < len; i++) {
        const c = s.charCodeAt(i)
        if (c >= 0x80) break
        b[pos + 1 + i] = c
      }
      if (i === len) {
        b[pos] = 0xa0 | len
        this.pos = pos + 1 + len
        return
      }
    }
    if (max < 32) {
      const n = b.write(s, pos + 1, 'utf8')
      b[pos] = 0xa0 | n
      this.pos = pos + 1 + n
    } else if (max < 0x100) {
      const n = b.write(s, pos + 2, 'utf8')
      b[pos] = 0xd9
      b[pos + 1] = n
      this.pos = pos + 2 + n
    } else if (max < 0x10000) {
      const n = b.write(s, pos + 3, 'utf8')
      b[pos] = 0xda
      b.writeUInt16BE(n, pos + 1)
      this.pos = pos + 3 + n
    } else {
      const n = b.write(s, pos + 5, 'utf8')
      b[pos] = 0xdb
      b.writeUInt32BE(n, pos + 1)
      this.pos = pos + 5 + n
    }
  }

  number(v: number): void {
    this.room(9)
    const b = this.buf
    const pos = this.pos
    if (Number.isInteger(v) && !Object.is(v, -0) && v >= -0x80000000 && v <= 0xffffffff) {
      if (v >= 0) {
        if (v < 0x80) {
          b[pos] = v
          this.pos = pos + 1
        } else if (v < 0x100) {
          b[pos] = 0xcc
          b[pos + 1] = v
          this.pos = pos + 2
        } else if (v < 0x10000) {
          b[pos] = 0xcd
          b.writeUInt16BE(v, pos + 1)
          this.pos = pos + 3
        } else {
          b[pos] = 0xce
          b.writeUInt32BE(v, pos + 1)
          this.pos = pos + 5
        }
      } else if (v >= -32) {
        b[pos] = v & 0xff
        this.pos = pos + 1
      } else if (v >= -0x80) {
        b[pos] = 0xd0
        b.writeInt8(v, pos + 1)
        this.pos = pos + 2
      } else if (v >= -0x8000) {
        b[pos] = 0xd1
        b.writeInt16BE(v, pos + 1)
        this.pos = pos + 3
      } else {
        b[pos] = 0xd2
        b.writeInt32BE(v, pos + 1)
        this.pos = pos + 5
      }
      return
    }
    b[pos] = 0xcb
    b.writeDoubleBE(v, pos + 1)
    this.pos = pos + 9
  }

  /** Any JSON value (see the module comment). */
  value(v: unknown): void {
    if (v === null || v === undefined) return this.nil()
    switch (typeof v) {
      case 'string':
        return this.string(v)
      case 'number':
        return this.number(v)
      case 'boolean':
        this.room(1)
        this.buf[this.pos++] = v ? 0xc3 : 0xc2
        return
      case 'object':
        if (Array.isArray(v)) {
          this.arrayHeader(v.length)
          for (let i = 0; i < v.length; i++) this.value(v[i])
          return
        }
        return this.#object(v as Record<string, unknown>)
      default:
        throw new TypeError(`msgpack writer: a ${typeof v} is not a JSON value`)
    }
  }

  #object(o: Record<string, unknown>): void {
    const keys = Object.keys(o)
    this.#header(keys.length, 0x80, 0xde, 0xdf)
    for (const k of keys) {
      this.string(k)
      this.value(o[k])
    }
  }
}
