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
 * Throws DBX_ROW_INVALID (with the zod issues) on the first row that does not match.
 */
export function collect<T>(schema: z.ZodType<T>): (result: Rows) => T[] {
  return (result) => rowsOf(result).map((row, i) => parseRow(schema, row, i));
}

/**
 * Validates the single row of a result: throws DBX_NO_ROWS when there is none (use
 * `collectOne(schema, { optional: true })` to get undefined instead).
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
