/**
 * Every runnable example in README.md is run, in order, against a fresh built server
 * (`node dist/main.js`, a temp data dir, no configured key: the key made on first start, as a
 * newcomer gets it), and every answer the README shows is compared with the real one. So the
 * README cannot drift from the server again.
 *
 * The convention (also written in README.md, "About the examples"):
 * - An example is a ```sh block with a `curl` command in it. Its commands run one after the
 *   other, and the examples run in README order: later ones use what earlier ones made.
 * - Supported commands, a strict subset of sh so the README stays copy-pasteable:
 *   `curl` with `-s`/`-S`, `-X METHOD`, `-H 'Name: value'`, `-d`/`--data`/`--data-binary DATA`
 *   (`@-` reads a `<<'EOF'` heredoc) and one URL on `localhost:3000`;
 *   `NAME=$(curl … | jq -r .path)` and `export NAME=$(cat data/api-key)` set variables, later
 *   used as `$NAME` or `${NAME}`. Anything else in an example block fails the test.
 * - `# 201` (a status, then any prose) ending a curl command is the status it must answer;
 *   without one, 200.
 * - A ```json block right after an example block (blank lines between at most) is the answer
 *   of the block's last curl. In it, `"…"` stands for any value, a string with `…` in it
 *   (`"evt_…"`, `"2026-…Z"`) for any string with those parts around it, a `"…": "…"` member
 *   for any further members of that object, and `"…"` as the last element of an array for any
 *   further elements. Everything else must be equal (numbers exactly; member order is free).
 *   A ```text block instead is compared as text, `…` matching anything.
 * - `<!-- readme-test: skip REASON -->` on the line before a block: not run (say why).
 *   `<!-- readme-test: todo REASON -->`: run, but a failure is reported as a tap todo (for
 *   features still being built; remove the marker once they land).
 *
 * README_TEST_PRINT=1 prints every real answer. README_TEST_WRITE=1 writes the real answers into
 * README.md's answer blocks (keeping the placeholders that still match, laid out as `layout`):
 * for when an answer changes on purpose; review `git diff README.md` before committing.
 */
import t, { type Test } from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startServer, waitReady, type Server } from './helpers/server.js'

const README = fileText(new URL('../README.md', import.meta.url))
const PRINT = process.env.README_TEST_PRINT === '1'
const WRITE = process.env.README_TEST_WRITE === '1'

function fileText(u: URL): string {
  return readFileSync(u, 'utf8')
}

// ---------------------------------------------------------------------------------------------
// Markdown: fenced blocks, their markers, their answers.

interface Block {
  lang: string
  body: string
  /** 1-based line of the opening fence. */
  line: number
  /** The fence's closing line (1-based). */
  end: number
  marker: { kind: 'skip' | 'todo'; reason: string } | null
}

/** Fenced blocks of a Markdown text (fences may be indented, as inside list items). */
export function blocks(md: string): Block[] {
  const lines = md.split('\n')
  const out: Block[] = []
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```(\S*)\s*$/.exec(lines[i])
    if (open === null) continue
    const indent = open[1].length
    let j = i + 1
    while (j < lines.length && !/^\s*```\s*$/.test(lines[j])) j++
    if (j >= lines.length) throw new Error(`README line ${i + 1}: a fence that never closes`)
    let k = i - 1
    while (k >= 0 && lines[k].trim() === '') k--
    const m = k >= 0 ? /^\s*<!--\s*readme-test:\s*(skip|todo)\b\s*(.*?)\s*-->\s*$/.exec(lines[k]) : null
    if (k >= 0 && /readme-test/.test(lines[k]) && m === null) throw new Error(`README line ${k + 1}: a readme-test marker this test does not understand`)
    out.push({
      lang: open[2],
      body: lines.slice(i + 1, j).map((l) => l.slice(Math.min(indent, l.length - l.trimStart().length))).join('\n'),
      line: i + 1,
      end: j + 1,
      marker: m === null ? null : { kind: m[1] as 'skip' | 'todo', reason: m[2] }
    })
    i = j
  }
  return out
}

