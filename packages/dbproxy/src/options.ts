/** The options of `createDbProxy`: their zod schema with every default, `defineWrite`, and their parse. */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isLogger, type Logger, parseOptions as parseWithSchema, SILENT_LOGGER } from '@x/core';
import type { SqliteDatabase } from '@x/writecoordinator';
import { z } from 'zod';
import { DbProxyError } from './errors.js';

/**
 * Default `timeouts.defaultMs` (5,000 ms): the deadline of a write, all attempts included, and of a
 * `read`'s wait for `minSeq`.
 */
export const DEFAULT_TIMEOUT_MS = 5_000;
/**
 * Default `timeouts.longMs` (30,000 ms): the deadline of methods declared `long: true`, and how long
 * a `runExclusive` transaction may wait in the queue.
 */
export const DEFAULT_LONG_TIMEOUT_MS = 30_000;
/** Default `retry.initialDelayMs`: the first backoff after a retryable refusal of a write (10 ms). */
export const DEFAULT_RETRY_INITIAL_DELAY_MS = 10;
/** Default `retry.maxDelayMs`: the longest backoff between attempts of one write (250 ms). */
export const DEFAULT_RETRY_MAX_DELAY_MS = 250;
/**
 * Default `heartbeat.intervalMs` (250 ms): how often the primary publishes a heartbeat and its
 * lease is beaten.
 */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 250;
/**
 * Default `heartbeat.timeoutMs` (1,000 ms): a secondary that hears nothing from the primary this
 * long treats it as gone.
 */
export const DEFAULT_HEARTBEAT_TIMEOUT_MS = 1_000;
/**
 * Default `heartbeat.stallTimeoutMs` (5,000 ms): a lock holder whose lease is silent this long is
 * stalled, and a secondary ends it and takes over.
 */
export const DEFAULT_STALL_TIMEOUT_MS = 5_000;
/**
 * Default `electionPollMs` (100 ms): while no primary is known, after the first second, how often
 * a process retries the election lock and re-reads the info file.
 */
export const DEFAULT_ELECTION_POLL_MS = 100;
/** Default `durability`: the primary's writer commits under `synchronous = NORMAL`. */
export const DEFAULT_DURABILITY = 'normal' as const;
/**
 * Default `changesBufferSize` (4,096): commit events the primary keeps for `db.changes` catch-up,
 * and events a `changes()` iterator buffers before they are replaced by a gap event.
 */
export const DEFAULT_CHANGES_BUFFER_SIZE = 4_096;
/** Default `drainTimeoutMs`: how long `close()` lets queued and outstanding writes finish (5,000 ms). */
export const DEFAULT_DRAIN_TIMEOUT_MS = 5_000;
/** Default `readBusyTimeoutMs`: SQLite's `busy_timeout` of the read-only connection (5,000 ms). */
export const DEFAULT_READ_BUSY_TIMEOUT_MS = 5_000;
/**
 * Default `maxInFlight`: writes one process may have outstanding; beyond, `write` waits for a slot (4,096).
 */
export const DEFAULT_MAX_IN_FLIGHT = 4_096;

/**
 * The default runtime directory: `$XDG_RUNTIME_DIR/x-dbproxy`, else `<tmpdir>/x-dbproxy-<uid>`.
 *
 * @example
 * ```ts
 * import { defaultRuntimeDir } from '@x/dbproxy';
 *
 * // Where the election lock and the ipc:// endpoints live unless `runtimeDir` says otherwise.
 * console.log(defaultRuntimeDir()); // e.g. /run/user/1000/x-dbproxy
 * ```
 */
export function defaultRuntimeDir(): string {
  const xdg = process.env['XDG_RUNTIME_DIR'];
  if (xdg !== undefined && xdg !== '') return join(xdg, 'x-dbproxy');
  const uid = typeof process.getuid === 'function' ? process.getuid() : 'user';
  return join(tmpdir(), `x-dbproxy-${uid}`);
}

/** The logger contract and the silent default are `@x/core`'s, shared by every package. */
export { type Logger, SILENT_LOGGER };

