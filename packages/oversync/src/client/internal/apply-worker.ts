/**
 * The apply connection of `TxRunner.sliced`, owned by a worker thread. The main thread drives it
 * statement by statement through a synchronous call (the request is posted to the worker, the
 * main thread waits on a shared flag for the answer, `receiveMessageOnPort` reads it), so the
 * client's generators run unchanged against it. Only the end of a long transaction is awaited
 * asynchronously: its COMMIT runs in the worker while the event loop turns. The COMMIT of a long
 * transaction is work that grows with it (SQLite rewrites the checksum of every WAL frame the
 * transaction wrote since it first overwrote a spilled page: ~200 ms of CPU for a 1M-row hydrate),
 * and it is the one step of the apply that cannot be cut into slices.
 */
import { createRequire } from 'node:module';
import {
  MessageChannel,
  type MessagePort,
  type ResourceLimits,
  receiveMessageOnPort,
  Worker,
} from 'node:worker_threads';
import type { SqliteDb } from '../writer-types.js';

const WORKER_SOURCE = `
const { workerData, receiveMessageOnPort } = require('node:worker_threads');
const Database = require(workerData.lib);
const { port, flags } = workerData;
const f = new Int32Array(flags);
const toBuffer = (v) => (v instanceof Uint8Array && !Buffer.isBuffer(v) ? Buffer.from(v.buffer, v.byteOffset, v.byteLength) : v);
let db;
const stmts = new Map();
function handle(m) {
  switch (m.op) {
    case 'open':
      db = new Database(m.file, { fileMustExist: true, timeout: m.timeout });
      for (const p of m.pragmas) db.pragma(p);
      return undefined;
    case 'exec':
      db.exec(m.sql);
      return undefined;
    case 'pragma':
      return db.pragma(m.sql, m.simple ? { simple: true } : undefined);
    case 'state':
      return { inTransaction: db.inTransaction, open: db.open };
    case 'prepare': {
      let s = stmts.get(m.sql);
      if (!s) {
        s = db.prepare(m.sql);
        stmts.set(m.sql, s);
      }
      return s.reader;
    }
    case 'batch':
      return m.ops.map(handle);
    case 'close':
      stmts.clear();
      if (db && db.open) db.close();
      return undefined;
    default: {
      let s = stmts.get(m.sql);
      if (!s) {
        s = db.prepare(m.sql);
        stmts.set(m.sql, s);
      }
      if (s.reader) {
        if (m.raw) s.raw(true);
        else if (m.pluck) s.pluck(true);
        else s.raw(false).pluck(false);
      }
      const args = m.args.map(toBuffer);
      return m.op === 'run' ? s.run(...args) : m.op === 'get' ? s.get(...args) : s.all(...args);
    }
  }
}
const fail = (e) => ({ ok: false, name: e && e.name, message: String(e && e.message), code: e && e.code, sqlite: e instanceof Database.SqliteError });
try {
  for (;;) {
    Atomics.wait(f, 0, 0);
    Atomics.store(f, 0, 0);
    const got = receiveMessageOnPort(port);
    if (!got) continue;
    const m = got.message;
    let reply;
    try {
      reply = { ok: true, value: handle(m) };
    } catch (e) {
      reply = fail(e);
    }
    port.postMessage(reply);
    Atomics.store(f, 1, 1);
    Atomics.notify(f, 1);
    if (m.op === 'close') break;
  }
} catch (e) {
  // never leave the main thread waiting for an answer
  port.postMessage(fail(e));
  Atomics.store(f, 1, 1);
  Atomics.notify(f, 1);
}
port.close();`;

/**
 * The thread between the main thread and the apply worker: it starts the worker and, when the
 * worker ends (closed, terminated, out of memory), marks it ended in `flags[2]` and wakes a call
 * waiting in `flags[1]`. The main thread cannot do that itself while a synchronous call blocks it
 * (its 'exit' event would wait for the call that waits for it); this thread's event loop is free.
 * Terminating it ends the worker too.
 */
const SUPERVISOR_SOURCE = `
const { workerData, Worker } = require('node:worker_threads');
const { source, lib, port, flags, resourceLimits } = workerData;
const f = new Int32Array(flags);
const w = new Worker(source, { eval: true, workerData: { lib, port, flags }, transferList: [port], resourceLimits });
w.on('error', () => {});
w.on('exit', () => {
  Atomics.store(f, 2, 1);
  Atomics.store(f, 1, 1);
  Atomics.notify(f, 1);
});`;

