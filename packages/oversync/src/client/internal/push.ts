/**
 * Push: freeze the dirty rows into the outbox (one bundle), upload it in chunks, commit it, then
 * hand the committed bundle to replay. Failures are mapped by push-failures.ts.
 */
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { canonicalJson } from '../../shared/canonical-json.js';
import { ClientError } from '../errors.js';
import type { PushReport } from '../types.js';
import { type LocalPayload, localKeyToWire, localPayloadToWire } from './codec.js';
import {
  countDirty,
  deleteDirtyRowids,
  insertOutboxRow,
  markOutboxCommitted,
  markOutboxPrepared,
  nextSourceBundleId,
  type OutboxState,
  readAttachment,
  readDirtyPage,
  readOutbox,
  readOutboxRows,
} from './local-store.js';
import { handlePushError } from './push-failures.js';
import type { PushBundleAnswer, PushCommitAnswer } from './remote.js';
import { type CommittedMeta, fetchAndReplay } from './replay.js';
import { protocolError, type SyncContext } from './sync-context.js';
import { statusOf } from './transport.js';

/** Dirty rows frozen per slice. */
const FREEZE_PAGE_ROWS = 500;

/**
 * Freezes dirty rows into the outbox (or returns the outbox already frozen), in one transaction
 * run in slices (`TxRunner.sliced`). Push order: upserts by table order ascending (parents
 * first), then deletes by table order descending (children first), each by dirty ordinal. Each
 * (upsert|delete, table order) group is paged in dirty-ordinal order, so no sort of the whole
 * dirty set and no copy of it in memory is needed.
 */
export async function freeze(
  ctx: SyncContext,
  signal?: AbortSignal,
): Promise<{ outbox: OutboxState; resumed: boolean }> {
  const schema = ctx.cfg.schema;
  const orders = [...new Set([...ctx.ops.values()].map((o) => o.m.order))].sort((a, b) => a - b);
  const groups = [
    ...orders.map((order) => ({ order, deletes: false })),
    ...[...orders].reverse().map((order) => ({ order, deletes: true })),
  ];
  return ctx.runner.sliced(
    function* (db) {
      const cur = readOutbox(db);
      if (cur.state !== 'none') return { outbox: cur, resumed: true };
      const att = readAttachment(db);
      const sbid = nextSourceBundleId(db, att.currentSourceId);
      let n = 0;
      for (const g of groups) {
        const tables = [...ctx.ops.values()].filter((o) => o.m.order === g.order).map((o) => o.m.table);
        for (let pos: [number, string, string] | undefined; ; ) {
          const page = readDirtyPage(db, schema, tables, g.deletes, pos, FREEZE_PAGE_ROWS);
          if (page.length === 0) break;
          for (const [i, d] of page.entries()) {
            // a long freeze's statements are calls to the apply worker: a page is longer than a slice
            if (i % 50 === 49) yield;
            const ops = ctx.tableOps(d.table_name);
            const live = d.rs_deleted !== null && d.rs_deleted === 0;
            // insert+delete before any upload: a no-op (its dirty row goes with the page's)
            if (d.payload === null && !live) continue;
            const op = d.payload !== null ? (live ? 'UPDATE' : 'INSERT') : 'DELETE';
            const wireKey = localKeyToWire(ops.m, JSON.parse(d.key_json) as Record<string, unknown>);
            const wirePayload =
              d.payload === null
                ? null
                : JSON.stringify(localPayloadToWire(ops.m, JSON.parse(d.payload) as LocalPayload));
            insertOutboxRow(db, schema, sbid, n++, {
              table: d.table_name,
              keyJson: d.key_json,
              wireKeyJson: canonicalJson(wireKey),
              op,
              base: Number(d.base_row_version),
              localPayload: d.payload,
              wirePayload,
            });
          }
          // Every row of the page is frozen (or was a no-op): its dirty rows go in one statement.
          deleteDirtyRowids(
            db,
            page.map((d) => d.rid),
          );
          const last = page[page.length - 1] as (typeof page)[number];
          pos = [Number(last.dirty_ordinal), last.table_name, last.key_json];
          yield;
        }
      }
      if (n === 0) return { outbox: cur, resumed: false };
      markOutboxPrepared(db, att, sbid, n);
      return { outbox: readOutbox(db), resumed: false };
    },
    signal,
    await ctx.runner.read(countDirty, signal),
  );
}

