/**
 * Projects (README: Projects), owner scope: POST /projects makes one, GET /projects lists them with
 * their event counts, GET /projects/:id reads one, DELETE /projects/:id removes one and every
 * piece of its data.
 *
 * A delete, in this order (each step durable before the next starts):
 *   1. `projects.beginDelete` — the project stops existing: its keys answer 401, owners naming
 *      it 404; a tombstone `{purging: true}` is committed;
 *   2. `apiKeys.deleteProject` — its API keys are removed;
 *   3. `deleteProject` (injected: the engine) — its events, aggregates, rules, alert events… are purged;
 *   4. `projects.finishDelete` — the tombstone says the purge is done.
 * A crash between 1 and 4 leaves the tombstone purging: the next start finishes the purge. A
 * DELETE of a project whose purge is unfinished (a failed or crashed one) runs steps 2–4 again.
 */
import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import { llmsError } from '../../errors.js'
import { zodDetails } from '../../events.js'
import { DEFAULT_PROJECT, projectCreateSchema, type Project, type ProjectStore } from '../../store/projects.js'
import type { ApiKeyStore } from '../../store/api-keys.js'
import { errorSchema, keyedErrors, withExamples } from '../openapi.js'
import type { Clock } from '../../clock.js'

export interface ProjectRouteOptions {
  projects: ProjectStore
  apiKeys: ApiKeyStore
  clock: Clock
  /** Events the project holds (shown as `events`). */
  eventCount: (project: string) => number | Promise<number>
  /** Purges every piece of the project's data; called between `beginDelete` and `finishDelete`. */
  deleteProject: (project: string) => Promise<void>
}

const projectSchema = z
  .object({ id: z.string(), name: z.string(), created_at: z.string(), events: z.number().int() })
  .meta({ description: 'A project', examples: [{ id: 'checkout', name: 'Checkout team', created_at: '2026-01-01T00:00:00.000Z', events: 1200 }] })

const idParams = z.object({ id: z.string() })

export async function projectRoutes(app: FastifyInstance, opts: ProjectRouteOptions): Promise<void> {
  const { projects, apiKeys, clock, eventCount, deleteProject } = opts
  /** Deletes under way, by id: a second DELETE of the same project joins the first. */
  const deleting = new Map<string, Promise<void>>()

  const withEvents = async (p: Project) => ({ ...p, events: await eventCount(p.id) })
  const notFound = (id: string) => llmsError('LLMS_ERR_NOT_FOUND', `project ${id.slice(0, 64)} not found`, { details: [{ path: '(params) id', message: 'no such project' }] })

  // Documentation only (src/http/openapi.ts): the handlers validate.
  const tags = ['projects']
  app.post('/projects', {
    config: { scope: 'owner' },
    schema: {
      summary: 'Make a project',
      tags,
      body: withExamples(projectCreateSchema, [{ id: 'checkout', name: 'Checkout team' }]),
      response: { 201: z.object({ id: z.string(), name: z.string(), created_at: z.string() }).meta({ description: 'The project' }), ...keyedErrors, 409: errorSchema }
    }
  }, async (request, reply) => {
    const r = projectCreateSchema.safeParse(request.body)
    if (!r.success) {
      const details = zodDetails(r.error.issues)
      throw llmsError('LLMS_ERR_VALIDATION', `invalid project: ${details.map((d) => `${d.path}: ${d.message}`).join('; ')}`, { details })
    }
    const project = await projects.create(r.data, clock.now())
    reply.code(201)
    return project
  })

  app.get('/projects', {
    config: { scope: 'owner' },
    schema: { summary: 'List projects with their event counts', tags, response: { 200: z.object({ projects: z.array(projectSchema) }), ...keyedErrors } }
  }, async () => ({ projects: await Promise.all(projects.list().map(withEvents)) }))

  app.get<{ Params: { id: string } }>('/projects/:id', {
    config: { scope: 'owner' },
    schema: { summary: 'Read a project', tags, params: idParams, response: { 200: projectSchema, ...keyedErrors, 404: errorSchema } }
  }, async (request) => {
    const p = projects.get(request.params.id)
    if (p === undefined) throw notFound(request.params.id)
    return withEvents(p)
  })

  app.delete<{ Params: { id: string } }>('/projects/:id', {
    config: { scope: 'owner' },
    schema: {
      summary: 'Delete a project and all its data',
      description: 'Removes its events, aggregates, rules, alert events and keys; nothing of it comes back after a restart. `default` cannot be deleted (409).',
      tags,
      params: idParams,
      response: { 204: z.undefined().meta({ description: 'Deleted' }), ...keyedErrors, 404: errorSchema, 409: errorSchema }
    }
  }, async (request, reply) => {
    const id = request.params.id
    let run = deleting.get(id)
    if (run === undefined) {
      const purge = async () => {
        await apiKeys.deleteProject(id)
        await deleteProject(id)
        await projects.finishDelete(id)
      }
      if (projects.isPurging(id)) run = purge()
      else if (projects.exists(id) || id === DEFAULT_PROJECT) run = projects.beginDelete(id, clock.now()).then(purge)
      else throw notFound(id)
      const settled = run.finally(() => deleting.delete(id))
      deleting.set(id, settled)
      run = settled
    }
    await run
    reply.code(204)
  })
}
