/** Pull (§5.1) and committed-bundle row paging (§5.2). */
import type { Bundle, BundleRow, CommittedBundleRowsResponse, PullResponse } from '../../shared/wire.js';
import type { Actor } from '../actor.js';
import type { SyncQuerier } from '../database.js';
import { isSyncServerError, wireError } from '../errors.js';
import type { StageTiming } from '../options.js';
import type { PullParams } from '../pull-params.js';
import { RawJson } from '../raw-json.js';
import { boundedTx, type OpOptions, type ServiceContext, txOpts } from './context.js';
import { opName, wireKey } from './rows.js';
import { findUserPk, requireInitializedScopeReadOnly } from './state.js';
import type { Topology } from './topology.js';

interface RowRec {
  bundle_seq: string;
  table_id: number;
  key_bytes: Buffer;
  op_code: number;
  payload: string | null;
}

function toBundleRow(topology: Topology, r: RowRec): BundleRow {
  const info = topology.byId.get(r.table_id)!;
  const row: BundleRow = {
    schema: info.schema,
    table: info.table,
    key: wireKey(info, r.key_bytes),
    op: opName(r.op_code),
    row_version: Number(r.bundle_seq),
  };
  if (r.payload !== null) row.payload = new RawJson(r.payload);
  return row;
}

function historyPruned(userId: string, provided: number, floor: number) {
  return wireError(
    'history_pruned',
    `requested checkpoint ${provided} is older than retained history floor ${floor} for user ${userId}`,
    { details: { providedSeq: provided, retainedFloor: floor } },
  );
}

export async function countHistoryPruned(ctx: ServiceContext, e: unknown): Promise<void> {
  if (!isSyncServerError(e) || e.wireCode !== 'history_pruned') return;
  try {
    await ctx.db.query("SELECT nextval('sync.history_pruned_error_seq')");
  } catch (err) {
    ctx.logger.warn({ err }, 'oversync: failed to count a history_pruned response');
  }
}

export async function pull(
  ctx: ServiceContext,
  actor: Actor,
  p: PullParams,
  opts: OpOptions,
): Promise<PullResponse> {
  const timings: StageTiming[] = [];
  const stage = async <T>(name: string, fn: () => Promise<T>, count?: (v: T) => number): Promise<T> => {
    const t0 = performance.now();
    let error = false;
    try {
      const v = await fn();
      timings.push({
        operation: 'pull',
        stage: name,
        durationMs: performance.now() - t0,
        count: count ? count(v) : 0,
        attempt: 1,
        error,
      });
      return v;
    } catch (e) {
      error = !(isSyncServerError(e) && e.wireCode === 'service_unavailable');
      timings.push({
        operation: 'pull',
        stage: name,
        durationMs: performance.now() - t0,
        count: 0,
        attempt: 1,
        error,
      });
      throw e;
    }
  };
  try {
    return await stage('total', () =>
      stage('transaction', () =>
        boundedTx(
          ctx,
          (tx) => pullTx(ctx, tx, actor, p, stage),
          txOpts(opts.signal, { isolation: 'repeatable read', readOnly: true }),
        ),
      ),
    );
  } catch (e) {
    await countHistoryPruned(ctx, e);
    throw e;
  } finally {
    emitTimings(ctx, timings);
  }
}

function emitTimings(ctx: ServiceContext, timings: readonly StageTiming[]): void {
  const rec = ctx.options.stageMetrics;
  for (const t of timings) {
    if (rec) {
      try {
        rec(t);
      } catch (err) {
        ctx.logger.warn({ err }, 'oversync: stage metrics recorder threw');
      }
    }
    if (ctx.options.logStageTimings) ctx.logger.debug({ ...t }, 'oversync stage timing');
  }
}

