/**
 * The commit of a large push in bounded memory (issue #19 point 2). A bundle of
 * `STREAM_COMMIT_MIN_ROWS` rows or more is checked and applied by set-based statements over its
 * staged chunks (`sync.push_session_chunks`), a page at a time: its rows are never all in this
 * process, the hash is computed incrementally (BundleHasher), and the event loop is yielded to
 * between pages, so one commit neither holds the bundle nor blocks other requests.
 *
 * Streamed is the common large case: every row a fresh INSERT (no `row_state` entry, base 0) into
 * tables the direct-insert plan covers with a canonical `RETURNING` (push-direct-insert.ts). Then
 * the committed rows are exactly the staged rows in staged order, no conflict is possible, and each
 * page is one statement: INSERT … SELECT from the staged chunk texts, writing `bundle_rows` and
 * `row_state` from its own `RETURNING` and returning (key, payload) for the hash. Every other large
 * bundle (an UPDATE, a DELETE, a re-insert, a trigger-captured table, a duplicate key, damaged
 * staging) is answered by the whole-bundle path, which reports its errors with the same precedence
 * as before (`scanStagedBundle` only decides, it never throws a wire error).
 */
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { BundleHasher } from '../../shared/bundle-hash.js';
import type { SyncQuerier } from '../database.js';
import { allocateBundleSeq, notifyBundle } from './capture.js';
import type { ServiceContext } from './context.js';
import { quoteIdent } from './db.js';
import type { CommittedPushBundle } from './push-direct-bundle.js';
import { DIRECT_ALIAS, type DirectInsertPlan } from './push-direct-insert.js';
import { KEY_KIND_UUID, OP_INSERT } from './schema-sql.js';
import type { TableInfo, Topology } from './topology.js';

/** Bundles of at least this many planned rows are committed by this module. */
export const STREAM_COMMIT_MIN_ROWS = 5_000;
/** Rows per apply statement (and per hash/yield step). */
export const STREAM_COMMIT_PAGE_ROWS = 5_000;

/** Rows hashed between two yields to the event loop (about 2-7 ms of CPU). */
const HASH_SLICE_ROWS = 1_000;

/** Streamed only when runs of one table and column set are this long on average. */
const MIN_AVERAGE_RUN_ROWS = 500;

/** A run of consecutive staged rows of one table and payload column list. */
interface Run {
  info: TableInfo;
  cols: readonly string[];
  /** 0-based staged row ordinals, inclusive */
  first: number;
  last: number;
}

/**
 * The staged rows of one push session, one per row: ordinal, table, key, op, base, columns. Each
 * chunk's meta is parsed once (the OFFSET 0 keeps the planner from inlining a parse per row).
 */
const STAGED_ROWS_SQL = `
  SELECT c.start_row_ordinal + x.n - 1 AS ord, x.t::int4 AS t, x.k, x.o::int2 AS o, x.b::int8 AS b,
         m.cols[x.si::int4 + 1] AS cols
    FROM sync.push_session_chunks c
         CROSS JOIN LATERAL (SELECT c.meta::json AS doc OFFSET 0) j
         CROSS JOIN LATERAL (SELECT array(SELECT json_array_elements_text(j.doc -> 'c')) AS cols OFFSET 0) m
         CROSS JOIN LATERAL ROWS FROM (
           json_array_elements_text(j.doc -> 't'), json_array_elements_text(j.doc -> 'k'),
           json_array_elements_text(j.doc -> 'o'), json_array_elements_text(j.doc -> 'b'),
           json_array_elements_text(j.doc -> 's')) WITH ORDINALITY AS x(t, k, o, b, si, n)
   WHERE c.push_id = $1`;

/**
 * Decides whether a staged push streams: one statement over the staged metadata (no payloads)
 * finds the first duplicate key, whether every row is a fresh INSERT, and the runs of (table,
 * columns). Undefined ⇒ commit through the whole-bundle path, which names any error.
 */
