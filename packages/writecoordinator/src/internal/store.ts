import { WriteCoordinatorError } from '../errors.js';
import type { SqliteDatabase, SqliteStatement } from '../types.js';

/** Tables owned by the package. Their names start with `_x_wc_` so they never collide with an app's. */
export const META_TABLE = '_x_wc_meta';
export const REQUESTS_TABLE = '_x_wc_requests';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS ${META_TABLE} (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO ${META_TABLE} (key, value) VALUES ('seq', 0);
CREATE TABLE IF NOT EXISTS ${REQUESTS_TABLE} (
  request_id TEXT PRIMARY KEY,
  result_json TEXT,
  seq INTEGER NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ${REQUESTS_TABLE}_created_at ON ${REQUESTS_TABLE} (created_at);
`;

export interface StoredRequest {
  result_json: string | null;
  seq: number;
}

/** Prepared statements for the writer loop; prepared once, reused for every batch. */
export interface Statements {
  begin: SqliteStatement;
  commit: SqliteStatement;
  rollback: SqliteStatement;
  savepoint: SqliteStatement;
  releaseSavepoint: SqliteStatement;
  rollbackToSavepoint: SqliteStatement;
  readSeq: SqliteStatement;
  writeSeq: SqliteStatement;
  findRequest: SqliteStatement;
  recordRequest: SqliteStatement;
  pruneByAge: SqliteStatement;
  pruneByCount: SqliteStatement;
}

function pragmaValue(db: SqliteDatabase, pragma: string): unknown {
  return db.pragma(pragma, { simple: true });
}

function badDatabase(
  message: string,
  details: Record<string, unknown>,
  cause?: unknown,
): WriteCoordinatorError {
  return new WriteCoordinatorError('WRITECOORDINATOR_BAD_DATABASE', message, { details, cause });
}

/** The `synchronous` pragma value for a durability level (NORMAL = 1, FULL = 2). */
export function synchronousFor(durability: 'normal' | 'full'): number {
  return durability === 'full' ? 2 : 1;
}

/**
 * Sets and checks the connection settings the coordinator relies on: WAL, `synchronous`,
 * `foreign_keys = ON` and a busy timeout. Throws BAD_DATABASE when the database cannot hold them.
 */
export function configureDatabase(
  db: SqliteDatabase,
  durability: 'normal' | 'full',
  busyTimeoutMs: number,
): void {
  if (!db.open) throw badDatabase('the database is closed', { name: db.name });
  if (db.readonly)
    throw badDatabase('the database is open read-only; the coordinator must write', { name: db.name });
  if (db.inTransaction) throw badDatabase('the database is inside a transaction', { name: db.name });
  try {
    db.pragma(`busy_timeout = ${busyTimeoutMs}`);
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${synchronousFor(durability)}`);
    db.pragma('foreign_keys = ON');
  } catch (e) {
    throw badDatabase('could not configure the database', { name: db.name }, e);
  }
  const journalMode = String(pragmaValue(db, 'journal_mode')).toLowerCase();
  if (journalMode !== 'wal') {
    throw badDatabase('the database is not in WAL mode (an in-memory database cannot be)', {
      name: db.name,
      journalMode,
    });
  }
  const checks: Array<[string, number]> = [
    ['synchronous', synchronousFor(durability)],
    ['foreign_keys', 1],
    ['busy_timeout', busyTimeoutMs],
  ];
  for (const [pragma, expected] of checks) {
    const actual = Number(pragmaValue(db, pragma));
    if (actual !== expected) throw badDatabase(`pragma ${pragma} did not take`, { pragma, expected, actual });
  }
}

/** Creates the package's tables (idempotent) and prepares every statement the loop uses. */
export function prepareStore(db: SqliteDatabase): Statements {
  try {
    db.exec(`BEGIN IMMEDIATE;${SCHEMA}COMMIT;`);
  } catch (e) {
    if (db.inTransaction) db.exec('ROLLBACK');
    throw badDatabase('could not create the coordinator tables', { name: db.name }, e);
  }
  return {
    begin: db.prepare('BEGIN IMMEDIATE'),
    commit: db.prepare('COMMIT'),
    rollback: db.prepare('ROLLBACK'),
    savepoint: db.prepare('SAVEPOINT x_wc_job'),
    releaseSavepoint: db.prepare('RELEASE x_wc_job'),
    rollbackToSavepoint: db.prepare('ROLLBACK TO x_wc_job'),
    readSeq: db.prepare(`SELECT value FROM ${META_TABLE} WHERE key = 'seq'`),
    writeSeq: db.prepare(`UPDATE ${META_TABLE} SET value = ? WHERE key = 'seq'`),
    findRequest: db.prepare(`SELECT result_json, seq FROM ${REQUESTS_TABLE} WHERE request_id = ?`),
    recordRequest: db.prepare(
      `INSERT INTO ${REQUESTS_TABLE} (request_id, result_json, seq, created_at) VALUES (?, ?, ?, ?)`,
    ),
    pruneByAge: db.prepare(`DELETE FROM ${REQUESTS_TABLE} WHERE created_at < ?`),
    pruneByCount: db.prepare(
      `DELETE FROM ${REQUESTS_TABLE} WHERE rowid <= (SELECT rowid FROM ${REQUESTS_TABLE} ORDER BY rowid DESC LIMIT 1 OFFSET ?)`,
    ),
  };
}

export function readSeq(st: Statements): number {
  const row = st.readSeq.get() as { value: number | bigint } | undefined;
  return row === undefined ? 0 : Number(row.value);
}
