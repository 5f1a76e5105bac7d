/**
 * The dashboard: GET / (index.html) and its assets under /assets/, plus uPlot's two files under
 * /assets/vendor/. Public (no `scope`) and open while recovering (`alwaysOpen`): the page holds
 * no data, it asks for an API key and sends it on every API call, so a recovering server still
 * shows the page and its "not ready" state.
 *
 * The assets are plain ES module JS + CSS kept in `src/dashboard/` and served from there, for
 * `dist/` runs and tests alike: this file sits three levels under the package root both as
 * `src/http/routes/dashboard.ts` and as `dist/http/routes/dashboard.js`, so one relative URL
 * finds them. Only a fixed list of files is served (no directory listing, no wildcard).
 * No inline script or style attribute in the HTML, so a strict CSP (`script-src 'self'`) holds.
 */
import { createRequire } from 'node:module'
import { dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import fastifyStatic from '@fastify/static'
import type { FastifyInstance } from 'fastify'

/** `src/dashboard/`, from either `src/http/routes/` or `dist/http/routes/`. */
export const DASHBOARD_DIR = fileURLToPath(new URL('../../../src/dashboard/', import.meta.url))
/** uPlot's `dist/` folder in node_modules. */
export const UPLOT_DIR = dirname(createRequire(import.meta.url).resolve('uplot/dist/uPlot.iife.min.js'))

/** URL path → [file name, root]. */
const FILES: ReadonlyArray<readonly [string, string, string]> = [
  ['/', 'index.html', DASHBOARD_DIR],
  ['/assets/app.js', 'app.js', DASHBOARD_DIR],
  ['/assets/app.css', 'app.css', DASHBOARD_DIR],
  ['/assets/favicon.svg', 'favicon.svg', DASHBOARD_DIR],
  ['/assets/vendor/uPlot.iife.min.js', 'uPlot.iife.min.js', UPLOT_DIR],
  ['/assets/vendor/uPlot.min.css', 'uPlot.min.css', UPLOT_DIR]
]

export async function dashboardRoutes(app: FastifyInstance): Promise<void> {
  // serve: false — only reply.sendFile for the routes below; ETag/Last-Modified revalidation.
  await app.register(fastifyStatic, { root: DASHBOARD_DIR, serve: false, cacheControl: true, maxAge: 0 })
  for (const [url, file, root] of FILES) {
    // hide: not part of the API, so not in /docs.
    app.get(url, { config: { alwaysOpen: true }, schema: { hide: true } }, (_request, reply) => reply.sendFile(file, root))
  }
}