interface Request {
  op: 'open' | 'exec' | 'pragma' | 'state' | 'prepare' | 'close' | 'run' | 'get' | 'all' | 'batch';
  ops?: Request[];
  sql?: string;
  args?: unknown[];
  pluck?: boolean;
  raw?: boolean;
  simple?: boolean;
  file?: string;
  timeout?: number;
  pragmas?: string[];
}
type Reply =
  | { ok: true; value: unknown }
  | { ok: false; name?: string; message: string; code?: string; sqlite: boolean };

/** `Atomics.waitAsync` (Node ≥ 16; typed in TypeScript's ES2024 lib, not in this package's). */
const waitAsync = (
  Atomics as unknown as {
    waitAsync(
      a: Int32Array,
      i: number,
      v: number,
    ):
      | { async: false; value: 'not-equal' | 'timed-out' }
      | { async: true; value: Promise<'ok' | 'timed-out'> };
  }
).waitAsync;

let sqliteLib: string | null | undefined;
function resolveSqlite(): string | null {
  if (sqliteLib === undefined) {
    try {
      sqliteLib = createRequire(import.meta.url).resolve('better-sqlite3');
    } catch {
      sqliteLib = null;
    }
  }
  return sqliteLib;
}

/** BLOBs come back from the worker as Uint8Array: the client's code expects Buffers. */
function buffers(v: unknown): unknown {
  if (v instanceof Uint8Array)
    return Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const x = v[i];
      if (typeof x === 'object' && x !== null) v[i] = buffers(x);
    }
    return v;
  }
  if (typeof v === 'object' && v !== null) {
    const o = v as Record<string, unknown>;
    for (const k in o) {
      const x = o[k];
      if (typeof x === 'object' && x !== null) o[k] = buffers(x);
    }
  }
  return v;
}

