/**
 * The pipelined snapshot create (issue #19 point 1, opt-in by `limits.snapshotPipelineMinRows`):
 * the session is answered once its exact counts are known, and its blocks are written in the
 * background from the create's exported MVCC snapshot while the client pages.
 */
import { AsyncResource } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import type { SnapshotSession } from '../../shared/wire.js';
import type { Actor } from '../actor.js';
import type { SyncQuerier } from '../database.js';
import { SyncServerError, wireError } from '../errors.js';
import { RFC3339_SQL } from './connect.js';
import type { OpOptions, ServiceContext } from './context.js';
import { quoteIdent, quoteLiteral } from './db.js';
import { type CatalogColumn, payloadTextSql } from './payload-sql.js';
import { KEY_KIND_UUID } from './schema-sql.js';
import {
  asMismatch,
  insertTableBlocks,
  keyBytesSql,
  keyJsonSql,
  lockAndReadColumns,
  rowWirePrefix,
  rowWireSql,
  sessionAnswer,
} from './snapshot-blocks.js';
import { BUILD_LOCK_CLASS, SNAPSHOT_BLOCK_ROWS } from './snapshot-sql.js';
import { requireInitializedScopeReadOnly } from './state.js';
import { SCOPE_COLUMN, type TableInfo } from './topology.js';

/** The background task name of a snapshot session build (ServiceContext.background). */
export const BUILD_TASK = 'snapshot.build';

/** Background builds one process runs at once; a create beyond them writes its session before answering. */
export const MAX_BUILDS_PER_PROCESS = 2;

/** The second key of the advisory lock (BUILD_LOCK_CLASS, key) a build of `snapshotId` holds: 31 bits of the id. */
function buildLockKey(snapshotId: string): number {
  return Number.parseInt(snapshotId.slice(0, 8), 16) & 0x7fffffff;
}

interface TablePlan {
  readonly info: TableInfo;
  readonly columns: readonly CatalogColumn[];
  readonly rows: number;
}

/**
 * A pipelined create. Its transaction (REPEATABLE READ: the snapshot every block comes from) reads
 * the scope's state and the tables' columns, exports its snapshot (pg_export_snapshot), takes the
 * build's advisory lock, and counts each table's rows and payload bytes in that snapshot (no sort,
 * no join, no write: a fraction of the materialisation), checking them against the live row_state
 * entries. A short second transaction then commits the session header with those exact counts and
 * its `building` row, and the create answers. The first transaction stays open (it holds the
 * snapshot and the lock) while `buildBlocks` writes the blocks in transactions that import the
 * snapshot and commit key range by key range; a chunk whose blocks are not there yet waits for them
 * (`getSnapshotChunk`). The lock tells other processes that the build is alive: it goes with the
 * transaction when this process dies.
 */
