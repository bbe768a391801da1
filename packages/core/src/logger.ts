/**
 * The logger contract of every `@x` package: the subset of pino's API the packages call, so a pino
 * logger (or a child of one) can be passed as is. Each method takes a fields object first and an
 * optional message, as pino does; parameter values of queries never appear in the fields.
 */
export interface Logger {
  /** Logs `obj` (and `msg`) at level debug. */
  debug(obj: object, msg?: string): void;
  /** Logs `obj` (and `msg`) at level info. */
  info(obj: object, msg?: string): void;
  /** Logs `obj` (and `msg`) at level warn. */
  warn(obj: object, msg?: string): void;
  /** Logs `obj` (and `msg`) at level error. */
  error(obj: object, msg?: string): void;
}

const noop = (): void => {};

/** The default logger of every package: drops everything. Frozen, shared. */
export const SILENT_LOGGER: Logger = Object.freeze({ debug: noop, info: noop, warn: noop, error: noop });

/** What an options schema says when a `logger` option fails `isLogger`. */
export const INVALID_LOGGER_MESSAGE = 'logger must have debug/info/warn/error methods (pino-compatible)';

/**
 * True for an object with the four methods of `Logger` (pino's, or any look-alike).
 *
 * @example
 * ```ts
 * import { isLogger, SILENT_LOGGER } from '@x/core';
 *
 * console.log(isLogger(console), isLogger(SILENT_LOGGER), isLogger({ info() {} })); // true true false
 * ```
 */
export function isLogger(value: unknown): value is Logger {
  return (
    typeof value === 'object' &&
    value !== null &&
    ['debug', 'info', 'warn', 'error'].every(
      (m) => typeof (value as Record<string, unknown>)[m] === 'function',
    )
  );
}
