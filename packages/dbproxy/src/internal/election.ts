/** The election lock itself (an SQLite file held EXCLUSIVE) and the epoch it persists. */
import Database from 'better-sqlite3';

/**
 * The election lock: an SQLite database next to the shared one, held with `locking_mode = EXCLUSIVE`
 * after a write. SQLite takes a POSIX advisory (fcntl) lock on it, which the OS drops when the holder
 * dies, so a crashed primary never leaves a stale lock; the file is never unlinked, so there is no
 * unlink-after-unlock race. The same database also persists the epoch, bumped by every promotion in
 * the very transaction that takes the lock.
 */
export interface ElectionLock {
  readonly path: string;
  /** The epoch this holder was promoted with (strictly greater than every earlier holder's). */
  readonly epoch: number;
  /** Releases the lock (closing the connection). Idempotent. */
  release(): void;
}

/** `<database>-dbproxy.lock`: keyed by the database's resolved real path. */
export function lockPathFor(resolvedDbPath: string): string {
  return `${resolvedDbPath}-dbproxy.lock`;
}

function isBusy(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED'));
}

/**
 * Tries once, without waiting. Returns the lock, or `null` when another process (or another
 * connection of this one) holds it. A failed attempt closes its connection, so it keeps no lock.
 */
export function tryAcquireElectionLock(lockPath: string): ElectionLock | null {
  const db = new Database(lockPath, { timeout: 0 });
  try {
    // Rollback journal (never WAL) so EXCLUSIVE locks the file itself.
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('BEGIN EXCLUSIVE');
  } catch (e) {
    db.close();
    if (isBusy(e)) return null;
    throw e;
  }
  let epoch: number;
  try {
    const mode = String(db.pragma('journal_mode', { simple: true })).toLowerCase();
    if (mode === 'wal')
      throw new Error(`election lock ${lockPath} is in WAL mode; delete it while no process runs`);
    db.exec(
      'CREATE TABLE IF NOT EXISTS election (id INTEGER PRIMARY KEY CHECK (id = 1), epoch INTEGER NOT NULL)',
    );
    db.exec('INSERT OR IGNORE INTO election (id, epoch) VALUES (1, 0)');
    db.exec('UPDATE election SET epoch = epoch + 1 WHERE id = 1');
    const row = db.prepare('SELECT epoch FROM election WHERE id = 1').get() as { epoch: number };
    epoch = Number(row.epoch);
    db.exec('COMMIT');
  } catch (e) {
    try {
      if (db.inTransaction) db.exec('ROLLBACK');
    } finally {
      db.close();
    }
    if (isBusy(e)) return null;
    throw e;
  }
  let released = false;
  return {
    path: lockPath,
    epoch,
    release() {
      if (released) return;
      released = true;
      db.close();
    },
  };
}

/** Reads the last epoch without taking the lock; `null` while someone holds it or it does not exist yet. */
export function peekEpoch(lockPath: string): number | null {
  try {
    const db = new Database(lockPath, { timeout: 0, readonly: true, fileMustExist: true });
    try {
      const row = db.prepare('SELECT epoch FROM election WHERE id = 1').get() as
        | { epoch: number }
        | undefined;
      return row === undefined ? null : Number(row.epoch);
    } finally {
      db.close();
    }
  } catch {
    return null;
  }
}