export async function scanStagedBundle(
  tx: SyncQuerier,
  topology: Topology,
  pushId: string,
  userPk: string,
  planned: number,
  plan: DirectInsertPlan,
): Promise<Run[] | undefined> {
  const chunks = await tx.query<{ s: string; n: number }>(
    `SELECT start_row_ordinal::text AS s, row_count AS n FROM sync.push_session_chunks
      WHERE push_id = $1 ORDER BY start_row_ordinal`,
    [pushId],
  );
  let next = 0;
  for (const c of chunks.rows) {
    if (Number(c.s) !== next) return undefined;
    next += c.n;
  }
  if (next !== planned) return undefined;
  const r = await tx.query<{ n: string; dup: boolean; fresh: boolean; runs: string }>(
    `WITH r AS MATERIALIZED (${STAGED_ROWS_SQL})
     SELECT (SELECT count(*) FROM r)::text AS n,
            EXISTS (SELECT 1 FROM r GROUP BY t, k HAVING count(*) > 1) AS dup,
            (SELECT coalesce(bool_and(o = ${OP_INSERT} AND b = 0), FALSE) FROM r)
              AND NOT EXISTS (
                SELECT 1 FROM r JOIN sync.table_catalog tc ON tc.table_id = r.t
                  JOIN sync.row_state s ON s.user_pk = $2 AND s.table_id = r.t
                   AND s.key_bytes = CASE WHEN tc.sync_key_kind = ${KEY_KIND_UUID} THEN uuid_send(r.k::uuid)
                                          ELSE convert_to(r.k, 'UTF8') END) AS fresh,
            (SELECT coalesce(json_agg(json_build_array(t, cols, first, last) ORDER BY first), '[]')::text
               FROM (SELECT t, cols, min(ord) AS first, max(ord) AS last
                       FROM (SELECT t, cols, ord, ord - row_number() OVER (PARTITION BY t, cols ORDER BY ord) AS g
                               FROM r) g
                      GROUP BY t, cols, g) runs) AS runs`,
    [pushId, userPk],
  );
  const row = r.rows[0]!;
  if (Number(row.n) !== planned || row.dup || !row.fresh) return undefined;
  const parsed = JSON.parse(row.runs) as [number, string, number, number][];
  // Each run is its own statements: bundles that switch table or column set every few rows go
  // through the whole-bundle path, which batches them in memory.
  if (parsed.length * MIN_AVERAGE_RUN_ROWS > planned) return undefined;
  const runs: Run[] = [];
  for (const [t, cols, first, last] of parsed) {
    const info = topology.byId.get(t);
    if (!info || plan.tables.get(t)?.bundleReturning === undefined) return undefined;
    const colList = cols === '' ? [] : cols.split(',');
    if (colList.length === 0 || !colList.every((c) => info.columns.has(c))) return undefined;
    runs.push({ info, cols: colList, first, last });
  }
  return runs;
}

/**
 * Applies a scanned bundle page by page and writes it as a committed bundle (log, rows, row_state),
 * hashing the rows as they come back. The log row is written first (hash filled in at the end).
 */
