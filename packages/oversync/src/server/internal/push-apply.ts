/** Applying a commit's staged rows to the business tables, in staged order. */
import { goEscapeJsonText } from '../../shared/canonical-json.js';
import type { SyncQuerier } from '../database.js';
import type { DirectInsertEvent } from './capture.js';
import { quoteIdent } from './db.js';
import {
  DIRECT_ALIAS,
  type DirectInsertPlan,
  MAX_INSERT_BATCH,
  NEEDS_HTML_ESCAPE_RE,
} from './push-direct-insert.js';
import type { ApplyRow } from './push-staging.js';
import { keyHexOf } from './rows.js';
import { OP_DELETE, OP_INSERT } from './schema-sql.js';

/**
 * Applies staged rows in staged order. Consecutive INSERTs of one table and column set go in one
 * statement, fed by a JSON array parameter; into eligible tables it returns each row's capture
 * ordinal, key and payload, collected into `direct` (the capture trigger skips those statements).
 */
export async function applyRows(
  tx: SyncQuerier,
  userId: string,
  rows: readonly ApplyRow[],
  plan: DirectInsertPlan,
  direct: DirectInsertEvent[],
): Promise<void> {
  let i = 0;
  while (i < rows.length) {
    const r = rows[i]!;
    const keyCast = r.info.keyKind === 1 ? 'uuid' : 'text';
    const keyCol = quoteIdent(r.info.keyColumn);
    if (r.op === OP_INSERT) {
      let j = i + 1;
      while (
        j < rows.length &&
        j - i < MAX_INSERT_BATCH &&
        rows[j]!.op === OP_INSERT &&
        rows[j]!.info === r.info &&
        rows[j]!.sig === r.sig
      )
        j++;
      const colList = r.cols.map(quoteIdent);
      const payloads: string[] = [];
      for (let k = i; k < j; k++) payloads.push(rows[k]!.payload);
      const d = plan.tables.get(r.info.tableId);
      const res = await tx.query<{ ord: string; key: string; doc: string }>(
        `INSERT INTO ${r.info.qualified} AS ${DIRECT_ALIAS} (_sync_scope_id, ${colList.join(', ')})
         SELECT $1, ${colList.map((c) => `p.${c}`).join(', ')}
           FROM jsonb_populate_recordset(NULL::${r.info.qualified}, $2::jsonb) AS p
         ${d ? `RETURNING ${d.returning}` : ''}`,
        [userId, `[${payloads.join(',')}]`],
      );
      if (d) {
        if (res.rows.length !== j - i) throw new Error(`INSERT returned ${res.rows.length} of ${j - i} rows`);
        for (let n = 0; n < res.rows.length; n++) {
          const x = res.rows[n]!;
          const ord = Number(x.ord);
          if (!Number.isSafeInteger(ord)) throw new Error(`capture ordinal ${x.ord} is beyond 2^53`);
          let doc = x.doc;
          if (d.canonical && NEEDS_HTML_ESCAPE_RE.test(doc)) doc = goEscapeJsonText(doc);
          // Rows come back in insertion order, i.e. in the order sent; the key check keeps that an
          // optimisation (reusing the staged row's key bytes) rather than an assumption.
          const a = rows[i + n]!;
          const same = a.keyString === x.key;
          direct.push({
            ord,
            info: r.info,
            keyString: x.key,
            keyHex: same ? a.keyHex : keyHexOf(r.info, x.key),
            fresh: same && a.fresh,
            payload: doc,
            canonical: d.canonical,
          });
        }
      }
      i = j;
      continue;
    }
    if (r.op === OP_DELETE) {
      await tx.query(
        `DELETE FROM ${r.info.qualified} WHERE ${keyCol} = $1::${keyCast} AND _sync_scope_id = $2`,
        [r.keyString, userId],
      );
    } else {
      const setCols = r.cols.filter((c) => c !== r.info.keyColumn);
      if (setCols.length === 0) setCols.push(r.info.keyColumn);
      await tx.query(
        `UPDATE ${r.info.qualified} AS t SET ${setCols.map((c) => `${quoteIdent(c)} = p.${quoteIdent(c)}`).join(', ')}
           FROM jsonb_populate_record(NULL::${r.info.qualified}, $1::jsonb) AS p
          WHERE t.${keyCol} = $2::${keyCast} AND t._sync_scope_id = $3`,
        [r.payload, r.keyString, userId],
      );
    }
    i++;
  }
}