/** One named write: its zod params schema and a synchronous handler run by the primary's coordinator. */
export interface WriteMethod<P = unknown> {
  /**
   * Checks a call's params in their JSON form: on the calling process, and again on the primary for
   * a forwarded write.
   */
  params: z.ZodType<P>;
  /**
   * Runs the write on the primary's writer connection, inside the coordinator's batch transaction,
   * with the parsed params. Synchronous; what it returns is the write's `value`.
   */
  handler: (db: SqliteDatabase, params: P) => unknown;
  /** Uses `timeouts.longMs` instead of `timeouts.defaultMs` (unless `timeouts.perMethod` names it). */
  long?: boolean | undefined;
}

/** Any entry of the `writes` registry (what `defineWrite` returns, whatever its params type). */
export interface AnyWriteMethod {
  /** Parses a call's params. */
  params: z.ZodType<unknown>;
  /** Runs the write on the primary's writer connection with the parsed params (see {@link WriteMethod}). */
  handler: (db: SqliteDatabase, params: never) => unknown;
  /** Uses `timeouts.longMs` instead of `timeouts.defaultMs`. */
  long?: boolean | undefined;
}

/**
 * Typed helper so `handler` sees the schema's output type.
 *
 * @example
 * ```ts
 * import { defineWrite } from '@x/dbproxy';
 * import { z } from 'zod';
 *
 * export const addNote = defineWrite({
 *   params: z.object({ id: z.string(), body: z.string().max(10_000) }),
 *   // `p` is typed from the schema: { id: string; body: string }
 *   handler: (db, p) => db.prepare('INSERT INTO notes (id, body) VALUES (?, ?)').run(p.id, p.body).changes,
 * });
 * ```
 */
export function defineWrite<P>(def: WriteMethod<P>): WriteMethod<P> {
  return def;
}

const isWriteMethod = (v: unknown): v is AnyWriteMethod =>
  typeof v === 'object' &&
  v !== null &&
  typeof (v as { handler?: unknown }).handler === 'function' &&
  typeof (v as { params?: { safeParse?: unknown } }).params?.safeParse === 'function';

const positiveInt = z.number().int().positive();
const nonNegativeInt = z.number().int().nonnegative();

/**
 * The zod schema of {@link DbProxyOptions}, holding every default (the `DEFAULT_*` constants).
 * Strict: an unknown key is refused. `createDbProxy` parses its options with it, then checks the
 * rules between fields, and throws DBPROXY_INVALID_OPTIONS with the issues.
 */
