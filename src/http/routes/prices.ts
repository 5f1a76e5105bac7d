/**
 * The price book (DESIGN §8): GET /prices (read), PUT /prices (admin), POST /prices/reprice
 * (admin; a dry run unless `dry_run: false`). Every answer is of the request's project only.
 * The service is src/prices.ts.
 */
import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import { parseQuery } from '../query.js'
import { errorSchema, keyedErrors, priceEntrySchema, pricesSchema, repriceSchema, withExamples } from '../openapi.js'
import { parsePricesBody, priceVersionBody, repriceBody } from '../../prices.js'
import type { Engine } from '../../engine.js'

const pricesQuery = z.strictObject({
  model: z.string().min(1).max(256).optional(),
  provider: z.string().min(1).max(256).optional(),
  project: z.string().optional(),
  api_key: z.string().optional()
})

export async function priceRoutes(app: FastifyInstance, opts: { engine: Engine }): Promise<void> {
  const { engine } = opts
  const tags = ['prices']

  app.get('/prices', {
    config: { scope: 'read' },
    schema: {
      summary: 'The price book: effective prices, their versions and sources, models without a price',
      description: 'Entries PUT in this project and the configuration\'s overrides (`source: "override"`), and `genai-prices@VERSION` for the other models seen; `models` lists the model names seen that each entry prices; `unpriced` the models seen with events no price covered.',
      tags,
      querystring: pricesQuery,
      response: { 200: pricesSchema, ...keyedErrors }
    }
  }, async (request) => {
    const q = parseQuery(pricesQuery, request.query)
    return engine.prices.list(request.project, { model: q.model, provider: q.provider })
  })

  app.put('/prices', {
    config: { scope: 'admin' },
    schema: {
      summary: 'Add a price version',
      description: 'Dollars per 1M tokens from `effective_from` (default: now) on. Omitted `cached_input` and `cache_write` equal `input`, `reasoning` equals `output`; a second version at the same instant replaces the first. Events already accepted keep their cost: only POST /prices/reprice changes history.',
      tags,
      body: withExamples(priceVersionBody, [{ provider: 'openai', model: 'gpt-4o', input: 2, output: 8, cached_input: 1, effective_from: '2026-03-01T00:00:00Z' }]),
      response: { 201: priceEntrySchema, ...keyedErrors }
    }
  }, async (request, reply) => {
    const body = parsePricesBody(priceVersionBody, request.body, 'price')
    const entry = await engine.prices.put(request.project, body)
    return reply.code(201).send(entry)
  })

  app.post('/prices/reprice', {
    config: { scope: 'admin' },
    schema: {
      summary: 'Re-price a range of history (dry run by default)',
      description: 'Per (provider, model): the events in `[start_time, end_time)` (of `model`, if given), their cost before and after pricing them with the book as it is now. With `"dry_run": false` it answers once every figure of the range (analytics, events, search, export, budgets, alert windows) shows the new costs; a restart or kill -9 leaves the old or the new, never a mix. Events with a caller-supplied cost keep it. Re-pricings run one at a time: a second waits for the first.',
      tags,
      body: withExamples(repriceBody, [{ start_time: '2026-03-01T00:00:00Z', end_time: '2026-04-01T00:00:00Z', model: 'gpt-4o', dry_run: true }]),
      response: { 200: repriceSchema, ...keyedErrors, 500: errorSchema }
    }
  }, async (request) => {
    const body = parsePricesBody(repriceBody, request.body, 'reprice')
    return engine.prices.reprice(request.project, body)
  })
}
