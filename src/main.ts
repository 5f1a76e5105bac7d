#!/usr/bin/env node
/**
 * Entry point: config → app → listen → recover → serve; SIGTERM/SIGINT → stop accepting,
 * drain the pipeline, write a final snapshot, exit 0.
 */
import { loadConfig, ConfigError, cliAction, packageVersion, usage } from './config.js'
import { replayProgress } from './log.js'
import type { Built } from './app.js'

async function main(): Promise<void> {
  const argv = process.argv.slice(2)
  // `llmscope export` / `llmscope import`: events out of and into a running server (README:
  // Export and import). Before --help is looked for: `llmscope export --help` is the command's.
  if (argv[0] === 'export' || argv[0] === 'import') {
    const code = argv[0] === 'export' ? await (await import('./cli/export.js')).exportCommand(argv.slice(1)) : await (await import('./cli/import.js')).importCommand(argv.slice(1))
    // Exit once stdout has taken what was written to it (idle keep-alive sockets must not wait).
    process.stdout.write('', () => process.exit(code))
    return
  }
  // --help and --version answer before anything is validated, opened or imported.
  const action = cliAction(argv)
  if (action !== null) {
    process.stdout.write(action === 'help' ? usage(packageVersion()) : `${packageVersion()}\n`)
    return
  }
  // `llmscope cluster status`: every node's partitions, lag and leases (README: Cluster mode).
  if (argv[0] === 'cluster') {
    if (argv[1] !== 'status') {
      process.stderr.write('llmscope: unknown command: the cluster command is `llmscope cluster status`\n')
      process.exit(1)
    }
    let cfg
    try {
      cfg = loadConfig(process.env, argv.slice(2)).cluster
    } catch (err) {
      if (err instanceof ConfigError) {
        process.stderr.write(`llmscope: ${err.message}\n`)
        process.exit(1)
      }
      throw err
    }
    if (cfg === null) {
      process.stderr.write('llmscope: cluster status needs LLMSCOPE_NATS_URL (the NATS servers of the cluster)\n')
      process.exit(1)
    }
    const { clusterStatusCommand } = await import('./cluster/status.js')
    process.exit(await clusterStatusCommand(cfg, (s) => process.stdout.write(s)))
  }
  let config
  try {
    config = loadConfig(process.env, argv)
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`llmscope: ${err.message}\n`)
      process.exit(1)
    }
    throw err
  }
  // Imported only now: a bad flag or --help answers without loading LMDB, fastify or piscina.
  const { buildApp, loggerOptions } = await import('./app.js')

  let built: Built | undefined
  try {
    // Human-readable logs on a terminal (pino-pretty, in a worker thread), JSON lines otherwise.
    // Redaction happens before the transport, so keys stay out of both.
    const logger = process.stdout.isTTY
      ? { ...(loggerOptions(config.logLevel) as object), transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } } }
      : loggerOptions(config.logLevel)
    built = await buildApp(config, {
      logger,
      // A line every ~10% of a long restore (10,000 events or more).
      onProgress: replayProgress((done, total, percent) => built?.app.log.info({ done, total, percent }, `replaying event log: ${percent}%`))
    })
  } catch (err) {
    process.stderr.write(`llmscope: cannot start: ${(err as Error).message}\n`)
    process.exit(1)
  }
  const { app, engine, createdKey } = built!

  if (createdKey !== null) {
    // Printed once, on the start that made it; it is also kept in the data dir.
    process.stdout.write(`\nLLMScope made an owner API key (kept in ${config.dataDir}/api-key):\n\n    ${createdKey}\n\nSend it as the X-API-Key header.\n\n`)
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
  // A failed LMDB commit (disk full, I/O error) also rejects promises of internal writes that
  // lmdb-js makes itself (e.g. its shared msgpack structures) and nobody can await. The failure
  // already reached the requests that wrote (503 LLMS_ERR_STORAGE): log it and keep serving
  // reads, rather than die and restart into the same full disk. Any other rejection is a bug.
  process.on('unhandledRejection', (reason) => {
    const commit = (reason as { commitError?: Promise<unknown> } | null)?.commitError
    if (commit instanceof Promise) {
      commit.catch(() => {})
      app.log.error({ err: reason }, 'LMDB commit failed (storage full or failing); ingestion answers 503 until it can write')
      return
    }
    process.stderr.write(`llmscope: fatal: unhandled rejection: ${(reason as Error)?.stack ?? String(reason)}\n`)
    process.exit(1)
  })
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
