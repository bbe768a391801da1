import type { z } from 'zod';
import { DbxError } from './errors.js';
import type { QueryResult } from './types.js';

type Rows = QueryResult<unknown> | readonly unknown[];

function rowsOf(input: Rows): readonly unknown[] {
  return Array.isArray(input) ? input : (input as QueryResult<unknown>).rows;
}

function parseRow<T>(schema: z.ZodType<T>, row: unknown, index: number): T {
  const r = schema.safeParse(row);
  if (!r.success) {
    throw new DbxError('DBX_ROW_INVALID', `row ${index} does not match the schema`, {
      details: { index, issues: r.error.issues },
      cause: r.error,
    });
  }
  return r.data;
}

/**
 * Validates every row with a zod schema: `cluster.readQuery(sql).then(collect(User))`.
 * Throws DBX_ROW_INVALID (with the zod issues) on the first row that does not match. Takes a query
 * result or an array of rows.
 *
 * @example
 * ```ts
 * import { collect, createCluster } from '@x/dbx';
 * import { z } from 'zod';
 *
 * const db = createCluster({ primary: process.env.DATABASE_URL! });
 * const Point = z.object({ x: z.number(), label: z.string() });
 * const points = await db
 *   .readQuery('select x, $1::text as label from generate_series(1, 2) as x', ['p'])
 *   .then(collect(Point)); // typed z.infer<typeof Point>[]
 * console.log(points); // [ { x: 1, label: 'p' }, { x: 2, label: 'p' } ]
 * await db.close();
 * ```
 */
export function collect<T>(schema: z.ZodType<T>): (result: Rows) => T[] {
  return (result) => rowsOf(result).map((row, i) => parseRow(schema, row, i));
}

/**
 * Validates the first row of a result: throws DBX_NO_ROWS when there is none (use
 * `collectOne(schema, { optional: true })` to get undefined instead), DBX_ROW_INVALID when it does
 * not match the schema.
 *
 * @example
 * ```ts
 * import { collectOne, createCluster } from '@x/dbx';
 * import { z } from 'zod';
 *
 * const db = createCluster({ primary: process.env.DATABASE_URL! });
 * const Version = z.object({ server_version_num: z.coerce.number() });
 * const { server_version_num } = await db.readQuery('show server_version_num').then(collectOne(Version));
 * console.log(server_version_num >= 140000); // true on PostgreSQL 14 or later
 *
 * const Setting = z.object({ setting: z.string() });
 * const none = await db
 *   .readQuery('select setting from pg_settings where name = $1', ['no_such_setting'])
 *   .then(collectOne(Setting, { optional: true }));
 * console.log(none); // undefined
 * await db.close();
 * ```
 */
export function collectOne<T>(schema: z.ZodType<T>): (result: Rows) => T;
export function collectOne<T>(
  schema: z.ZodType<T>,
  opts: { optional: true },
): (result: Rows) => T | undefined;
export function collectOne<T>(
  schema: z.ZodType<T>,
  opts?: { optional?: boolean },
): (result: Rows) => T | undefined {
  return (result) => {
    const rows = rowsOf(result);
    if (rows.length === 0) {
      if (opts?.optional) return undefined;
      throw new DbxError('DBX_NO_ROWS', 'the query returned no rows');
    }
    return parseRow(schema, rows[0], 0);
  };
}