/**
 * Pushes at most one bundle (the resumed outbox or a new freeze), then replays the committed
 * result. A 409 names one conflicting row at a time: each is resolved and the push retried.
 * Retries are bounded per row: a row that conflicts again after `maxConflictRetries` automatic
 * retries ends the call (its intent stays queued). Each retry either resolves a row not seen
 * before or spends that row's budget, so the loop always ends.
 */
export async function pushPending(ctx: SyncContext, signal?: AbortSignal): Promise<PushReport> {
  let conflictsResolved = 0;
  const perRow = new Map<string, number>();
  for (;;) {
    const { outbox } = await freeze(ctx, signal);
    if (outbox.state === 'none') return { outcome: 'no_change', conflictsResolved };
    try {
      const meta = await uploadAndCommit(ctx, outbox, signal);
      const replayed = await fetchAndReplay(ctx, meta, outbox, signal);
      return { outcome: 'committed', bundleSeq: meta.bundleSeq, rowCount: replayed, conflictsResolved };
    } catch (e) {
      const handled = await handlePushError(ctx, e, outbox, signal);
      if (handled === 'committed') return { outcome: 'committed', conflictsResolved };
      if (handled === 'rethrow') throw e;
      conflictsResolved++;
      const seen = (perRow.get(handled.row) ?? 0) + 1;
      perRow.set(handled.row, seen);
      const remaining = await ctx.runner.read((db) => countDirty(db), signal);
      if (remaining === 0) return { outcome: 'no_change', conflictsResolved };
      if (seen > ctx.cfg.maxConflictRetries) {
        throw new ClientError(
          'OVERSYNC_CLIENT_CONFLICT_RETRY_EXHAUSTED',
          `push conflicts on one row persisted after ${ctx.cfg.maxConflictRetries} automatic retries`,
          {
            details: {
              retryCount: ctx.cfg.maxConflictRetries,
              remainingDirtyCount: remaining,
              row: handled.row,
            },
          },
        );
      }
    }
  }
}

/** Outbox rows read per slice while an upload chunk is built. */
const UPLOAD_READ_ROWS = 500;

/**
 * The rows of the push chunk starting at row ordinal `start` (at most `uploadLimit` rows),
 * serialised as the JSON text of the array `[…]`. The outbox already holds each row's wire key and
 * wire payload as JSON, so a row is written by concatenation (no parse and re-serialisation), and
 * the rows are read `UPLOAD_READ_ROWS` at a time with an event-loop turn between reads: a 5,000-row
 * chunk read and serialised in one piece was one of the longest blocks of a big push.
 */
async function chunkRowsJson(
  ctx: SyncContext,
  start: number,
  signal?: AbortSignal,
): Promise<{ json: string; rows: number }> {
  const schemaJson = JSON.stringify(ctx.cfg.schema);
  const parts: string[] = [];
  const end = start + ctx.cfg.uploadLimit;
  for (let from = start; from < end; ) {
    if (from > start) await yieldToLoop();
    const n = Math.min(UPLOAD_READ_ROWS, end - from);
    const rows = await ctx.runner.read((db) => readOutboxRows(db, from, n), signal);
    for (const r of rows) {
      const payload = r.wirePayload === null ? '' : `,"payload":${r.wirePayload}`;
      parts.push(
        `{"schema":${schemaJson},"table":${JSON.stringify(r.table)},"key":${r.wireKeyJson},"op":${JSON.stringify(r.op)},"base_row_version":${r.base}${payload}}`,
      );
    }
    if (rows.length < n) break;
    from += n;
  }
  return { json: `[${parts.join(',')}]`, rows: parts.length };
}

/** What an `already_committed` answer says, checked against the frozen outbox; not yet proven ours. */
function alreadyCommitted(
  a: Partial<Record<'bundle_seq' | 'source_bundle_id' | 'row_count', number | undefined>> &
    Partial<Record<'source_id' | 'bundle_hash', string | undefined>>,
  outbox: OutboxState,
): CommittedMeta {
  const meta = {
    bundleSeq: a.bundle_seq ?? 0,
    sourceId: a.source_id ?? '',
    sourceBundleId: a.source_bundle_id ?? 0,
    rowCount: a.row_count ?? 0,
    bundleHash: a.bundle_hash ?? '',
  };
  if (
    meta.sourceId !== outbox.sourceId ||
    meta.sourceBundleId !== outbox.sourceBundleId ||
    meta.bundleSeq <= 0 ||
    !meta.bundleHash
  ) {
    throw protocolError('already_committed answer does not match the frozen outbox', { ...meta });
  }
  // Not marked committed yet: the committed rows must first prove they carry our intents.
  return { ...meta, needsProof: true };
}