export function createPipelined(
  ctx: ServiceContext,
  bg: NonNullable<ServiceContext['background']>,
  actor: Actor,
  opts: OpOptions,
): Promise<SnapshotSession> {
  const limits = ctx.options.limits;
  // The header and the build run in transactions of their own: a database that runs a transaction
  // started inside another one's callback as part of it (@x/dbx: a savepoint, by async context) gets
  // them from outside the create's transaction.
  const outside = new AsyncResource('oversync.snapshot.build');
  const apart = <T>(fn: () => Promise<T>): Promise<T> => outside.runInAsyncScope(fn);
  return new Promise<SnapshotSession>((resolve, reject) => {
    let answered = false;
    bg.start(BUILD_TASK, async (serviceSignal) => {
      // Until the answer the request's signal cancels the work; after it only the service's does.
      const ac = new AbortController();
      const abort = (reason: unknown) => ac.abort(reason);
      const onRequest = () => {
        if (!answered) abort(opts.signal?.reason);
      };
      const onService = () => abort(serviceSignal.reason);
      if (serviceSignal.aborted) abort(serviceSignal.reason);
      if (opts.signal?.aborted) abort(opts.signal.reason);
      serviceSignal.addEventListener('abort', onService, { once: true });
      opts.signal?.addEventListener('abort', onRequest, { once: true });
      const signal = ac.signal;
      try {
        await ctx.db.runTx(
          async (tx) => {
            const userPk = await requireInitializedScopeReadOnly(tx, actor.userId);
            const us = await tx.query<{ seq: string }>(
              'SELECT (next_bundle_seq - 1)::text AS seq FROM sync.user_state WHERE user_pk = $1',
              [userPk],
            );
            const snapshotSeq = Number(us.rows[0]!.seq);
            const snapshotId = randomUUID();
            const tables = ctx.topology.tables;
            const columns = await lockAndReadColumns(tx, tables);
            const exported = await tx.query<{ s: string }>('SELECT pg_export_snapshot() AS s');
            const snapshotName = exported.rows[0]!.s;
            const lockKey = buildLockKey(snapshotId);
            await tx.query('SELECT pg_advisory_xact_lock($1::int, $2::int)', [BUILD_LOCK_CLASS, lockKey]);
            const plan: TablePlan[] = [];
            let rows = 0;
            let bytes = 0;
            for (const [i, info] of tables.entries()) {
              const c = await tx.query<{ n: string; bytes: string; live: string }>(
                `SELECT count(*)::text AS n, coalesce(sum(octet_length(p)), 0)::text AS bytes,
                        (SELECT count(*) FROM sync.row_state
                          WHERE user_pk = $1 AND table_id = $2 AND NOT deleted)::text AS live
                   FROM (SELECT ${payloadTextSql(columns[i]!, SCOPE_COLUMN, info.byteaColumns)} AS p
                           FROM ${info.qualified} AS src WHERE ${SCOPE_COLUMN} = $3) AS x`,
                [userPk, info.tableId, actor.userId],
              );
              const n = Number(c.rows[0]!.n);
              const live = Number(c.rows[0]!.live);
              if (n !== live) throw await mismatchOf(tx, info, userPk, actor.userId);
              plan.push({ info, columns: columns[i]!, rows: n });
              rows += n;
              bytes += Number(c.rows[0]!.bytes);
            }
            if (limits.maxRowsPerSnapshotSession > 0 && rows > limits.maxRowsPerSnapshotSession) {
              throw wireError(
                'snapshot_session_invalid',
                `snapshot row count exceeds max_rows_per_snapshot_session ${limits.maxRowsPerSnapshotSession}`,
                { details: { dimension: 'rows', limit: limits.maxRowsPerSnapshotSession } },
              );
            }
            if (limits.maxBytesPerSnapshotSession > 0 && bytes > limits.maxBytesPerSnapshotSession) {
              throw wireError(
                'snapshot_session_invalid',
                `snapshot byte count exceeds max_bytes_per_snapshot_session ${limits.maxBytesPerSnapshotSession}`,
                { details: { dimension: 'bytes', limit: limits.maxBytesPerSnapshotSession } },
              );
            }
            const header = await apart(() =>
              ctx.db.runTx(
                async (htx) => {
                  await htx.query(
                    'INSERT INTO sync.snapshot_session_builds (snapshot_id, lock_key) VALUES ($1, $2)',
                    [snapshotId, lockKey],
                  );
                  return htx.query<{ expires: string }>(
                    `INSERT INTO sync.snapshot_sessions
                          (snapshot_id, user_pk, snapshot_bundle_seq, row_count, byte_count, expires_at)
                   VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6::float8 / 1000))
                   RETURNING ${RFC3339_SQL('expires_at')} AS expires`,
                    [snapshotId, userPk, snapshotSeq, rows, bytes, limits.snapshotSessionTtlMs],
                  );
                },
                { isolation: 'read committed', signal },
              ),
            );
            answered = true;
            resolve(sessionAnswer(snapshotId, snapshotSeq, rows, bytes, header.rows[0]!.expires));
            // Its failures are in the build row for the readers; nothing here may retry the create.
            await apart(() =>
              buildBlocks(ctx, { snapshotId, snapshotName, userPk, userId: actor.userId, plan }, signal),
            ).catch((e: unknown) => {
              if (!signal.aborted) ctx.logger.warn({ err: e }, 'oversync: snapshot build failed');
            });
            // The expiry sweep of a synchronous create, after the build (its cascade locks the blocks).
            await apart(() =>
              ctx.db.query('DELETE FROM sync.snapshot_sessions WHERE expires_at <= now()'),
            ).catch(() => undefined);
          },
          { isolation: 'repeatable read', signal, maxAttempts: 1 },
        );
      } catch (e) {
        if (!answered) reject(e);
      } finally {
        serviceSignal.removeEventListener('abort', onService);
        opts.signal?.removeEventListener('abort', onRequest);
      }
    });
  });
}

/**
 * The create's failure when a table's business rows and live row_state entries are not as many:
 * the same error, naming the same first row on one side only, as a synchronous create's.
 */
