/**
 * One growing buffer written byte by byte, the base of the writers that build bytes without
 * intermediate strings or objects: the event log's msgpack parts (src/store/msgpack-writer.ts)
 * and an export's NDJSON lines (src/http/export.ts). A writer reserves room before it writes
 * ({@link ByteBuffer.room}: the buffer doubles, keeping what was written), then writes at `pos`.
 */
export class ByteBuffer {
  protected buf: Buffer
  protected pos = 0

  constructor(initialBytes = 64 * 1024) {
    this.buf = Buffer.allocUnsafe(initialBytes)
  }

  /** Bytes written since the last {@link reset}. */
  get length(): number {
    return this.pos
  }

  reset(): void {
    this.pos = 0
  }

  /** A copy of the bytes written since the last {@link reset}. */
  copy(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.pos))
  }

  /** Appends bytes [start, end) of what `from` wrote. */
  append(from: ByteBuffer, start: number, end: number): void {
    this.room(end - start)
    from.buf.copy(this.buf, this.pos, start, end)
    this.pos += end - start
  }

  /** Makes room for `n` more bytes at `pos`. */
  protected room(n: number): void {
    if (this.pos + n <= this.buf.length) return
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n))
    this.buf.copy(next, 0, 0, this.pos)
    this.buf = next
  }

  /** `s` as its character codes, one byte each: only for text known to be ASCII. Room must be made. */
  protected ascii(s: string): void {
    const b = this.buf
    let p = this.pos
    for (let i = 0; i < s.length; i++) b[p++] = s.charCodeAt(i)
    this.pos = p
  }
}