/** A commit's answer, checked against the frozen outbox, and the outbox marked committed. */
async function committed(
  ctx: SyncContext,
  c: PushCommitAnswer,
  outbox: OutboxState,
  signal?: AbortSignal,
): Promise<CommittedMeta> {
  if (c.source_id !== outbox.sourceId || c.source_bundle_id !== outbox.sourceBundleId || c.row_count <= 0) {
    throw protocolError('push commit answer does not match the frozen outbox');
  }
  const meta = {
    bundleSeq: c.bundle_seq,
    sourceId: c.source_id,
    sourceBundleId: c.source_bundle_id,
    rowCount: c.row_count,
    bundleHash: c.bundle_hash,
  };
  await ctx.runner.tx((db) => markOutboxCommitted(db, meta.bundleSeq, meta.bundleHash), signal);
  return meta;
}

/**
 * A bundle of one chunk in one request (`POST /sync/push`) when the server takes one; undefined
 * when it does not (then the push session's requests follow).
 */
async function pushInOneRequest(
  ctx: SyncContext,
  outbox: OutboxState,
  signal?: AbortSignal,
): Promise<CommittedMeta | undefined> {
  const t = ctx.remote;
  if (outbox.rowCount > Math.min(ctx.cfg.uploadLimit, await t.singleRequestPushRows(signal)))
    return undefined;
  const chunk = await chunkRowsJson(ctx, 0, signal);
  const init = outbox.initializationId
    ? `,"initialization_id":${JSON.stringify(outbox.initializationId)}`
    : '';
  let res: PushBundleAnswer;
  try {
    res = await t.pushBundle(
      `{"source_bundle_id":${outbox.sourceBundleId},"rows":${chunk.json}${init}}`,
      signal,
    );
  } catch (e) {
    // A server that no longer has the route (rolled back to an older version): sessions from now on.
    const s = statusOf(e);
    if (s !== 404 && s !== 405) throw e;
    t.singleRequestPushRefused();
    return undefined;
  }
  if (res.status === 'already_committed') return alreadyCommitted(res, outbox);
  ctx.hooks.progress({ phase: 'push', stage: 'upload', done: chunk.rows, total: outbox.rowCount });
  return committed(ctx, res, outbox, signal);
}

export async function uploadAndCommit(
  ctx: SyncContext,
  outbox: OutboxState,
  signal?: AbortSignal,
): Promise<CommittedMeta> {
  if (outbox.state === 'committed_remote') {
    return {
      bundleSeq: outbox.remoteBundleSeq,
      sourceId: outbox.sourceId,
      sourceBundleId: outbox.sourceBundleId,
      rowCount: -1,
      bundleHash: outbox.remoteBundleHash,
    };
  }
  const t = ctx.remote;
  return t.withRetry(
    'push_pending',
    async () => {
      const one = await pushInOneRequest(ctx, outbox, signal);
      if (one) return one;
      const body: Record<string, unknown> = {
        source_bundle_id: outbox.sourceBundleId,
        planned_row_count: outbox.rowCount,
      };
      if (outbox.initializationId) body.initialization_id = outbox.initializationId;
      const created = await t.createPushSession(body, signal);
      if (created.status === 'already_committed') return alreadyCommitted(created, outbox);
      const pushId = created.push_id;
      if (
        !pushId ||
        created.planned_row_count !== outbox.rowCount ||
        (created.next_expected_row_ordinal ?? 0) !== 0
      ) {
        throw protocolError('push session create answer does not echo the plan');
      }
      let done = false;
      try {
        for (let start = 0; start < outbox.rowCount; start += ctx.cfg.uploadLimit) {
          const chunk = await chunkRowsJson(ctx, start, signal);
          const res = await t.pushChunk(
            pushId,
            `{"start_row_ordinal":${start},"rows":${chunk.json}}`,
            signal,
          );
          if (res.push_id !== pushId || res.next_expected_row_ordinal !== start + chunk.rows) {
            throw protocolError('push chunk answer does not echo the session');
          }
          ctx.hooks.progress({
            phase: 'push',
            stage: 'upload',
            done: start + chunk.rows,
            total: outbox.rowCount,
          });
        }
        const c = await t.commitPushSession(pushId, signal);
        done = true;
        return await committed(ctx, c, outbox, signal);
      } finally {
        if (!done) {
          t.dropPushSession(pushId);
        }
      }
    },
    signal,
  );
}