async function mismatchOf(
  tx: SyncQuerier,
  info: TableInfo,
  userPk: string,
  userId: string,
): Promise<unknown> {
  const keyCol = `src.${quoteIdent(info.keyColumn)}`;
  const r = await tx.query<{ k: Buffer; present: string }>(
    `SELECT coalesce(${keyBytesSql(info)}, rs.key_bytes) AS k,
            CASE WHEN ${keyCol} IS NULL THEN 'row_state' ELSE 'business' END AS present
       FROM (SELECT * FROM ${info.qualified} WHERE ${SCOPE_COLUMN} = $3) AS src
       FULL JOIN (SELECT key_bytes FROM sync.row_state WHERE user_pk = $1 AND table_id = $2 AND NOT deleted) AS rs
         ON rs.key_bytes = ${keyBytesSql(info)}
      WHERE ${keyCol} IS NULL OR rs.key_bytes IS NULL
      ORDER BY 1 LIMIT 1`,
    [userPk, info.tableId, userId],
  );
  const row = r.rows[0];
  const where = row?.present === 'business' ? 'the business table' : 'row_state (live)';
  return new SyncServerError(
    'OVERSYNC_INTERNAL',
    `snapshot of ${info.name} is inconsistent: ${
      row ? `row ${row.k.toString('hex')} of ${info.name} exists only in ${where}` : 'row counts differ'
    }`,
  );
}

interface Build {
  readonly snapshotId: string;
  readonly snapshotName: string;
  readonly userPk: string;
  readonly userId: string;
  readonly plan: readonly TablePlan[];
}

/**
 * Writes a pipelined session's blocks, each step in its own transaction on the create's snapshot
 * (SET TRANSACTION SNAPSHOT), committed as soon as written: a uuid-keyed table in key ranges of
 * `limits.snapshotBuildRangeRows` rows (the (scope, key) unique index yields them in key order, which
 * for uuids is key bytes order; the sorts stay small and in memory), a text-keyed table whole.
 * Ends with the build row `done`, or `failed` (`mismatch`: a business row without its live
 * row_state entry; `error`: anything else). Stops without a word when the session was deleted or
 * the service aborts it (then the lock goes with the create's transaction, and readers see a dead
 * build).
 */
async function buildBlocks(ctx: ServiceContext, b: Build, signal: AbortSignal): Promise<void> {
  const rangeRows = ctx.options.limits.snapshotBuildRangeRows;
  // Block writes and progress from inside a step's transaction are statements of their own.
  const outside = new AsyncResource('oversync.snapshot.blocks');
  const apart = <T>(fn: () => Promise<T>): Promise<T> => outside.runInAsyncScope(fn);
  const step = <T>(fn: (tx: SyncQuerier) => Promise<T>) =>
    ctx.db.runTx(
      async (tx) => {
        await tx.query(`SET TRANSACTION SNAPSHOT ${quoteLiteral(b.snapshotName)}`);
        await tx.query(`SET LOCAL work_mem = '128MB'`); // a range's sorts stay in memory
        await tx.query('SET LOCAL enable_nestloop = off');
        // A range reads its key range of both indexes; a row_state estimate from a bound known only
        // at run time must not turn that into a scan of the whole table per range.
        await tx.query('SET LOCAL enable_seqscan = off');
        // A DDL statement queued behind the create's lock would otherwise wait for this step forever.
        await tx.query(`SET LOCAL lock_timeout = '10s'`);
        return fn(tx);
      },
      { isolation: 'repeatable read', signal },
    );
  /** Notes progress; false when the session is gone (deleted, expired): the build stops. */
  const progress = async (built: number, state?: 'done'): Promise<boolean> => {
    const r = await ctx.db.query(
      `UPDATE sync.snapshot_session_builds SET built_rows = $2, state = coalesce($3, state) WHERE snapshot_id = $1`,
      [b.snapshotId, built, state ?? null],
      { signal },
    );
    if ((r.rowCount ?? 0) > 0) return true;
    await ctx.db.query('DELETE FROM sync.snapshot_session_blocks WHERE snapshot_id = $1', [b.snapshotId]);
    return false;
  };
  let offset = 0;
  let current: TableInfo | undefined;
  try {
    for (const t of b.plan) {
      if (t.rows === 0) continue;
      current = t.info;
      if (t.info.keyKind !== KEY_KIND_UUID) {
        const ins = await step((tx) =>
          insertTableBlocks(tx, t.info, t.columns, b.snapshotId, offset, b.userPk, b.userId),
        );
        if (ins.rows !== t.rows) throw new Error(`${t.info.name}: wrote ${ins.rows} rows of ${t.rows}`);
        offset += ins.rows;
        if (!(await progress(offset))) return;
        continue;
      }
      // The first rows by a key range of the indexes (the client's first pages soon), the rest in
      // one pass (see streamRest).
      const first = await step((tx) =>
        tx
          .query<{ n: string | null; last: string | null }>(rangeInsertSql(t.info, t.columns), [
            b.snapshotId,
            offset,
            t.info.tableId,
            b.userPk,
            b.userId,
            Math.min(rangeRows, t.rows),
            t.info.name,
          ])
          .catch((err: unknown) => {
            throw asMismatch(err, t.info);
          }),
      );
      const n = Number(first.rows[0]?.n ?? 0);
      const last = first.rows[0]?.last;
      if (n === 0 || !last) throw new Error(`${t.info.name}: no rows of ${t.rows}`);
      offset += n;
      if (!(await progress(offset))) return;
      if (n < t.rows) {
        const end = await step((tx) => streamRest(ctx, tx, b, t, last, offset, apart, progress));
        if (end === undefined) return;
        if (end - offset !== t.rows - n)
          throw new Error(`${t.info.name}: wrote ${end - offset + n} rows of ${t.rows}`);
        offset = end;
      }
    }
    await progress(offset, 'done');
  } catch (e) {
    if (signal.aborted) throw e;
    const mismatch = e instanceof SyncServerError && e.code === 'OVERSYNC_INTERNAL';
    const message =
      mismatch || !current
        ? (e as Error).message
        : `snapshot of ${current.name} failed: ${(e as Error).message}`;
    await ctx.db.query(
      `UPDATE sync.snapshot_session_builds SET state = 'failed', failure = $2, message = $3 WHERE snapshot_id = $1`,
      [b.snapshotId, mismatch ? 'mismatch' : 'error', message],
    );
    throw e;
  }
}

