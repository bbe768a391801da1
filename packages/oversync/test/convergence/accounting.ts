import type { EditRecord } from './device-child.js';

/**
 * What the server ever had, for one user (captured from every committed bundle, so retention
 * pruning does not hide anything; see harness.ts), plus its rows at the end.
 */
export interface ServerHistory {
  /** Every `rev` token carried by an INSERT/UPDATE row of a committed bundle, or by a current row. */
  readonly revs: ReadonlySet<string>;
  /** `table:key` of every row deleted by a committed bundle. */
  readonly deleted: ReadonlySet<string>;
  /** `table:key` of every row the server holds at the end. */
  readonly present: ReadonlySet<string>;
}

/** What a device's conflict log (`client.conflicts()`) says its local intents lost or kept. */
export interface DeviceConflicts {
  /** `rev` tokens of the local payloads of recorded conflicts. */
  readonly revs: ReadonlySet<string>;
  /** `table:key` of recorded conflicts whose local intent was a DELETE. */
  readonly deletes: ReadonlySet<string>;
}

export interface UnaccountedEdit {
  readonly device: string;
  readonly edit: EditRecord;
}

/**
 * The accounting rule. A device's acknowledged edits are read in the order it made them (its log).
 * Edit e of device d (user u) is accounted for iff one of:
 *
 * 1. e wrote a row (insert/update): its token is in the server's history for u (some committed
 *    bundle carried a row with `rev = token`, or a current server row does). The edit reached the
 *    server; what happened to it later is other devices' business.
 * 2. e deleted a row: the server deleted that row in some committed bundle, or does not hold it
 *    at the end. A delete is an idempotent intent ("this row must not exist"); it is satisfied by
 *    any device's delete (a cascade included), and a row that never reached the server needs none.
 * 3. d's conflict log records e's intent: a conflict whose local payload carries e's token (for
 *    a write), or a DELETE conflict on e's row (for a delete). The edit lost (or was re-queued by)
 *    a resolver and the device can say so. Until `client.conflicts()` exists this set is empty.
 * 4. e was superseded: the next edit d made to the same row (an update, a delete, or a delete of an
 *    ancestor whose cascade removed the row) is itself accounted for. A device pushes one coalesced
 *    intent per row, so an intermediate state that was overwritten locally before it could be
 *    pushed is not expected on the server; the newer intent speaks for it.
 *
 * Everything else is unaccounted: an acknowledged edit that vanished without a trace. Rule 4 is
 * the one weakness: an edit silently lost and then overwritten by a later edit of the same device
 * that does reach the server is not reported.
 */
export function unaccountedEdits(
  device: string,
  edits: readonly EditRecord[],
  server: ServerHistory,
  conflicts: DeviceConflicts,
): UnaccountedEdit[] {
  const nextAccounted = new Map<string, boolean>();
  const lost: UnaccountedEdit[] = [];
  for (let i = edits.length - 1; i >= 0; i--) {
    const e = edits[i] as EditRecord;
    const row = `${e.table}:${e.key}`;
    let ok: boolean;
    if (e.op === 'delete') {
      ok = server.deleted.has(row) || !server.present.has(row) || conflicts.deletes.has(row);
    } else {
      ok = server.revs.has(e.t) || conflicts.revs.has(e.t);
    }
    ok ||= nextAccounted.get(row) ?? false;
    if (!ok) lost.push({ device, edit: e });
    nextAccounted.set(row, ok);
    for (const r of e.removed ?? []) nextAccounted.set(`${r.table}:${r.key}`, ok);
  }
  return lost.reverse();
}

/** Parses an edit log; a torn last line (killed mid-write) was never acknowledged. */
export function parseEditLog(text: string): EditRecord[] {
  const out: EditRecord[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    try {
      out.push(JSON.parse(line) as EditRecord);
    } catch {
      // torn write
    }
  }
  return out;
}
