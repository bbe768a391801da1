/**
 * A push commit that writes its committed bundle (log, rows, row_state) straight from its INSERTs'
 * `RETURNING`, when the whole push is fresh INSERTs into tables the direct-insert plan covers.
 */
import { computeBundleHash, type HashableBundleRow } from '../../shared/bundle-hash.js';
import type { StatementBatch } from './batch.js';
import { bundleNotification, notifyBundleLater, PAYLOAD_PRESENT } from './capture.js';
import type { ServiceContext } from './context.js';
import { cachedPlanFunctionSql, prepared, quoteIdent } from './db.js';
import { DIRECT_ALIAS, type DirectInsertPlan, MAX_INSERT_BATCH } from './push-direct-insert.js';
import type { ApplyRow } from './push-staging.js';
import { OP_INSERT } from './schema-sql.js';
import {
  type BundleContext,
  bundleContextConflict,
  bundleContextCtes,
  bundleContextParams,
} from './state.js';

/** A bundle a push commit wrote. */
export interface CommittedPushBundle {
  bundleSeq: number;
  rowCount: number;
  hash: string;
  /** Written by commitDirectBundle (checked for captured rows after the apply). */
  direct?: boolean;
  /**
   * Written by commitDirectBundle with `finish: 'caller'`: its log row's count, size and hash are
   * not written yet, nor its notification sent; the caller does both (state.ts#finishDirectAndActivate).
   */
  unfinished?: { byteCount: number; notify: [channel: string, payload: string] | undefined };
}

/**
 * The whole push is fresh INSERTs into tables whose RETURNING payload is already canonical: then
 * each INSERT statement also writes the bundle's rows and row_state from its own RETURNING, and
 * nothing is read back, normalised or sent again (keys are unique and nothing else is captured,
 * so the committed rows are exactly the inserted rows in insertion order).
 */
export function directBundleEligible(rows: readonly ApplyRow[], plan: DirectInsertPlan): boolean {
  for (const r of rows) if (!r.fresh || !directInsertable(r.op, r.info.tableId, plan)) return false;
  return true;
}

/** A row of op code `op` into table `tableId` can be committed the direct way (when fresh). */
export function directInsertable(op: number, tableId: number, plan: DirectInsertPlan): boolean {
  return op === OP_INSERT && plan.tables.get(tableId)?.bundleReturning !== undefined;
}

/**
 * The context-setting variant of commitDirectBundle's first statement, as the function
 * `sync.direct_bundle_begin` (db.ts#cachedPlanFunctionSql; planned once per connection, not for
 * every push): the bundle context checked and set, the bundle_seq allocated and the log row
 * written; `$1` user_pk, `$2` source id, `$3` source_bundle_id, `$4` / `$5` the context's names
 * and values. Answers (seq, ok); a conflicting context writes nothing (seq NULL, ok FALSE).
 */
export const DIRECT_BUNDLE_BEGIN_FN_SQL = cachedPlanFunctionSql(
  'direct_bundle_begin',
  'BIGINT, TEXT, BIGINT, TEXT[], TEXT[]',
  'seq TEXT, ok BOOL',
  `WITH ${bundleContextCtes('$4', '$5')},
     ${directBeginCtes('$1', '$2', '$3')}
     SELECT (SELECT bundle_seq::text FROM log) AS seq, ok FROM bc_set`,
);

/**
 * CTEs `seq` (the user's next bundle_seq, allocated when `bc_set` is ok) and `log` (its log row,
 * count and hash filled in by commitDirectBundle) for the user_pk `userPk` (an SQL expression; NULL
 * allocates nothing), source `sourceId`, `sourceBundleId`: the start of a direct commit, shared by
 * sync.direct_bundle_begin and sync.push_bundle_start.
 */
export function directBeginCtes(userPk: string, sourceId: string, sourceBundleId: string): string {
  return `seq AS (
       UPDATE sync.user_state SET next_bundle_seq = next_bundle_seq + 1
        WHERE user_pk = ${userPk} AND (SELECT ok FROM bc_set)
       RETURNING user_pk, next_bundle_seq - 1 AS seq),
     log AS (
       INSERT INTO sync.bundle_log (user_pk, bundle_seq, source_id, source_bundle_id, row_count, byte_count, bundle_hash)
       SELECT user_pk, seq, ${sourceId}, ${sourceBundleId}, 0, 0, '\\x' FROM seq
       RETURNING bundle_seq)`;
}