/**
 * The first `$6` business rows of a uuid-keyed table in key order (the (scope, key) unique index
 * yields them so, and uuids sort like their bytes), joined with their live row_state entries (the
 * same key range of the row_state index), written as blocks from ordinal `$2 + 1`: the session's
 * first pages, soon. The create checked that the table's business rows and live row_state entries
 * are as many; here and in streamRest every business row must have its entry
 * (sync.snapshot_row_mismatch() raises otherwise), so the two match one to one. Answers the rows
 * written and the range's last key.
 */
function rangeInsertSql(info: TableInfo, columns: readonly CatalogColumn[]): string {
  const key = quoteIdent(info.keyColumn);
  return `WITH src AS MATERIALIZED (
      SELECT * FROM ${info.qualified} AS s WHERE ${SCOPE_COLUMN} = $5 ORDER BY ${key} LIMIT $6),
    last AS MATERIALIZED (SELECT ${key} AS k FROM src ORDER BY ${key} DESC LIMIT 1),
    ins AS (
      INSERT INTO sync.snapshot_session_blocks (snapshot_id, first_ordinal, row_count, payload_bytes, rows)
      SELECT $1, $2 + min(o), count(*), sum(octet_length(p)),
             array_agg(CASE WHEN matched THEN ${rowWireSql(info)}
                            ELSE sync.snapshot_row_mismatch($7, k, 'business') END ORDER BY o)
        FROM (SELECT row_number() OVER (ORDER BY kv) AS o, k, v, p, kt, matched
                FROM (SELECT ${keyBytesSql(info)} AS k, src.${key} AS kv, rs.bundle_seq AS v,
                             ${payloadTextSql(columns, SCOPE_COLUMN, info.byteaColumns)} AS p, ${keyJsonSql(info)} AS kt,
                             (rs.key_bytes IS NOT NULL) AS matched
                        FROM src LEFT JOIN (
                          SELECT key_bytes, bundle_seq FROM sync.row_state
                           WHERE user_pk = $4 AND table_id = $3 AND NOT deleted
                             AND key_bytes <= (SELECT uuid_send(k) FROM last)) AS rs
                          ON rs.key_bytes = ${keyBytesSql(info)}) AS t) AS u
       GROUP BY (o - 1) / ${SNAPSHOT_BLOCK_ROWS}
      RETURNING row_count)
    SELECT (SELECT sum(row_count) FROM ins)::text AS n, (SELECT k::text FROM last) AS last`;
}

/** Rows a streamed build fetches at once: 16 blocks. */
const STREAM_FETCH_ROWS = 16 * SNAPSHOT_BLOCK_ROWS;

/**
 * The rest of a uuid-keyed table after key `after`, in one pass: a cursor of the step's
 * transaction reads the business rows and their row_state entries sequentially, hash-joins and
 * sorts them by key once, and yields each row's finished wire text (rendered after the sort); every
 * fetch of STREAM_FETCH_ROWS rows becomes blocks, inserted by a statement of its own (committed at
 * once, readable by chunks) while the next fetch runs. Key ranges all the way would read the heap
 * in key order, which on a table whose heap order is not key order reads every page again per
 * range. Answers the ordinal after the last row written, or undefined when the session is gone.
 */
