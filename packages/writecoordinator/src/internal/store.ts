import { WriteCoordinatorError } from '../errors.js';
import type { SqliteDatabase, SqliteStatement } from '../sqlite.js';

/**
 * Tables owned by the package. Their names start with `_x_wc_` so they never collide with an app's.
 * This one holds the commit sequence (key `seq`), the fencing epoch (key `fence`) and the package's
 * own bookkeeping, one integer per key.
 */
export const META_TABLE = '_x_wc_meta';
/**
 * The idempotency table: one row per committed job submitted with a `requestId` (its JSON result,
 * the sequence it committed at and when), written in the job's own transaction and pruned by
 * `idempotency.maxAgeMs` and `idempotency.maxEntries`.
 */
export const REQUESTS_TABLE = '_x_wc_requests';
/**
 * The commit guard: every batch transaction holds one row here whose deferred foreign key points at
 * a row that does not exist, and deletes it just before its own COMMIT. Until then SQLite refuses
 * any COMMIT or END (SQLITE_CONSTRAINT_FOREIGNKEY) and the transaction stays open, so a job cannot
 * commit the batch; a job's ROLLBACK takes the row with it, which the check after each job sees.
 */
export const GUARD_TABLE = '_x_wc_guard';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS ${META_TABLE} (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO ${META_TABLE} (key, value) VALUES ('seq', 0);
INSERT OR IGNORE INTO ${META_TABLE} (key, value) VALUES ('fence', 0);
INSERT OR IGNORE INTO ${META_TABLE} (key, value) VALUES ('mark', 0);
CREATE TABLE IF NOT EXISTS ${REQUESTS_TABLE} (
  request_id TEXT PRIMARY KEY,
  result_json TEXT,
  seq INTEGER NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ${REQUESTS_TABLE}_created_at ON ${REQUESTS_TABLE} (created_at);
CREATE TABLE IF NOT EXISTS ${GUARD_TABLE} (
  id INTEGER PRIMARY KEY,
  missing INTEGER REFERENCES ${GUARD_TABLE} (id) DEFERRABLE INITIALLY DEFERRED
);
DELETE FROM ${GUARD_TABLE};
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
  /**
   * Reads `foreign_keys` (the commit guard depends on it being ON). A read, not `= ON`: setting a
   * flag pragma expires every prepared statement of the connection, even to the value it has.
   */
  readForeignKeys: SqliteStatement;
  /** Inserts the guard row (right after BEGIN): from then on no COMMIT succeeds until disarmGuard. */
  armGuard: SqliteStatement;
  /** The guard row, or nothing when a ROLLBACK took it away. */
  guardArmed: SqliteStatement;
  /** Deletes the guard row, just before the coordinator's own COMMIT. */
  disarmGuard: SqliteStatement;
  /**
   * Bumps the stored sequence (never an in-memory copy, so no sequence is ever reused) unless the
   * stored fencing epoch is above the bound one; returns `{ value }`, or nothing when fenced.
   */
  nextSeq: SqliteStatement;
  readFence: SqliteStatement;
  writeFence: SqliteStatement;
  /** A per-job marker written inside the job's savepoint (detects a job's ROLLBACK TO of it). */
  writeMark: SqliteStatement;
  readMark: SqliteStatement;
  findRequest: SqliteStatement;
  /**
   * findRequest and the guard check in one statement (the lookup a job with a requestId makes
   * anyway): no row when the guard row is gone, else `{ armed, result_json, seq }` where `seq` is
   * null when no record exists.
   */
  findRequestGuarded: SqliteStatement;
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
    readForeignKeys: db.prepare('PRAGMA foreign_keys'),
    armGuard: db.prepare(`INSERT INTO ${GUARD_TABLE} (id, missing) VALUES (1, 0)`),
    guardArmed: db.prepare(`SELECT id FROM ${GUARD_TABLE} WHERE id = 1`),
    disarmGuard: db.prepare(`DELETE FROM ${GUARD_TABLE} WHERE id = 1`),
    nextSeq: db.prepare(
      `UPDATE ${META_TABLE} SET value = value + 1 WHERE key = 'seq' AND (SELECT value FROM ${META_TABLE} WHERE key = 'fence') <= ? RETURNING value`,
    ),
    readFence: db.prepare(`SELECT value FROM ${META_TABLE} WHERE key = 'fence'`),
    writeFence: db.prepare(`UPDATE ${META_TABLE} SET value = ? WHERE key = 'fence'`),
    writeMark: db.prepare(`UPDATE ${META_TABLE} SET value = ? WHERE key = 'mark'`),
    readMark: db.prepare(`SELECT value FROM ${META_TABLE} WHERE key = 'mark'`),
    findRequest: db.prepare(`SELECT result_json, seq FROM ${REQUESTS_TABLE} WHERE request_id = ?`),
    findRequestGuarded: db.prepare(
      `SELECT g.id AS armed, r.result_json, r.seq FROM ${GUARD_TABLE} AS g LEFT JOIN ${REQUESTS_TABLE} AS r ON r.request_id = ? WHERE g.id = 1`,
    ),
    recordRequest: db.prepare(
      `INSERT INTO ${REQUESTS_TABLE} (request_id, result_json, seq, created_at) VALUES (?, ?, ?, ?)`,
    ),
    pruneByAge: db.prepare(`DELETE FROM ${REQUESTS_TABLE} WHERE created_at < ?`),
    pruneByCount: db.prepare(
      `DELETE FROM ${REQUESTS_TABLE} WHERE rowid <= (SELECT rowid FROM ${REQUESTS_TABLE} ORDER BY rowid DESC LIMIT 1 OFFSET ?)`,
    ),
  };
}

function readValue(stmt: SqliteStatement): number {
  const row = stmt.get() as { value: number | bigint } | undefined;
  return row === undefined ? 0 : Number(row.value);
}

export function readSeq(st: Statements): number {
  return readValue(st.readSeq);
}

export function readMark(st: Statements): number {
  return readValue(st.readMark);
}

/**
 * Claims the file for a writer of `epoch` (in its own BEGIN IMMEDIATE transaction): refuses with
 * FENCED when a writer of a higher epoch already claimed it, else stores `epoch` as the fence.
 */
export function claimFence(db: SqliteDatabase, st: Statements, epoch: number): void {
  st.begin.run();
  try {
    const stored = readValue(st.readFence);
    if (stored > epoch) throw fencedError(epoch, stored);
    if (stored < epoch) st.writeFence.run(epoch);
    st.commit.run();
  } finally {
    if (db.inTransaction) st.rollback.run();
  }
}

export function fencedError(epoch: number, stored: number | null): WriteCoordinatorError {
  return new WriteCoordinatorError(
    'WRITECOORDINATOR_FENCED',
    'a writer of a newer fencing epoch owns the database; this coordinator may no longer commit',
    { details: { fencingEpoch: epoch, storedFence: stored, applied: false } },
  );
}
