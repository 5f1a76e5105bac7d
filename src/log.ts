/** The slice of pino's interface the engine needs; fastify's logger satisfies it. */
export interface Log {
  error(obj: unknown, msg?: string): void
  warn(obj: unknown, msg?: string): void
  info(obj: unknown, msg?: string): void
  debug(obj: unknown, msg?: string): void
}

/** A logger that drops everything (tests, benchmarks). */
export const silentLog: Log = {
  error() {},
  warn() {},
  info() {},
  debug() {}
}
