#!/usr/bin/env node
/**
 * Entry point: config → app → listen → recover → serve; SIGTERM/SIGINT → stop accepting,
 * drain the pipeline, write a final snapshot, exit 0.
 */
import { loadConfig, ConfigError } from './config.js'
import { buildApp, type Built } from './app.js'

async function main(): Promise<void> {
  let config
  try {
    config = loadConfig(process.env, process.argv.slice(2))
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`llmscope: ${err.message}\n`)
      process.exit(1)
    }
    throw err
  }

  let built: Built | undefined
  try {
    built = await buildApp(config, {
      onProgress: (done, total) => {
        // Progress every ~10% of a long restore.
        const step = Math.max(1, Math.floor(total / 10))
        if (total >= 10_000 && (done % step < 8192 || done === total)) built?.app.log.info({ done, total }, 'replaying event log')
      }
    })
  } catch (err) {
    process.stderr.write(`llmscope: cannot start: ${(err as Error).message}\n`)
    process.exit(1)
  }
  const { app, engine, createdKey } = built!

  if (createdKey !== null) {
    // Printed once, on the start that made it; it is also kept in the data dir.
    process.stdout.write(`\nLLMScope made an admin API key (kept in ${config.dataDir}/api-key):\n\n    ${createdKey}\n\nSend it as the X-API-Key header.\n\n`)
  }

  let stopping = false
  const stop = (signal: string) => {
    if (stopping) return
    stopping = true
    app.log.info({ signal }, 'shutting down: draining and writing a final snapshot')
    app.close().then(
      () => process.exit(0),
      (err: unknown) => {
        app.log.error({ err }, 'shutdown failed')
        process.exit(1)
      }
    )
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))

  try {
    await app.listen({ port: config.port, host: config.host })
  } catch (err) {
    process.stderr.write(`llmscope: cannot listen on ${config.host}:${config.port}: ${(err as Error).message}\n`)
    await engine.close().catch(() => {})
    process.exit(1)
  }
  // Listening first: /health answers and /ready says 503 while the log tail replays.
  const info = await engine.recover()
  engine.startSnapshots()
  app.log.info(info, 'ready')
}

main().catch((err: unknown) => {
  process.stderr.write(`llmscope: fatal: ${(err as Error).stack ?? String(err)}\n`)
  process.exit(1)
})
