/**
 * The baseline: a bare fastify server that only parses the same bodies (JSON and NDJSON)
 * and answers 202 — no validation, no durability, no pricing. What LLMScope costs on top of
 * HTTP + JSON parsing is the gap between the two.
 */
import Fastify from 'fastify'

const app = Fastify({ logger: false, bodyLimit: 64 * 1024 * 1024, forceCloseConnections: true })
app.addContentTypeParser('application/x-ndjson', { parseAs: 'string' }, (_req, body, done) => {
  try {
    done(null, (body as string).split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l)))
  } catch (err) {
    done(err as Error, undefined)
  }
})
app.post('/events/ingest', async (req, reply) => {
  reply.code(202)
  return { status: 'accepted', event_id: typeof req.body === 'object' ? 'evt_bare' : '' }
})
app.post('/events/batch', async (req, reply) => {
  reply.code(202)
  return { status: 'accepted', accepted: (req.body as unknown[]).length }
})
const address = await app.listen({ port: 0, host: '127.0.0.1' })
process.stdout.write(`LISTENING ${address}\n`)
process.on('SIGTERM', () => app.close().then(() => process.exit(0)))