const DIRECT_BUNDLE_BEGIN_CALL = 'SELECT * FROM sync.direct_bundle_begin($1, $2, $3, $4, $5)';
/** commitDirectBundle's first statement when the caller has set the bundle context. */
const DIRECT_BUNDLE_BEGIN_SQL = `WITH seq AS (
     UPDATE sync.user_state SET next_bundle_seq = next_bundle_seq + 1 WHERE user_pk = $1
     RETURNING next_bundle_seq - 1 AS seq)
   INSERT INTO sync.bundle_log (user_pk, bundle_seq, source_id, source_bundle_id, row_count, byte_count, bundle_hash)
   SELECT $1, seq, $2, $3, 0, 0, '\\x' FROM seq
   RETURNING bundle_seq::text AS seq, TRUE AS ok`;

/**
 * The log row's count, size and hash once the rows are written, as the function
 * `sync.bundle_log_finish` (planned once per connection): `$1` user_pk, `$2` bundle_seq, `$3` /
 * `$4` row and byte count, `$5` the hash as hex.
 */
export const BUNDLE_LOG_FINISH_FN_SQL = cachedPlanFunctionSql(
  'bundle_log_finish',
  'BIGINT, BIGINT, BIGINT, BIGINT, TEXT',
  'updated BIGINT',
  `WITH u AS (
     UPDATE sync.bundle_log SET row_count = $3, byte_count = $4, bundle_hash = decode($5, 'hex')
      WHERE user_pk = $1 AND bundle_seq = $2
     RETURNING 1)
   SELECT count(*) FROM u`,
);

/**
 * A direct commit's last statement before COMMIT, as the function `sync.push_direct_finish`
 * (planned once per connection, and called as a prepared statement: nothing of it is parsed per
 * push): the log row's count, size and hash written (`$1` user_pk, `$2` bundle_seq, `$3` / `$4`
 * row and byte count, `$5` the hash as hex), the notification sent (`$6` channel, NULL for none,
 * `$7` payload), the deferred checks run, then sync.source_activate (`$8` source id, `$9`
 * source_bundle_id, `$10` push session to delete or NULL) with its check for captured rows. The
 * same statements, in the same order, that were sent as four texts before.
 */
export const PUSH_DIRECT_FINISH_FN_SQL = `
CREATE OR REPLACE FUNCTION sync.push_direct_finish(BIGINT, BIGINT, BIGINT, BIGINT, TEXT, TEXT, TEXT, TEXT, BIGINT, UUID)
RETURNS TABLE (latest TEXT, floor TEXT, staged BOOL)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
BEGIN
  UPDATE sync.bundle_log SET row_count = $3, byte_count = $4, bundle_hash = decode($5, 'hex')
   WHERE user_pk = $1 AND bundle_seq = $2;
  IF $6 IS NOT NULL THEN
    PERFORM pg_notify($6, $7);
  END IF;
  SET CONSTRAINTS ALL IMMEDIATE;
  RETURN QUERY SELECT * FROM sync.source_activate($1, $8, $9, $10, TRUE);
END
$fn$`;

/**
 * The bundle_seq allocated (capture.ts allocateBundleSeq) and the log row written in one
 * statement, the log row first (hash filled in by commitDirectBundle): installs made before
 * bundle_rows lost its FK to bundle_log still check it per row. With `context`, its GUCs are
 * checked and set in that statement too (nothing there reads them; the INSERTs do), and a
 * conflicting context writes nothing.
 */
async function beginDirectBundle(
  tx: StatementBatch,
  userPk: string,
  source: { sourceId: string; sourceBundleId: number },
  context: BundleContext | undefined,
): Promise<number> {
  const sql = context ? DIRECT_BUNDLE_BEGIN_CALL : DIRECT_BUNDLE_BEGIN_SQL;
  const log = await tx.query<{ seq: string | null; ok: boolean }>(
    sql,
    context
      ? [userPk, source.sourceId, source.sourceBundleId, ...bundleContextParams(context)]
      : [userPk, source.sourceId, source.sourceBundleId],
    prepared(sql),
  );
  if (!log.rows[0]!.ok) throw bundleContextConflict();
  return Number(log.rows[0]!.seq);
}