async function pullTx(
  ctx: ServiceContext,
  tx: SyncQuerier,
  actor: Actor,
  p: PullParams,
  stage: <T>(name: string, fn: () => Promise<T>, count?: (v: T) => number) => Promise<T>,
): Promise<PullResponse> {
  const userPk = await requireInitializedScopeReadOnly(tx, actor.userId);
  const us = await stage('retained_floor_check', async () => {
    const r = await tx.query<{ latest: string; floor: string }>(
      'SELECT (next_bundle_seq - 1)::text AS latest, retained_bundle_floor::text AS floor FROM sync.user_state WHERE user_pk = $1',
      [userPk],
    );
    const row = r.rows[0];
    if (!row) return undefined;
    const floor = Number(row.floor);
    if (p.afterBundleSeq > 0 && p.afterBundleSeq <= floor)
      throw historyPruned(actor.userId, p.afterBundleSeq, floor);
    if (p.targetBundleSeq > 0 && p.targetBundleSeq <= floor) {
      throw historyPruned(actor.userId, p.targetBundleSeq, floor);
    }
    return { latest: Number(row.latest), floor };
  });
  if (!us) return { stable_bundle_seq: 0, bundles: [], has_more: false };
  const stable = await stage('resolve_stable_bundle_seq', async () => {
    const s = p.targetBundleSeq > 0 ? p.targetBundleSeq : us.latest;
    if (s > 0 && s <= us.floor) throw historyPruned(actor.userId, s, us.floor);
    // Fix of the reference (§15.10): a pull from 0 once the floor has moved would silently skip the
    // pruned bundles; it gets history_pruned instead, so the client rebuilds from a snapshot.
    if (p.afterBundleSeq === 0 && us.floor > 0 && s > 0) throw historyPruned(actor.userId, 0, us.floor);
    return s;
  });
  if (p.afterBundleSeq >= stable) return { stable_bundle_seq: stable, bundles: [], has_more: false };
  const metas = await stage(
    'list_bundle_seqs',
    async () =>
      (
        await tx.query<{
          bundle_seq: string;
          source_id: string;
          source_bundle_id: string;
          row_count: string;
          hash: string;
        }>(
          `SELECT bundle_seq::text, source_id, source_bundle_id::text, row_count::text, encode(bundle_hash, 'hex') AS hash
             FROM sync.bundle_log b
            WHERE user_pk = $1 AND bundle_seq > $2 AND bundle_seq > $3 AND bundle_seq <= $4
            ORDER BY b.bundle_seq LIMIT $5`,
          [userPk, p.afterBundleSeq, us.floor, stable, p.maxBundles + 1],
        )
      ).rows,
    (v) => v.length,
  );
  // Bundles up to max_bundles, and up to the row budget (always at least one bundle).
  const budget = ctx.options.limits.maxRowsPerPull;
  let take = 0;
  for (let rows = 0; take < Math.min(metas.length, p.maxBundles); take++) {
    rows += Number(metas[take]!.row_count);
    if (take > 0 && rows > budget) break;
  }
  const hasMore = metas.length > take;
  const page = metas.slice(0, take);
  const bundles = await stage(
    'load_bundles',
    async () => {
      if (page.length === 0) return [] as Bundle[];
      const rows = await tx.query<RowRec>(
        `SELECT bundle_seq::text, table_id, key_bytes, op_code, payload_wire::text AS payload
           FROM sync.bundle_rows r WHERE user_pk = $1 AND bundle_seq >= $2 AND bundle_seq <= $3
          ORDER BY r.bundle_seq, r.row_ordinal`,
        [userPk, page[0]!.bundle_seq, page[page.length - 1]!.bundle_seq],
      );
      const bySeq = new Map<string, BundleRow[]>();
      for (const m of page) bySeq.set(m.bundle_seq, []);
      for (const r of rows.rows) bySeq.get(r.bundle_seq)?.push(toBundleRow(ctx.topology, r));
      return page.map(
        (m): Bundle => ({
          bundle_seq: Number(m.bundle_seq),
          source_id: m.source_id,
          source_bundle_id: Number(m.source_bundle_id),
          row_count: Number(m.row_count),
          bundle_hash: m.hash,
          rows: bySeq.get(m.bundle_seq)!,
        }),
      );
    },
    (v) => v.length,
  );
  return { stable_bundle_seq: stable, bundles, has_more: hasMore };
}

export async function getCommittedBundleRows(
  ctx: ServiceContext,
  actor: Actor,
  bundleSeq: number,
  afterRowOrdinal: number | undefined,
  maxRows: number,
  opts: OpOptions,
): Promise<CommittedBundleRowsResponse> {
  const limits = ctx.options.limits;
  const eff = Math.min(maxRows, limits.maxRowsPerCommittedBundleChunk);
  try {
    return await boundedTx(
      ctx,
      async (tx) => {
        const userPk = await findUserPk(tx, actor.userId);
        if (userPk === undefined) {
          throw wireError('committed_bundle_not_found', `committed bundle ${bundleSeq} not found`);
        }
        const us = await tx.query<{ floor: string }>(
          'SELECT retained_bundle_floor::text AS floor FROM sync.user_state WHERE user_pk = $1',
          [userPk],
        );
        const floor = Number(us.rows[0]!.floor);
        if (bundleSeq <= floor) throw historyPruned(actor.userId, bundleSeq, floor);
        const meta = await tx.query<{
          source_id: string;
          source_bundle_id: string;
          row_count: string;
          hash: string;
        }>(
          `SELECT source_id, source_bundle_id::text, row_count::text, encode(bundle_hash, 'hex') AS hash
           FROM sync.bundle_log WHERE user_pk = $1 AND bundle_seq = $2`,
          [userPk, bundleSeq],
        );
        const m = meta.rows[0];
        if (!m) throw wireError('committed_bundle_not_found', `committed bundle ${bundleSeq} not found`);
        const afterStorage = afterRowOrdinal === undefined ? 0 : afterRowOrdinal + 1;
        const rows = await tx.query<RowRec & { row_ordinal: string }>(
          `SELECT bundle_seq::text, row_ordinal::text, table_id, key_bytes, op_code, payload_wire::text AS payload
           FROM sync.bundle_rows r WHERE user_pk = $1 AND bundle_seq = $2 AND row_ordinal > $3
          ORDER BY r.row_ordinal LIMIT $4`,
          [userPk, bundleSeq, afterStorage, eff + 1],
        );
        const hasMore = rows.rows.length > eff;
        const page = hasMore ? rows.rows.slice(0, eff) : rows.rows;
        const last = page[page.length - 1];
        return {
          bundle_seq: bundleSeq,
          source_id: m.source_id,
          source_bundle_id: Number(m.source_bundle_id),
          row_count: Number(m.row_count),
          bundle_hash: m.hash,
          rows: page.map((r) => toBundleRow(ctx.topology, r)),
          next_row_ordinal: last ? Number(last.row_ordinal) - 1 : (afterRowOrdinal ?? 0),
          has_more: hasMore,
        };
      },
      txOpts(opts.signal, { isolation: 'repeatable read', readOnly: true }),
    );
  } catch (e) {
    await countHistoryPruned(ctx, e);
    throw e;
  }
}