export async function commitStagedBundle(
  tx: SyncQuerier,
  ctx: ServiceContext,
  userId: string,
  userPk: string,
  pushId: string,
  source: { sourceId: string; sourceBundleId: number },
  runs: readonly Run[],
  plan: DirectInsertPlan,
): Promise<CommittedPushBundle> {
  const bundleSeq = await allocateBundleSeq(tx, userPk);
  await tx.query(
    `INSERT INTO sync.bundle_log (user_pk, bundle_seq, source_id, source_bundle_id, row_count, byte_count, bundle_hash)
     VALUES ($1, $2, $3, $4, 0, 0, '\\x')`,
    [userPk, bundleSeq, source.sourceId, source.sourceBundleId],
  );
  const hasher = new BundleHasher();
  for (const run of runs) {
    const { info, cols } = run;
    const colList = cols.map(quoteIdent);
    // Rows are inserted in staged order and numbered in RETURNING order; the staged key of each
    // number comes back beside the inserted one, so that order is checked, not assumed.
    const sql = `
      WITH page AS MATERIALIZED (
        SELECT c.start_row_ordinal + x.n - 1 AS ord, x.p, x.k
          FROM sync.push_session_chunks c,
               ROWS FROM (unnest(string_to_array(c.payloads, E'\\n')), json_array_elements_text(c.meta::json -> 'k'))
                 WITH ORDINALITY AS x(p, k, n)
         WHERE c.push_id = $1 AND c.start_row_ordinal <= $3 AND c.start_row_ordinal + c.row_count > $2
           AND c.start_row_ordinal + x.n - 1 BETWEEN $2 AND $3
         ORDER BY 1),
      ins AS (
        INSERT INTO ${info.qualified} AS ${DIRECT_ALIAS} (_sync_scope_id, ${colList.join(', ')})
        SELECT $4, ${colList.map((c) => `v.${c}`).join(', ')}
          FROM page, jsonb_populate_record(NULL::${info.qualified}, page.p::jsonb) AS v
        RETURNING ${plan.tables.get(info.tableId)!.bundleReturning}),
      r AS (SELECT $2 + row_number() OVER () AS n, key, doc, key_bytes FROM ins),
      written_rows AS (
        INSERT INTO sync.bundle_rows (user_pk, bundle_seq, row_ordinal, table_id, key_bytes, op_code, payload_wire)
        SELECT $5, $6, r.n, $7, r.key_bytes, ${OP_INSERT}, r.doc::json FROM r),
      written_state AS (
        INSERT INTO sync.row_state (user_pk, table_id, key_bytes, bundle_seq, deleted)
        SELECT $5, $7, r.key_bytes, $6, FALSE FROM r)
      SELECT r.n::text AS n, r.key, r.doc, page.k AS staged FROM r JOIN page ON page.ord + 1 = r.n ORDER BY r.n`;
    for (let first = run.first; first <= run.last; first += STREAM_COMMIT_PAGE_ROWS) {
      const last = Math.min(run.last, first + STREAM_COMMIT_PAGE_ROWS - 1);
      const res = await tx.query<{ n: string; key: string; doc: string; staged: string }>(sql, [
        pushId,
        first,
        last,
        userId,
        userPk,
        bundleSeq,
        info.tableId,
      ]);
      if (res.rows.length !== last - first + 1)
        throw new Error(`staged rows ${first}..${last}: ${res.rows.length} written`);
      for (let k = 0; k < res.rows.length; k++) {
        // Hashing a page is 10-35 ms of this thread's CPU (more when the machine is loaded): other
        // requests run between slices of it too, not only between pages.
        if (k > 0 && k % HASH_SLICE_ROWS === 0) await yieldToLoop();
        const x = res.rows[k]!;
        if (Number(x.n) !== hasher.count + 1 || x.key !== x.staged)
          throw new Error(`committed row ${x.n} (${x.key}) is not staged row ${hasher.count} (${x.staged})`);
        hasher.add(
          {
            schema: info.schema,
            table: info.table,
            key: { [info.keyColumn]: x.key },
            op: 'INSERT',
            row_version: bundleSeq,
          },
          x.doc,
        );
      }
      // Other requests run between pages: no tick does more than one page's work.
      await yieldToLoop();
    }
  }
  const hash = hasher.digest();
  const done = await tx.query<{ staged: boolean }>(
    `UPDATE sync.bundle_log SET row_count = $3, byte_count = $4, bundle_hash = decode($5, 'hex')
      WHERE user_pk = $1 AND bundle_seq = $2
     RETURNING EXISTS (SELECT 1 FROM sync.bundle_capture_stage WHERE txid = txid_current() AND user_pk = $1) AS staged`,
    [userPk, bundleSeq, hasher.count, hash.byteCount, hash.hex],
  );
  if (done.rows[0]?.staged !== false)
    throw new Error('a streamed push bundle captured rows through the stage');
  await notifyBundle(tx, ctx.notifyChannel, userPk, bundleSeq, source);
  return { bundleSeq, rowCount: hasher.count, hash: hash.hex };
}
