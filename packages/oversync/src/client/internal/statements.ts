import type { Statement } from 'better-sqlite3';
import type { SqliteDb } from '../writer-types.js';

const cache = new WeakMap<SqliteDb, Map<string, Statement>>();

/** A prepared statement, cached per connection. */
export function stmt(db: SqliteDb, sql: string): Statement {
  let m = cache.get(db);
  if (!m) {
    m = new Map();
    cache.set(db, m);
  }
  let s = m.get(sql);
  if (!s) {
    s = db.prepare(sql) as Statement;
    m.set(sql, s);
  }
  return s;
}
