/**
 * Which tables the writes of one connection touched: better-sqlite3 has no update hook, so the
 * hook is built from SQLite's own parts. A JS function registered on the connection
 * (`db.function`) is called by TEMP triggers (AFTER INSERT/UPDATE/DELETE, one set per watched
 * table). TEMP triggers live in the connection's temp schema only: nothing is written to the
 * database file, other connections and processes never see them, and the client's own trigger
 * bookkeeping (which reads the main schema) is not disturbed. They fire for every write made on
 * that connection, by any code: the app's statements, jobs of a write coordinator, the client's
 * own small transactions, cascades and other triggers' writes.
 *
 * The function only records the table; listeners are told once the synchronous work that wrote
 * has returned (a microtask), so a transaction is committed (or rolled back) before anyone reads.
 * A rolled-back write is reported too: a watcher re-runs and finds its result unchanged.
 *
 * Writes made on other connections (the client's apply connection, other processes) do not fire
 * TEMP triggers: the client reports its own through `applied` events, and other processes'
 * through their change feed (dbproxy) or `notifyLocalChange()`.
 */
import type { SqliteDb } from '../writer-types.js';

const FUNCTION_NAME = 'x_oversync_touched';

type Listener = (tables: ReadonlySet<string>) => void;

/** A connection that can host the hook: better-sqlite3's `function` is not in `SqliteDb`. */
type HookableDb = SqliteDb & {
  function(name: string, options: { deterministic?: boolean }, fn: (table: unknown) => unknown): unknown;
};

const hooks = new WeakMap<object, WriteHook>();

function quote(id: string): string {
  return `"${id.replaceAll('"', '""')}"`;
}

export class WriteHook {
  readonly #db: HookableDb;
  readonly #listeners = new Set<Listener>();
  /** Table key → how many holders asked for its triggers. */
  readonly #tables = new Map<string, number>();
  #touched = new Set<string>();
  #flushQueued = false;

  private constructor(db: HookableDb) {
    this.#db = db;
    db.function(FUNCTION_NAME, { deterministic: false }, (table) => {
      this.#touched.add(String(table));
      if (!this.#flushQueued) {
        this.#flushQueued = true;
        queueMicrotask(() => this.#flush());
      }
      return null;
    });
  }

  /** The connection's hook (one per connection), or undefined when it cannot have one. */
  static of(db: SqliteDb): WriteHook | undefined {
    const existing = hooks.get(db);
    if (existing) return existing;
    if (typeof (db as Partial<HookableDb>).function !== 'function' || !db.open) return undefined;
    const hook = new WriteHook(db as HookableDb);
    hooks.set(db, hook);
    return hook;
  }

  #flush(): void {
    this.#flushQueued = false;
    const touched = this.#touched;
    this.#touched = new Set();
    for (const l of this.#listeners) l(touched);
  }

  /** Calls `listener` with the tables touched by each burst of writes; returns the unsubscribe. */
  on(listener: Listener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Makes writes to `tables` (keys as `tableKey` makes them) reported; returns what releases them.
   * Tables of SQLite itself (`sqlite_*`) cannot have triggers and are skipped. Runs synchronously,
   * so it can run inside the read that found the tables.
   */
  track(tables: Iterable<string>): () => void {
    const added: string[] = [];
    for (const key of tables) {
      if (key.startsWith('sqlite_') || key.includes('.sqlite_')) continue;
      const n = this.#tables.get(key) ?? 0;
      if (n === 0 && !this.#install(key)) continue;
      this.#tables.set(key, n + 1);
      added.push(key);
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const key of added) {
        const n = (this.#tables.get(key) ?? 1) - 1;
        if (n > 0) this.#tables.set(key, n);
        else {
          this.#tables.delete(key);
          this.#drop(key);
        }
      }
    };
  }

  #names(key: string): { target: string; triggers: Array<[string, string]> } {
    const dot = key.indexOf('.');
    const schema = dot < 0 ? 'main' : key.slice(0, dot);
    const table = dot < 0 ? key : key.slice(dot + 1);
    const base = `x_oversync_watch_${schema}_${table}`;
    return {
      target: `${quote(schema)}.${quote(table)}`,
      triggers: [
        [quote(`${base}_ai`), 'INSERT'],
        [quote(`${base}_au`), 'UPDATE'],
        [quote(`${base}_ad`), 'DELETE'],
      ],
    };
  }

  #install(key: string): boolean {
    const db = this.#db;
    if (!db.open) return false;
    const { target, triggers } = this.#names(key);
    const literal = `'${key.replaceAll("'", "''")}'`;
    try {
      for (const [name, op] of triggers) {
        db.exec(
          `CREATE TEMP TRIGGER IF NOT EXISTS ${name} AFTER ${op} ON ${target} BEGIN SELECT ${FUNCTION_NAME}(${literal}); END`,
        );
      }
      return true;
    } catch {
      // e.g. a table dropped since the query was planned, or a read-only connection: no notices
      return false;
    }
  }

  #drop(key: string): void {
    const db = this.#db;
    if (!db.open) return;
    for (const [name] of this.#names(key).triggers) {
      try {
        db.exec(`DROP TRIGGER IF EXISTS temp.${name}`);
      } catch {
        // the connection is busy or gone: the trigger goes with the connection
      }
    }
  }
}