export const dbProxyOptionsSchema = z
  .object({
    /** The SQLite file every process shares. Its resolved real path keys the election. */
    databasePath: z.string().min(1),
    /** A directory private to the user (created 0700) for the `ipc://` endpoints and the primary's info file. */
    runtimeDir: z.string().min(1).default(defaultRuntimeDir),
    /** This process's id in request metadata and change events. */
    instanceId: z
      .string()
      .min(1)
      .max(200)
      .default(() => `${process.pid}-${Math.random().toString(36).slice(2, 10)}`),
    /** The named writes; every process passes the same registry. */
    writes: z.record(
      z.string().min(1),
      z.custom<AnyWriteMethod>(isWriteMethod, { message: 'expected { params, handler }' }),
    ),
    /** Runs on the primary's read-write connection after it wins the election and before it publishes. */
    migrate: z.custom<(db: SqliteDatabase) => void>((v) => typeof v === 'function').optional(),
    /** `synchronous` of the primary's writer: NORMAL or FULL. */
    durability: z.enum(['normal', 'full']).default(DEFAULT_DURABILITY),
    timeouts: z
      .object({
        defaultMs: positiveInt.default(DEFAULT_TIMEOUT_MS),
        longMs: positiveInt.default(DEFAULT_LONG_TIMEOUT_MS),
        perMethod: z.record(z.string(), positiveInt).default({}),
      })
      .strict()
      .prefault({}),
    /** Backoff between attempts of one write; attempts stop at the write's deadline. */
    retry: z
      .object({
        initialDelayMs: nonNegativeInt.default(DEFAULT_RETRY_INITIAL_DELAY_MS),
        maxDelayMs: nonNegativeInt.default(DEFAULT_RETRY_MAX_DELAY_MS),
      })
      .strict()
      .prefault({}),
    heartbeat: z
      .object({
        intervalMs: positiveInt.default(DEFAULT_HEARTBEAT_INTERVAL_MS),
        timeoutMs: positiveInt.default(DEFAULT_HEARTBEAT_TIMEOUT_MS),
        /**
         * A primary whose lease (beaten by a worker thread every intervalMs) is silent this long while
         * it holds the election lock is stalled: a secondary ends it and takes over.
         */
        stallTimeoutMs: positiveInt.default(DEFAULT_STALL_TIMEOUT_MS),
      })
      .strict()
      .prefault({}),
    /** How often a secondary without a live primary retries the election lock and re-reads the info file. */
    electionPollMs: positiveInt.default(DEFAULT_ELECTION_POLL_MS),
    /** Writes this process may have outstanding at once; beyond, `write` waits for a slot. */
    maxInFlight: positiveInt.default(DEFAULT_MAX_IN_FLIGHT),
    /** Commit events the primary keeps for `db.changes` catch-up, and per `changes()` iterator buffer. */
    changesBufferSize: positiveInt.default(DEFAULT_CHANGES_BUFFER_SIZE),
    /** How long `close()` lets queued writes finish on a primary. */
    drainTimeoutMs: nonNegativeInt.default(DEFAULT_DRAIN_TIMEOUT_MS),
    /** busy_timeout of the read-only connection. */
    readBusyTimeoutMs: nonNegativeInt.default(DEFAULT_READ_BUSY_TIMEOUT_MS),
    /** Passed to the primary's `@x/writecoordinator`. */
    coordinator: z
      .object({
        queueSize: positiveInt.optional(),
        maxBatchSize: positiveInt.optional(),
        maxBatchDelayMs: nonNegativeInt.optional(),
        maxWaiting: nonNegativeInt.optional(),
        busyTimeoutMs: nonNegativeInt.optional(),
        idempotency: z
          .object({ maxAgeMs: positiveInt.optional(), maxEntries: positiveInt.optional() })
          .strict()
          .optional(),
      })
      .strict()
      .prefault({}),
    logger: z
      .custom<Logger>(isLogger, { message: 'expected a pino-compatible logger' })
      .default(SILENT_LOGGER),
  })
  .strict();

/** What `createDbProxy` takes: `databasePath` and `writes` are required, everything else has a default. */
export type DbProxyOptions = z.input<typeof dbProxyOptionsSchema>;
/** The validated, defaulted, frozen options readable back as `proxy.options`. */
export type ResolvedDbProxyOptions = z.output<typeof dbProxyOptionsSchema>;

/**
 * Validates, applies defaults and freezes (`@x/core` `parseOptions`: everything the parse built is
 * frozen; what the caller handed in by reference, the write definitions, `migrate` and the logger,
 * stays the caller's and is never frozen), then checks the rules between fields.
 */
export function parseOptions(input: unknown): Readonly<ResolvedDbProxyOptions> {
  const o = parseWithSchema(
    dbProxyOptionsSchema,
    input,
    (error) =>
      new DbProxyError('DBPROXY_INVALID_OPTIONS', `invalid dbproxy options: ${error.message}`, {
        details: { issues: error.issues },
        cause: error,
      }),
  );
  if (o.heartbeat.timeoutMs <= o.heartbeat.intervalMs) {
    throw new DbProxyError(
      'DBPROXY_INVALID_OPTIONS',
      'heartbeat.timeoutMs must exceed heartbeat.intervalMs',
      {
        details: { heartbeat: o.heartbeat },
      },
    );
  }
  if (o.heartbeat.stallTimeoutMs <= 2 * o.heartbeat.intervalMs) {
    throw new DbProxyError(
      'DBPROXY_INVALID_OPTIONS',
      'heartbeat.stallTimeoutMs must exceed twice heartbeat.intervalMs',
      { details: { heartbeat: o.heartbeat } },
    );
  }
  for (const m of Object.keys(o.writes)) {
    if (m.startsWith('db.')) {
      throw new DbProxyError('DBPROXY_INVALID_OPTIONS', `write method names may not start with "db.": ${m}`, {
        details: { method: m },
      });
    }
  }
  return o;
}