interface Example {
  block: Block
  commands: Command[]
  /** Why the block cannot be run (reported as that example's failure). */
  error: string | null
  answer: { lang: 'json' | 'text'; body: string; line: number } | null
}

/** The runnable examples: sh blocks with a curl in them, and the answer block after each. */
export function examples(md: string): Example[] {
  const lines = md.split('\n')
  const all = blocks(md)
  const out: Example[] = []
  for (let i = 0; i < all.length; i++) {
    const b = all[i]
    if (b.lang !== 'sh' || !/(^|\$\(|\s)curl\s|\$\(cat data\/api-key\)/m.test(b.body)) continue
    const next = all[i + 1]
    const between = next === undefined ? [] : lines.slice(b.end, next.line - 1)
    const answer = next !== undefined && (next.lang === 'json' || next.lang === 'text') && next.marker === null && between.every((l) => l.trim() === '')
      ? { lang: next.lang as 'json' | 'text', body: next.body, line: next.line }
      : null
    let commands: Command[] = []
    let error: string | null = null
    try {
      if (b.marker?.kind !== 'skip') commands = parseScript(b.body, b.line)
    } catch (err) {
      error = (err as Error).message
    }
    out.push({ block: b, commands, error, answer })
    if (answer !== null) i++
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// sh: the subset the README may use.

type Word = Array<{ text: string; quoted: 'single' | 'double' | 'none' }>

interface Command {
  line: number
  /** The command as written (continuation lines joined), for messages. */
  source: string
  /** `NAME=` before it: the variable it sets (exported or not). */
  assign: string | null
  kind: 'curl' | 'cat-key' | 'value'
  words: Word[]
  /** `| jq -r PATH` after a curl, inside `$( )`. */
  jq: string | null
  stdin: string | null
  status: number
}

/** Splits a block into commands: `\` continues a line, `<<'EOF'` takes lines up to EOF. */
export function parseScript(body: string, firstLine: number): Command[] {
  const lines = body.split('\n')
  const out: Command[] = []
  for (let i = 0; i < lines.length; i++) {
    const line = firstLine + 1 + i
    let text = lines[i]
    if (text.trim() === '' || text.trim().startsWith('#')) continue
    // A quote left open takes the next line as it is; a `\` at the end joins the next line.
    for (;;) {
      const { code, open } = splitComment(text)
      if (i + 1 >= lines.length) break
      if (open) text += '\n' + lines[++i]
      else if (/\\\s*$/.test(code)) text = code.replace(/\\\s*$/, ' ') + lines[++i].trim()
      else break
    }
    const { code, comment, open } = splitComment(text)
    if (open) throw new Error(`README line ${line}: a quote that never closes`)
    let stdin: string | null = null
    let src = code
    const here = /<<\s*'(\w+)'\s*$/.exec(code)
    if (here !== null) {
      const endAt = lines.indexOf(here[1], i + 1)
      if (endAt < 0) throw new Error(`README line ${line}: heredoc ${here[1]} never ends`)
      stdin = lines.slice(i + 1, endAt).join('\n') + '\n'
      i = endAt
      src = code.slice(0, here.index).trimEnd()
    }
    const status = comment === null ? 200 : Number(/^#\s*(\d{3})\b/.exec(comment)?.[1] ?? 200)
    out.push({ ...parseCommand(src, line), stdin, status, source: code.trim() })
  }
  return out
}

/** Cuts a `#` comment that starts a word outside quotes; `open`: a quote is still open at the end. */
function splitComment(text: string): { code: string; comment: string | null; open: boolean } {
  let q: string | null = null
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (q !== null) {
      if (c === q) q = null
      else if (c === '\\' && q === '"') i++
    } else if (c === "'" || c === '"') q = c
    else if (c === '\\') i++
    else if (c === '#' && (i === 0 || /\s/.test(text[i - 1]))) return { code: text.slice(0, i).trimEnd(), comment: text.slice(i), open: false }
  }
  return { code: text, comment: null, open: q !== null }
}

function parseCommand(src: string, line: number): Omit<Command, 'stdin' | 'status' | 'source'> {
  const fail = (why: string): never => {
    throw new Error(`README line ${line}: ${why}: ${src}`)
  }
  let rest = src.trim()
  let assign: string | null = null
  const a = /^(?:export\s+)?([A-Z_][A-Z0-9_]*)=/.exec(rest)
  if (a !== null) {
    assign = a[1]
    rest = rest.slice(a[0].length)
    if (rest === '$(cat data/api-key)') return { line, assign, kind: 'cat-key', words: [], jq: null }
    const sub = /^\$\((curl\s.*)\|\s*jq\s+-r\s+'?(\.[A-Za-z0-9_.[\]-]+)'?\s*\)$/.exec(rest)
    if (sub !== null) return { line, assign, kind: 'curl', words: words(sub[1], fail), jq: sub[2] }
    const w = words(rest, fail)
    if (w.length !== 1) fail('a variable takes one word, $(cat data/api-key) or $(curl … | jq -r .path)')
    return { line, assign, kind: 'value', words: w, jq: null }
  }
  if (!/^curl\s/.test(rest)) fail('only curl and variable assignments run in an example')
  return { line, assign: null, kind: 'curl', words: words(rest, fail), jq: null }
}

/** Shell words with their quoting; an unquoted control character is refused. */
function words(src: string, fail: (why: string) => never): Word[] {
  const out: Word[] = []
  let cur: Word | null = null
  let i = 0
  const push = (text: string, quoted: 'single' | 'double' | 'none') => {
    cur ??= []
    cur.push({ text, quoted })
  }
  while (i < src.length) {
    const c = src[i]
    if (/\s/.test(c)) {
      if (cur !== null) out.push(cur)
      cur = null
      i++
    } else if (c === "'") {
      const j = src.indexOf("'", i + 1)
      if (j < 0) fail('an unclosed single quote')
      push(src.slice(i + 1, j), 'single')
      i = j + 1
    } else if (c === '"') {
      let j = i + 1
      let s = ''
      while (j < src.length && src[j] !== '"') {
        if (src[j] === '\\' && '"\\$`'.includes(src[j + 1])) j++
        else if (src[j] === '`') fail('backquotes are not supported')
        s += src[j++]
      }
      if (j >= src.length) fail('an unclosed double quote')
      push(s, 'double')
      i = j + 1
    } else if ('&;|<>()`'.includes(c)) {
      fail(`an unquoted ${c}`)
    } else {
      let j = i
      while (j < src.length && !/[\s'"&;|<>()`]/.test(src[j])) j++
      push(src.slice(i, j), 'none')
      i = j
    }
  }
  if (cur !== null) out.push(cur)
  return out
}

/** Expands `$NAME` and `${NAME}` outside single quotes; an unset variable fails. */
function expand(word: Word, vars: Map<string, string>, line: number): string {
  return word
    .map((p) =>
      p.quoted === 'single'
        ? p.text
        : p.text.replace(/\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))/g, (_m, a?: string, b?: string) => {
            const name = (a ?? b)!
            const v = vars.get(name)
            if (v === undefined) throw new Error(`README line ${line}: $${name} is not set by any earlier example`)
            return v
          })
    )
    .join('')
}

interface Request {
  method: string
  url: string
  headers: Record<string, string>
  body: string | undefined
}

/** The HTTP request a curl command line makes (the options the README may use). */
export function curlRequest(cmd: Command, vars: Map<string, string>, origin: string): Request {
  const args = cmd.words.slice(1).map((w) => expand(w, vars, cmd.line))
  let method: string | null = null
  let url: string | null = null
  let body: string | undefined
  const headers: Record<string, string> = {}
  for (let i = 0; i < args.length; i++) {
    const a = args[i]
    const value = () => {
      if (i + 1 >= args.length) throw new Error(`README line ${cmd.line}: ${a} needs a value`)
      return args[++i]
    }
    if (a === '-s' || a === '-S' || a === '-sS') continue
    else if (a === '-X') method = value()
    else if (a === '-H') {
      const h = value()
      const colon = h.indexOf(':')
      if (colon < 1) throw new Error(`README line ${cmd.line}: a header without a name: ${h}`)
      headers[h.slice(0, colon).trim().toLowerCase()] = h.slice(colon + 1).trim()
    } else if (a === '-d' || a === '--data' || a === '--data-binary') {
      const d = value()
      if (d === '@-') {
        if (cmd.stdin === null) throw new Error(`README line ${cmd.line}: ${a} @- without a heredoc`)
        // curl strips CR and LF from -d @file data; --data-binary sends it as it is.
        body = a === '--data-binary' ? cmd.stdin : cmd.stdin.replace(/[\r\n]/g, '')
      } else if (d.startsWith('@')) throw new Error(`README line ${cmd.line}: only @- (a heredoc) is supported`)
      else body = d
    } else if (a.startsWith('-')) throw new Error(`README line ${cmd.line}: curl option ${a} is not supported by this test`)
    else if (url !== null) throw new Error(`README line ${cmd.line}: two URLs`)
    else url = a
  }
  if (url === null) throw new Error(`README line ${cmd.line}: no URL`)
  const m = /^(?:http:\/\/)?(?:localhost|127\.0\.0\.1):3000(\/.*)$/.exec(url)
  if (m === null) throw new Error(`README line ${cmd.line}: the URL must be on localhost:3000: ${url}`)
  if (body !== undefined && headers['content-type'] === undefined) headers['content-type'] = 'application/x-www-form-urlencoded'
  return { method: method ?? (body === undefined ? 'GET' : 'POST'), url: origin + m[1], headers, body }
}

// ---------------------------------------------------------------------------------------------
// Answers: the shown JSON with placeholders against the real one.

const ANY = '…'

/** Where `actual` differs from `shown` (empty: they match), as JSON paths with reasons. */
export function differences(actual: unknown, shown: unknown, path = '$'): string[] {
  if (shown === ANY) return []
  if (typeof shown === 'string' && shown.includes(ANY)) {
    if (typeof actual !== 'string') return [`${path}: expected a string like ${JSON.stringify(shown)}, got ${JSON.stringify(actual)}`]
    return glob(shown).test(actual) ? [] : [`${path}: ${JSON.stringify(actual)} is not like ${JSON.stringify(shown)}`]
  }
  if (Array.isArray(shown)) {
    if (!Array.isArray(actual)) return [`${path}: expected an array, got ${JSON.stringify(actual)}`]
    const open = shown.length > 0 && shown[shown.length - 1] === ANY
    const fixed = open ? shown.slice(0, -1) : shown
    if (open ? actual.length < fixed.length : actual.length !== fixed.length) return [`${path}: ${actual.length} elements, shown ${fixed.length}${open ? ' or more' : ''}`]
    return fixed.flatMap((s, i) => differences(actual[i], s, `${path}[${i}]`))
  }
  if (shown !== null && typeof shown === 'object') {
    if (actual === null || typeof actual !== 'object' || Array.isArray(actual)) return [`${path}: expected an object, got ${JSON.stringify(actual)}`]
    const s = shown as Record<string, unknown>
    const a = actual as Record<string, unknown>
    const out: string[] = []
    for (const k of Object.keys(s)) {
      if (k === ANY) continue
      if (!(k in a)) out.push(`${path}.${k}: missing`)
      else out.push(...differences(a[k], s[k], `${path}.${k}`))
    }
    if (!(ANY in s)) for (const k of Object.keys(a)) if (!(k in s)) out.push(`${path}.${k}: not shown (${JSON.stringify(a[k])})`)
    return out
  }
  return Object.is(actual, shown) ? [] : [`${path}: ${JSON.stringify(actual)}, shown ${JSON.stringify(shown)}`]
}

function glob(pattern: string): RegExp {
  return new RegExp('^' + pattern.split(ANY).map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('[\\s\\S]*') + '$')
}

/**
 * JSON text laid out as the README shows answers: compact, members packed on lines of at most
 * 100 columns, continuation lines indented under their bracket.
 */
export function layout(text: string): string {
  try {
    return layoutValue(JSON.parse(text))
  } catch {
    return text
  }
}

function layoutValue(v: unknown): string {
  const WIDTH = 100
  // `col`: the column the value starts at. Returns the text, its later lines already indented.
  const put = (x: unknown, col: number): string => {
    const flat = JSON.stringify(x)
    if (col + flat.length <= WIDTH || x === null || typeof x !== 'object') return flat
    const pad = '\n' + ' '.repeat(col + 1)
    const end = (s: string) => (s.includes('\n') ? s.length - s.lastIndexOf('\n') - 1 : col + s.length)
    if (Array.isArray(x)) return '[' + x.map((e) => put(e, col + 1)).join(',' + pad) + ']'
    let out = '{'
    Object.entries(x).forEach(([k, e], i) => {
      const key = JSON.stringify(k) + ':'
      const member = key + JSON.stringify(e)
      if (i > 0) out += ','
      if (i > 0 && end(out) + member.length + 1 > WIDTH) out += pad
      out += end(out) + member.length + 1 <= WIDTH ? member : key + put(e, end(out) + key.length)
    })
    return out + '}'
  }
  return put(v, 0)
}

/**
 * What to write for a shown answer that no longer matches: the real answer, keeping the shown
 * placeholders wherever they still match (README_TEST_WRITE=1).
 */
export function merge(actual: unknown, shown: unknown): unknown {
  if (differences(actual, shown).length === 0) return shown
  if (Array.isArray(actual)) {
    const s = Array.isArray(shown) ? shown : []
    const open = s.length > 0 && s[s.length - 1] === ANY
    const fixed = open ? s.slice(0, -1) : s
    if (open && actual.length >= fixed.length) return [...fixed.map((e, i) => merge(actual[i], e)), ANY]
    return actual.map((e, i) => (i < fixed.length ? merge(e, fixed[i]) : e))
  }
  if (actual !== null && typeof actual === 'object') {
    const s = shown !== null && typeof shown === 'object' && !Array.isArray(shown) ? (shown as Record<string, unknown>) : {}
    const a = actual as Record<string, unknown>
    const keys = ANY in s ? Object.keys(s).filter((k) => k !== ANY && k in a) : Object.keys(a)
    const out: Record<string, unknown> = {}
    for (const k of keys) out[k] = k in s ? merge(a[k], s[k]) : a[k]
    if (ANY in s) out[ANY] = s[ANY]
    return out
  }
  return actual
}

function jqPath(value: unknown, path: string, line: number): string {
  let v = value
  for (const step of path.match(/\.[A-Za-z0-9_]+|\[-?\d+\]/g) ?? []) {
    v = step.startsWith('[') ? (v as unknown[] | undefined)?.at(Number(step.slice(1, -1))) : (v as Record<string, unknown> | undefined)?.[step.slice(1)]
  }
  if (v === undefined || v === null) throw new Error(`README line ${line}: jq ${path} found nothing`)
  return typeof v === 'string' ? v : JSON.stringify(v)
}

// ---------------------------------------------------------------------------------------------
// The convention, checked on itself (fast, no server).

t.test('the convention: parsing, placeholders, refusals', async (t) => {
  const [c] = parseScript(`curl -s -X POST localhost:3000/x -H "X-API-Key: $K" -H 'content-type: application/json' \\\n  -d '{"a":"$K"}'   # 202 accepted`, 0)
  t.equal(c.status, 202)
  t.same(curlRequest(c, new Map([['K', 'k1']]), 'http://h:1'), { method: 'POST', url: 'http://h:1/x', headers: { 'x-api-key': 'k1', 'content-type': 'application/json' }, body: '{"a":"$K"}' })
  const [h] = parseScript(`curl -s localhost:3000/b -H 'content-type: application/x-ndjson' --data-binary @- <<'EOF'\n{"a":1}\n{"a":2}\nEOF`, 0)
  t.equal(curlRequest(h, new Map(), 'http://h').body, '{"a":1}\n{"a":2}\n')
  t.equal(curlRequest(h, new Map(), 'http://h').method, 'POST')
  const [v] = parseScript(`ID=$(curl -s localhost:3000/r -H "X-API-Key: $K" | jq -r .rules[0].id)`, 0)
  t.equal(v.assign, 'ID')
  t.equal(v.jq, '.rules[0].id')
  t.equal(jqPath({ rules: [{ id: 'rule_1' }] }, '.rules[0].id', 0), 'rule_1')
  t.equal(jqPath({ keys: [{ id: 'a' }, { id: 'b' }] }, '.keys[-1].id', 0), 'b')
  t.throws(() => parseScript('curl -s localhost:3000/a?x=1&y=2', 0), /unquoted &/)
  t.throws(() => parseScript('rm -rf /', 0), /only curl/)
  t.throws(() => curlRequest(parseScript('curl -s http://example.com/', 0)[0], new Map(), 'http://h'), /localhost:3000/)
  t.throws(() => curlRequest(parseScript('curl -k localhost:3000/', 0)[0], new Map(), 'http://h'), /-k is not supported/)
  t.throws(() => curlRequest(parseScript('curl localhost:3000/$NOPE', 0)[0], new Map(), 'http://h'), /\$NOPE is not set/)

  t.same(differences({ id: 'evt_0_abc', n: 1, at: 'x' }, { id: 'evt_0_…', n: 1, at: '…' }), [])
  t.same(differences({ n: 1.5 }, { n: 1.25 }), ['$.n: 1.5, shown 1.25'])
  t.same(differences({ a: 1, b: 2 }, { a: 1 }), ['$.b: not shown (2)'])
  t.same(differences({ a: 1, b: 2 }, { a: 1, '…': '…' }), [])
  t.same(differences({ a: 1 }, { a: 1, b: 2 }), ['$.b: missing'])
  t.same(differences([1, 2, 3], [1, '…']), [])
  t.same(differences([1], [1, 2, '…']), ['$: 1 elements, shown 2 or more'])
  t.same(differences([1, 2], [1]), ['$: 2 elements, shown 1'])
  t.same(differences('2026-12-02T03:00:00.000Z', '2026-…Z'), [])
  t.same(differences(null, 'a…'), ['$: expected a string like "a…", got null'])
  t.same(merge({ id: 'evt_1_x', n: 2, at: 'now' }, { id: 'evt_…', n: 1, at: '…' }), { id: 'evt_…', n: 2, at: '…' })
  t.same(merge({ a: [1, 2, 3], b: 1 }, { a: [0, '…'], '…': '…' }), { a: [1, '…'], '…': '…' })
  t.same(merge({ a: 1, b: 2 }, {}), { a: 1, b: 2 })
  t.equal(layout('{"a":[1,2],"b":{"c":null}}'), '{"a":[1,2],"b":{"c":null}}')
  t.ok(layout(JSON.stringify({ rows: Array.from({ length: 5 }, (_, i) => ({ name: `row number ${i}`, value: i * 1000 })) })).split('\n').every((l) => l.length <= 100), 'lines of at most 100 columns')
})

// ---------------------------------------------------------------------------------------------
// The README, run.

const found = examples(README)

t.test('the README has runnable examples, and every answer block belongs to one', async (t) => {
  t.ok(found.filter((e) => e.commands.length > 0).length >= 20, `${found.length} examples`)
  t.ok(found.filter((e) => e.answer !== null).length >= 15, 'most show their answer')
  for (const e of found) if (e.block.marker?.kind === 'skip') t.ok(e.block.marker.reason.length > 0, `line ${e.block.line}: a skip says why`)
})

t.test('every README example answers what the README shows', async (t) => {
  const dir = t.testdir()
  const dataDir = join(dir, 'data')
  // No configured key: the first start makes one in data/api-key, as for a newcomer.
  const server: Server = await startServer({ LLMSCOPE_DATA_DIR: dataDir })
  t.teardown(async () => {
    if (server.proc.exitCode === null && server.proc.signalCode === null) {
      server.proc.kill('SIGTERM')
      await server.exited
    }
  })
  await waitReady(server.url)
  const vars = new Map<string, string>()
  const rewrites: Array<{ line: number; text: string }> = []

  // A todo example runs like any other (later examples may need what it makes), but its
  // assertions are todo: a failure is reported, not counted.
  const run = async (e: Example, t: Test, extra: { todo?: string }, failed: () => void) => {
    if (e.error !== null) {
      failed()
      t.fail(e.error, extra)
      return
    }
    let last: { status: number; text: string } | null = null
    for (const cmd of e.commands) {
      if (cmd.kind === 'cat-key') {
        vars.set(cmd.assign!, readFileSync(join(dataDir, 'api-key'), 'utf8').trim())
        continue
      }
      if (cmd.kind === 'value') {
        vars.set(cmd.assign!, expand(cmd.words[0], vars, cmd.line))
        continue
      }
      const req = curlRequest(cmd, vars, server.url)
      const res = await fetch(req.url, { method: req.method, headers: req.headers, body: req.body })
      const text = await res.text()
      if (PRINT) t.comment(`line ${cmd.line} → ${res.status}\n${layout(text)}`)
      if (res.status !== cmd.status) failed()
      t.equal(res.status, cmd.status, `line ${cmd.line}: status (${text.slice(0, 300)})`, extra)
      if (cmd.assign !== null) vars.set(cmd.assign, jqPath(JSON.parse(text), cmd.jq!, cmd.line))
      last = { status: res.status, text }
    }
    if (e.answer === null) return
    if (last === null) failed()
    t.ok(last !== null, `line ${e.answer.line}: the block prints the answer shown`, extra)
    if (last === null) return
    if (e.answer.lang === 'text') {
      const same = glob(e.answer.body.trim()).test(last.text.trim())
      if (!same) failed()
      t.ok(same, `line ${e.answer.line}: the text answer\nreal: ${last.text}`, extra)
      return
    }
    let shown: unknown
    try {
      shown = JSON.parse(e.answer.body)
    } catch (err) {
      failed()
      t.fail(`line ${e.answer.line}: the shown answer is not JSON: ${(err as Error).message}`, extra)
      return
    }
    let actual: unknown
    try {
      actual = JSON.parse(last.text)
    } catch {
      failed()
      t.fail(`line ${e.answer.line}: the real answer is not JSON: ${last.text.slice(0, 300)}`, extra)
      return
    }
    const diff = differences(actual, shown)
    if (WRITE) {
      const text = layoutValue(merge(actual, shown))
      if (text !== e.answer.body) rewrites.push({ line: e.answer.line, text })
    }
    if (diff.length > 0) failed()
    t.same(diff, [], `line ${e.answer.line}: the shown answer${diff.length ? `\nreal: ${last.text}` : ''}`, extra)
  }

  for (const e of found) {
    if (e.block.marker?.kind === 'skip') continue
    const first = (e.commands[0]?.source ?? e.block.body.split('\n')[0]).replace(/\s+/g, ' ')
    const name = `line ${e.block.line}: ${first.length > 90 ? first.slice(0, 89) + '…' : first}`
    const todo = e.block.marker?.kind === 'todo' ? e.block.marker.reason || 'todo' : undefined
    await t.test(todo === undefined ? name : `${name} (todo)`, async (t) => {
      const extra = todo === undefined ? {} : { todo }
      let bad = 0
      try {
        await run(e, t, extra, () => bad++)
      } catch (err) {
        bad++
        t.fail(`line ${e.block.line}: ${(err as Error).message}`, extra)
      }
      if (todo !== undefined && bad === 0) t.comment(`line ${e.block.line} passes: remove its readme-test todo marker`)
    })
  }
  if (WRITE && rewrites.length > 0) {
    // Line numbers are those of the README read at the start: refuse to write over edits made since.
    if (fileText(new URL('../README.md', import.meta.url)) !== README) throw new Error('README.md changed during the run: not rewritten; run again')
    const lines = README.split('\n')
    for (const r of rewrites.sort((a, b) => b.line - a.line)) {
      let end = r.line
      while (!/^```\s*$/.test(lines[end])) end++
      lines.splice(r.line, end - r.line, r.text)
    }
    writeFileSync(new URL('../README.md', import.meta.url), lines.join('\n'))
    t.comment(`README_TEST_WRITE: rewrote ${rewrites.length} answers in README.md`)
  }
})
