import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type { Logger } from '../options.js';
import type { SqliteDatabase } from '../sqlite.js';

/**
 * Background WAL checkpoints. Left to itself, SQLite checkpoints inside the COMMIT that pushes the
 * WAL past `wal_autocheckpoint` pages (1000): under synchronous = NORMAL that COMMIT fsyncs the WAL
 * (every frame written since the last checkpoint) and then the database file, and every caller of
 * that batch waits for the disk. Under sustained load that was about a seventh of the writer's time.
 *
 * Here a worker thread with its own connection to the same file runs `PRAGMA
 * wal_checkpoint(PASSIVE)` every `intervalMs` (backing off to 10× that while the WAL does not grow).
 * A passive checkpoint never blocks the writer, and the writer never waits for it. The writer's own
 * `wal_autocheckpoint` is raised to `writerFallbackPages`: it still checkpoints if the worker falls
 * behind, and that checkpoint finds most frames already copied. It also lets the WAL restart from
 * its beginning under continuous load (a passive checkpoint racing new commits never catches up on
 * its own). The writer's setting is restored on stop.
 *
 * The worker loads better-sqlite3, resolved from this package, and only when it is the very module
 * the coordinator's database was made by: two copies of SQLite in one process would not see each
 * other's POSIX locks on the file. Otherwise nothing starts and SQLite checkpoints as before.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const base = workerData.intervalMs;
const max = base * 10;
let db = null;
let timer = null;
let delay = base;
let lastLog = -1;
let reported = false;
function tick() {
  timer = null;
  try {
    if (db === null) db = new Database(workerData.path, { fileMustExist: true });
    const r = db.pragma('wal_checkpoint(PASSIVE)')[0];
    delay = r.log === lastLog ? Math.min(max, delay * 2) : base;
    lastLog = r.log;
    reported = false;
  } catch (e) {
    if (!reported) parentPort.postMessage({ kind: 'error', message: String(e && e.message), code: e && e.code });
    reported = true;
    delay = max;
  }
  timer = setTimeout(tick, delay);
}
parentPort.on('message', () => {
  if (timer !== null) clearTimeout(timer);
  timer = null;
  try {
    if (db !== null) db.close();
  } finally {
    parentPort.postMessage({ kind: 'closed' });
    parentPort.close();
  }
});
timer = setTimeout(tick, base);
`;

/** How long stop() waits for the worker to close its connection before it terminates the thread. */
const STOP_TIMEOUT_MS = 2_000;

function sameDriver(db: SqliteDatabase): string | null {
  try {
    const require = createRequire(import.meta.url);
    const driver = require.resolve('better-sqlite3');
    const Database: unknown = require(driver);
    return Object.getPrototypeOf(db)?.constructor === Database ? driver : null;
  } catch {
    return null; // better-sqlite3 is not resolvable from here
  }
}

export class BackgroundCheckpointer {
  readonly #db: SqliteDatabase;
  readonly #log: Logger;
  readonly #worker: Worker;
  readonly #restoreAutocheckpoint: number;
  readonly #exited: Promise<void>;
  #stopped: Promise<void> | null = null;

  private constructor(db: SqliteDatabase, log: Logger, worker: Worker, restore: number) {
    this.#db = db;
    this.#log = log;
    this.#worker = worker;
    this.#restoreAutocheckpoint = restore;
    this.#exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    worker.on('message', (m: { kind: string; message?: string; code?: string }) => {
      if (m.kind === 'error') {
        log.warn(
          { err: { message: m.message, code: m.code } },
          'writecoordinator: background checkpoint failed',
        );
      }
    });
    worker.on('error', (err) => {
      log.warn({ err }, 'writecoordinator: the background checkpointer stopped; the writer checkpoints');
      this.#restore();
    });
    // Never keeps a process alive on its own: a coordinator left open must not hang the exit.
    worker.unref();
  }

  /** Starts a checkpointer for the database, or returns null when it cannot have one (see above). */
  static start(
    db: SqliteDatabase,
    opts: { intervalMs: number; writerFallbackPages: number },
    log: Logger,
  ): BackgroundCheckpointer | null {
    if (opts.intervalMs <= 0 || typeof db.name !== 'string' || db.name === '' || db.name === ':memory:') {
      return null;
    }
    const driver = sameDriver(db);
    if (driver === null) {
      log.debug(
        {},
        'writecoordinator: no background checkpointer (database not opened by better-sqlite3 from here)',
      );
      return null;
    }
    const restore = Number(db.pragma('wal_autocheckpoint', { simple: true }));
    let worker: Worker;
    try {
      worker = new Worker(WORKER_SOURCE, {
        eval: true,
        workerData: { driver, path: db.name, intervalMs: opts.intervalMs },
      });
    } catch (err) {
      log.warn({ err }, 'writecoordinator: could not start the background checkpointer');
      return null;
    }
    db.pragma(`wal_autocheckpoint = ${Math.max(opts.writerFallbackPages, restore)}`);
    return new BackgroundCheckpointer(db, log, worker, restore);
  }

  #restore(): void {
    try {
      if (this.#db.open) this.#db.pragma(`wal_autocheckpoint = ${this.#restoreAutocheckpoint}`);
    } catch (err) {
      this.#log.warn({ err }, 'writecoordinator: could not restore wal_autocheckpoint');
    }
  }

  /** Closes the worker's connection and ends the thread; restores the writer's wal_autocheckpoint. Idempotent. */
  stop(): Promise<void> {
    if (this.#stopped !== null) return this.#stopped;
    this.#restore();
    const worker = this.#worker;
    const timer = setTimeout(() => {
      void worker.terminate();
    }, STOP_TIMEOUT_MS);
    worker.postMessage('stop'); // a no-op when the thread has already ended
    this.#stopped = this.#exited.then(() => clearTimeout(timer));
    return this.#stopped;
  }
}