export async function commitDirectBundle(
  tx: StatementBatch,
  ctx: ServiceContext,
  userId: string,
  userPk: string,
  source: { sourceId: string; sourceBundleId: number },
  rows: readonly ApplyRow[],
  plan: DirectInsertPlan,
  begun: {
    /** Set in the same statement as the bundle_seq (else the caller has set it). */
    context?: BundleContext;
    /** Allocated, its log row written and `context` set already (CommitStart.directSeq). */
    seq?: number | undefined;
    /**
     * `'caller'`: the log row's count, size and hash and the notification are left to the caller,
     * which sends them with the source's activation in one statement (CommittedPushBundle.unfinished);
     * by default they are queued on `tx`, sent with its next statement.
     */
    finish?: 'caller';
  },
): Promise<CommittedPushBundle> {
  const bundleSeq = begun.seq ?? (await beginDirectBundle(tx, userPk, source, begun.context));
  const hashRows: HashableBundleRow[] = [];
  const texts: string[] = [];
  let i = 0;
  while (i < rows.length) {
    const r = rows[i]!;
    let j = i + 1;
    while (j < rows.length && j - i < MAX_INSERT_BATCH && rows[j]!.info === r.info && rows[j]!.sig === r.sig)
      j++;
    const colList = r.cols.map(quoteIdent);
    const payloads: string[] = [];
    for (let k = i; k < j; k++) payloads.push(rows[k]!.payload);
    const insertSql = `WITH ins AS (
         INSERT INTO ${r.info.qualified} AS ${DIRECT_ALIAS} (_sync_scope_id, ${colList.join(', ')})
         SELECT $1, ${colList.map((c) => `p.${c}`).join(', ')}
           FROM jsonb_populate_recordset(NULL::${r.info.qualified}, $2::jsonb) AS p
         RETURNING ${plan.tables.get(r.info.tableId)!.bundleReturning}),
       r AS (SELECT row_number() OVER () AS n, key, doc, key_bytes FROM ins),
       written_rows AS (
         INSERT INTO sync.bundle_rows (user_pk, bundle_seq, row_ordinal, table_id, key_bytes, op_code, payload_wire)
         SELECT $3, $4, $5 + r.n, $6, r.key_bytes, ${OP_INSERT}, r.doc::json FROM r),
       written_state AS (
         INSERT INTO sync.row_state (user_pk, table_id, key_bytes, bundle_seq, deleted)
         SELECT $3, $6, r.key_bytes, $4, FALSE FROM r)
       SELECT n, key, doc FROM r`;
    // A prepared statement: planned once per connection, not for every push (its text depends on
    // the table and the column set only).
    const res = await tx.query<{ n: string; key: string; doc: string }>(
      insertSql,
      [userId, `[${payloads.join(',')}]`, userPk, bundleSeq, texts.length, r.info.tableId],
      prepared(insertSql),
    );
    if (res.rows.length !== j - i) throw new Error(`INSERT returned ${res.rows.length} of ${j - i} rows`);
    // A CTE scan returns rows in the CTE's order; the ordinals make that checked, not assumed.
    let got = res.rows;
    if (got.some((x, k) => Number(x.n) !== k + 1)) got = [...got].sort((x, y) => Number(x.n) - Number(y.n));
    const { schema, table, keyColumn } = r.info;
    for (const x of got) {
      texts.push(x.doc);
      hashRows.push({
        schema,
        table,
        key: { [keyColumn]: x.key },
        op: 'INSERT',
        row_version: bundleSeq,
        payload: PAYLOAD_PRESENT,
      });
    }
    i = j;
  }
  const hash = computeBundleHash(hashRows, texts);
  if (begun.finish === 'caller') {
    const channel = ctx.notifyChannel;
    const notify: [string, string] | undefined =
      channel === undefined ? undefined : [channel, bundleNotification(userPk, bundleSeq, source)];
    return {
      bundleSeq,
      rowCount: texts.length,
      hash: hash.hex,
      direct: true,
      unfinished: { byteCount: hash.byteCount, notify },
    };
  }
  // Sent with the caller's next statement; that nothing went through the capture stage is
  // checked after the apply (`direct`: activateSourceAndRetain's checkNoCaptureStage).
  tx.later('SELECT FROM sync.bundle_log_finish($1, $2, $3, $4, $5)', [
    userPk,
    bundleSeq,
    texts.length,
    hash.byteCount,
    hash.hex,
  ]);
  notifyBundleLater(tx, ctx.notifyChannel, userPk, bundleSeq, source);
  return { bundleSeq, rowCount: texts.length, hash: hash.hex, direct: true };
}