async function streamRest(
  ctx: ServiceContext,
  tx: SyncQuerier,
  b: Build,
  t: TablePlan,
  after: string,
  offset: number,
  apart: <T>(fn: () => Promise<T>) => Promise<T>,
  progress: (built: number) => Promise<boolean>,
): Promise<number | undefined> {
  const info = t.info;
  const key = quoteIdent(info.keyColumn);
  const lastLit = `${quoteLiteral(after)}::uuid`;
  const overhead =
    Buffer.byteLength(rowWirePrefix(info)) + 38 + '},"row_version":'.length + ',"payload":'.length + 1;
  // The whole table in one pass: sequential scans (the step turned them off for the first range),
  // planned for all rows, not the first ones.
  await tx.query('SET LOCAL enable_seqscan = on');
  await tx.query('SET LOCAL cursor_tuple_fraction = 1');
  // Literals, not parameters: DECLARE takes no bind parameters.
  await tx.query(
    `DECLARE oversync_snapshot_rest NO SCROLL CURSOR FOR
     SELECT w, octet_length(w) AS wl, v
       FROM (SELECT CASE WHEN src._oversync_rk IS NOT NULL
                         THEN ${rowWireSql(info, keyJsonSql(info), 'src._oversync_v', `(${payloadTextSql(t.columns, SCOPE_COLUMN, info.byteaColumns)})`)}
                         ELSE sync.snapshot_row_mismatch(${quoteLiteral(info.name)}, ${keyBytesSql(info)}, 'business') END AS w,
                    src._oversync_v::text AS v
       FROM (SELECT s.*, rs.bundle_seq AS _oversync_v, rs.key_bytes AS _oversync_rk
               FROM ${info.qualified} AS s
               LEFT JOIN (SELECT key_bytes, bundle_seq FROM sync.row_state
                           WHERE user_pk = ${BigInt(b.userPk)} AND table_id = ${info.tableId} AND NOT deleted
                             AND key_bytes > uuid_send(${lastLit})) AS rs
                 ON rs.key_bytes = uuid_send(s.${key})
              WHERE s.${SCOPE_COLUMN} = ${quoteLiteral(b.userId)} AND s.${key} > ${lastLit}) AS src
      ORDER BY src.${key}) AS rows`,
  );
  let pending: Promise<boolean> = Promise.resolve(true);
  for (;;) {
    const r = await tx
      .query<{ w: string; wl: number; v: string }>(`FETCH ${STREAM_FETCH_ROWS} FROM oversync_snapshot_rest`)
      .catch((err: unknown) => {
        throw asMismatch(err, info);
      });
    if (!(await pending)) return undefined;
    if (r.rows.length === 0) return offset;
    const firsts: number[] = [];
    const counts: number[] = [];
    const bytes: number[] = [];
    const starts: number[] = [];
    for (let i = 0; i < r.rows.length; i += SNAPSHOT_BLOCK_ROWS) {
      const c = Math.min(SNAPSHOT_BLOCK_ROWS, r.rows.length - i);
      let sum = 0;
      // A wire row is prefix, key, '},"row_version":', version, ',"payload":', payload, '}'.
      for (let j = i; j < i + c; j++) sum += Number(r.rows[j]!.wl) - overhead - r.rows[j]!.v.length;
      firsts.push(offset + i + 1);
      counts.push(c);
      bytes.push(sum);
      starts.push(i + 1);
    }
    const texts = r.rows.map((x) => x.w);
    offset += r.rows.length;
    const built = offset;
    pending = apart(async () => {
      // The rows as one text, a newline between rows: compact JSON text never holds a raw newline
      // (control characters are escaped), and one text parameter costs no array escaping here nor
      // array parsing there.
      await ctx.db.query(
        `INSERT INTO sync.snapshot_session_blocks (snapshot_id, first_ordinal, row_count, payload_bytes, rows)
         SELECT $1, u.f, u.c, u.b, a.rows[u.s : u.s + u.c - 1]
           FROM (SELECT string_to_array($5, E'\\n') AS rows) AS a,
                unnest($2::int8[], $3::int4[], $4::int8[], $6::int4[]) AS u(f, c, b, s)`,
        [b.snapshotId, firsts, counts, bytes, texts.join('\n'), starts],
      );
      return progress(built);
    });
    pending.catch(() => undefined); // awaited before the next batch; never unhandled meanwhile
  }
}