/** A prepared statement of the worker's connection (the subset of better-sqlite3's the client uses). */
class WorkerStatement {
  readonly source: string;
  readonly reader: boolean;
  readonly #c: WorkerConnection;
  #pluck = false;
  #raw = false;
  constructor(c: WorkerConnection, source: string, reader: boolean) {
    this.#c = c;
    this.source = source;
    this.reader = reader;
  }
  pluck(on = true): this {
    this.#pluck = on;
    if (on) this.#raw = false;
    return this;
  }
  raw(on = true): this {
    this.#raw = on;
    if (on) this.#pluck = false;
    return this;
  }
  #call(op: 'run' | 'get' | 'all', args: unknown[]): unknown {
    return this.#c.call({ op, sql: this.source, args, pluck: this.#pluck, raw: this.#raw });
  }
  /** Queued with the next call (see `WorkerConnection.queue`); its result is read on demand. */
  run(...args: unknown[]): RunResult {
    return this.#c.queue({ op: 'run', sql: this.source, args });
  }
  get(...args: unknown[]): unknown {
    return buffers(this.#call('get', args));
  }
  all(...args: unknown[]): unknown[] {
    return buffers(this.#call('all', args)) as unknown[];
  }
}

interface RunResult {
  readonly changes: number;
  readonly lastInsertRowid: number | bigint;
}
/** Writes queued before they go to the worker in one call. */
const MAX_QUEUED = 256;

type ErrorCtor = new (message: string, code: string) => Error;

/**
 * A connection to the same database file, opened and used in a worker thread; every call but
 * `execAsync` waits for the worker's answer. Use `WorkerConnection.open`.
 */
export class WorkerConnection implements SqliteDb {
  readonly name: string;
  readonly memory = false;
  readonly #worker: Worker;
  readonly #port: MessagePort;
  readonly #flags: Int32Array;
  readonly #sqliteError: ErrorCtor | undefined;
  #open = true;
  #busy = false;
  #queued: Request[] = [];
  #slots: Array<{ value?: RunResult }> = [];
  /** Settles when the last awaited call (`#request`) has its answer, whatever the answer. */
  #lastRequest: Promise<unknown> = Promise.resolve();

  private constructor(
    file: string,
    lib: string,
    sqliteError: ErrorCtor | undefined,
    resourceLimits: ResourceLimits | undefined,
  ) {
    this.name = file;
    this.#sqliteError = sqliteError;
    const { port1, port2 } = new MessageChannel();
    // [0] a request is posted, [1] its answer is, [2] the worker has ended (set by the supervisor)
    const flags = new SharedArrayBuffer(12);
    this.#flags = new Int32Array(flags);
    this.#port = port1;
    this.#worker = new Worker(SUPERVISOR_SOURCE, {
      eval: true,
      workerData: { source: WORKER_SOURCE, lib, port: port2, flags, resourceLimits },
      transferList: [port2],
    });
    // unref'd except while the main thread awaits it (see `#request`)
    this.#worker.unref();
    this.#worker.on('error', () => {
      this.#open = false;
    });
    // A worker that ends while a call is awaited (terminated, or killed by an error outside its
    // own handling) never answers it: the wait is woken here, and that call then throws ("the
    // worker gave no answer") instead of waiting for ever; later calls find the connection closed.
    this.#worker.on('exit', () => {
      this.#open = false;
      Atomics.store(this.#flags, 2, 1);
      Atomics.store(this.#flags, 1, 1);
      Atomics.notify(this.#flags, 1);
    });
  }

  /**
   * Starts the worker and opens `file` there with `pragmas`; resolves to undefined when the
   * worker cannot run it (the caller then runs the work on its own connection).
   */
  static async open(
    file: string,
    opts: {
      timeout: number;
      pragmas: string[];
      sqliteError?: ErrorCtor;
      /** The worker's (none by default: the process's). */
      resourceLimits?: ResourceLimits;
    },
  ): Promise<WorkerConnection | undefined> {
    const lib = resolveSqlite();
    if (lib === null) return undefined;
    let c: WorkerConnection;
    try {
      c = new WorkerConnection(file, lib, opts.sqliteError, opts.resourceLimits);
      // the worker is up (and its thread started) before the first call waits for it
      c.#worker.ref();
      try {
        await new Promise<void>((resolve, reject) => {
          c.#worker.once('online', resolve);
          c.#worker.once('error', reject);
        });
      } finally {
        c.#worker.unref();
      }
      await c.#request({ op: 'open', file, timeout: opts.timeout, pragmas: opts.pragmas });
      return c;
    } catch {
      return undefined;
    }
  }

  get open(): boolean {
    return this.#open && Atomics.load(this.#flags, 2) === 0;
  }
  get inTransaction(): boolean {
    if (!this.#open) return false;
    return (this.call({ op: 'state' }) as { inTransaction: boolean }).inTransaction;
  }

  #post(m: Request): void {
    if (!this.#open) throw new TypeError('The database connection is not open');
    if (this.#busy) throw new Error('apply connection: a call is already running in the worker');
    Atomics.store(this.#flags, 1, 0);
    // Checked after the reset: a worker that ends from here on wakes the wait (its supervisor sets
    // [2], then [1]); one that ended before is seen here, even before this thread's 'exit' event.
    if (Atomics.load(this.#flags, 2) !== 0) {
      this.#open = false;
      throw new TypeError('The database connection is not open');
    }
    this.#port.postMessage(m);
    Atomics.store(this.#flags, 0, 1);
    Atomics.notify(this.#flags, 0);
  }

  #result(): unknown {
    const got = receiveMessageOnPort(this.#port);
    if (!got) throw new Error('apply connection: the worker gave no answer');
    const r = got.message as Reply;
    if (r.ok) return r.value;
    const e =
      r.sqlite && this.#sqliteError ? new this.#sqliteError(r.message, r.code ?? '') : new Error(r.message);
    if (!r.sqlite && r.name) e.name = r.name;
    if (r.code !== undefined) (e as { code?: string }).code = r.code;
    throw e;
  }

  /**
   * Queues a write whose result the caller may never read: it goes to the worker with the next
   * call (a read, an `exec`, COMMIT) or once `MAX_QUEUED` are waiting, so a slice's writes cost one
   * wake of the worker instead of one each. Order is kept, and an error of a queued write is
   * thrown by the call that sends it, inside the same transaction (which then rolls back).
   */
  queue(m: Request): RunResult {
    const slot: { value?: RunResult } = {};
    this.#queued.push(m);
    this.#slots.push(slot);
    if (this.#queued.length >= MAX_QUEUED) this.call({ op: 'state' });
    const read = (): RunResult => {
      if (!slot.value) this.call({ op: 'state' });
      if (!slot.value) throw new Error('apply connection: the statement did not run (an earlier one failed)');
      return slot.value;
    };
    return {
      get changes() {
        return read().changes;
      },
      get lastInsertRowid() {
        return read().lastInsertRowid;
      },
    };
  }

  /** Drops the queued writes (before a ROLLBACK: they would be undone anyway). */
  discardQueued(): void {
    this.#queued = [];
    this.#slots = [];
  }

  /** Takes the queued writes (to send them before `m`), or returns `m` alone. */
  #withQueued(m: Request): { m: Request; slots: Array<{ value?: RunResult }> } {
    if (this.#queued.length === 0) return { m, slots: [] };
    const ops = [...this.#queued, m];
    const slots = this.#slots;
    this.#queued = [];
    this.#slots = [];
    return { m: { op: 'batch', ops }, slots };
  }

  #settle(value: unknown, slots: Array<{ value?: RunResult }>): unknown {
    if (slots.length === 0) return value;
    const all = value as unknown[];
    for (let i = 0; i < slots.length; i++) (slots[i] as { value?: RunResult }).value = all[i] as RunResult;
    return all[slots.length];
  }

  /** One call (with the queued writes before it), waiting synchronously for the worker's answer. */
  call(request: Request): unknown {
    const { m, slots } = this.#withQueued(request);
    this.#post(m);
    while (Atomics.wait(this.#flags, 1, 0) === 'ok' && Atomics.load(this.#flags, 1) === 0) {}
    return this.#settle(this.#result(), slots);
  }

  /**
   * `get` of one statement for each argument list, in order, in one call (one wake of the worker
   * for a page of lookups instead of one per key).
   */
  getMany(sql: string, argLists: ReadonlyArray<readonly unknown[]>, pluck: boolean): unknown[] {
    const ops: Request[] = argLists.map((args) => ({ op: 'get', sql, args: [...args], pluck }));
    return buffers(this.call({ op: 'batch', ops })) as unknown[];
  }

  /**
   * Resolves once no awaited call runs in the worker: a caller that left one in flight (a hydrate
   * sends a batch and builds the next meanwhile) and then failed waits for it before it rolls back.
   */
  async idle(): Promise<void> {
    await this.#lastRequest;
  }

  /** One call (with the queued writes before it), awaited: the event loop turns meanwhile. */
  #request(request: Request): Promise<unknown> {
    const p = this.#requestNow(request);
    this.#lastRequest = p.catch(() => undefined);
    return p;
  }

  async #requestNow(request: Request): Promise<unknown> {
    const { m, slots } = this.#withQueued(request);
    this.#post(m);
    this.#busy = true;
    // a pending Atomics.waitAsync does not keep the process alive: the worker does meanwhile
    this.#worker.ref();
    try {
      for (;;) {
        const w = waitAsync(this.#flags, 1, 0);
        if (w.async) await w.value;
        if (Atomics.load(this.#flags, 1) !== 0) break;
      }
    } finally {
      this.#busy = false;
      this.#worker.unref();
    }
    return this.#settle(this.#result(), slots);
  }

  /**
   * `run` of statements, in order, in the worker while the event loop turns (with the queued
   * writes before them): the set-based statements of a stage-free hydrate run there while this
   * thread parses and checks the next page (see `runWrites` in table-ops.ts). One request for
   * them all, so the worker does not wait for this thread between them.
   */
  async runAsync(statements: ReadonlyArray<{ sql: string; args: unknown[] }>): Promise<RunResult[]> {
    const ops: Request[] = statements.map((s) => ({ op: 'run', sql: s.sql, args: s.args }));
    return (await this.#request({ op: 'batch', ops })) as RunResult[];
  }

  /** `exec` run in the worker while the event loop turns (a long transaction's COMMIT). */
  async execAsync(sql: string): Promise<void> {
    await this.#request({ op: 'exec', sql });
  }

  prepare(sql: string): never {
    const reader = this.call({ op: 'prepare', sql }) as boolean;
    return new WorkerStatement(this, sql, reader) as never;
  }
  exec(sql: string): this {
    this.call({ op: 'exec', sql });
    return this;
  }
  pragma(source: string, options?: { simple?: boolean }): unknown {
    return buffers(this.call({ op: 'pragma', sql: source, simple: options?.simple === true }));
  }
  transaction(): never {
    throw new TypeError('the apply connection runs one transaction of TxRunner.sliced');
  }
  /**
   * Ends the worker at once, whatever it is running (its SQLite connection goes with it, and so
   * does an open transaction of it, rolled back): an awaited call rejects, a later one finds the
   * connection closed. For giving up on a worker that is stuck; `close()` is the orderly end.
   */
  async terminate(): Promise<void> {
    this.#open = false;
    await this.#worker.terminate();
  }

  close(): void {
    if (!this.#open) return;
    this.#queued = [];
    this.#slots = [];
    try {
      this.call({ op: 'close' });
    } catch {
      // the worker is gone already
    }
    this.#open = false;
    this.#port.close();
  }
}
