/** This process as the primary of one epoch: database, coordinator, serving, publication, shutdown. */
import { timingSafeEqual } from 'node:crypto';
import diagnostics_channel from 'node:diagnostics_channel';
import { createWriteCoordinator, type SqliteDatabase, type WriteCoordinator } from '@x/writecoordinator';
import Database from 'better-sqlite3';
import { z } from 'zod';
import { type ElectionPhase, SERVE_CHANNEL } from '../channels.js';
import { wireError } from '../errors.js';
import type { Logger, ResolvedDbProxyOptions } from '../options.js';
import {
  type AuthMeta,
  type CommitPublication,
  changesParamsSchema,
  METHOD_DB_CHANGES,
  METHOD_DB_PING,
  METHOD_DB_WRITE,
  pingParamsSchema,
  TOPIC_BYE,
  TOPIC_COMMIT,
  TOPIC_HEARTBEAT,
  type WriteResultWire,
  writeParamsSchema,
} from '../protocol.js';
import { fromCoordinatorError } from './coordinator-errors.js';
import { RpcServer } from './rpc-server.js';
import {
  endpointsFor,
  newToken,
  type PrimaryInfo,
  readPrimaryInfo,
  removeEndpointFiles,
  removeQuietly,
  writeFileAtomic,
} from './runtime-dir.js';
import { type ResolvedWrite, resolveWrite } from './write-input.js';

const serveTrace = diagnostics_channel.tracingChannel(SERVE_CHANNEL);

/**
 * The proxy's write methods are registered with the coordinator under their names, so its commit
 * events name them. Their params are checked by `resolveWrite` (on every process alike, before
 * anything is queued or sent), so the coordinator passes them through as they are.
 */
const CHECKED_PARAMS = z.unknown();

/** What a primary needs of the proxy that promoted it. */
export interface PrimaryContext {
  readonly options: Readonly<ResolvedDbProxyOptions>;
  readonly log: Logger;
  readonly dbPath: string;
  readonly runtimeDir: string;
  readonly key: string;
  readonly infoPath: string;
  /** Publishes an election phase on the diagnostics channel. */
  phase(phase: ElectionPhase, epoch: number): void;
  /** A commit of this primary, for this process's own change feed. */
  onCommit(pub: CommitPublication): void;
  /** Requests served for other processes (kept by the proxy across epochs). */
  readonly served: { requests: number; errors: number };
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * This process as the primary of one epoch: the read-write connection and its write coordinator,
 * the RPC server other processes forward their writes to, the commit publications (PUB and a ring
 * for catch-up), the heartbeat and the info file that announces it.
 */
export class Primary {
  readonly epoch: number;
  readonly coordinator: WriteCoordinator;
  /** False once the proxy closes: new writes are refused with SHUTTING_DOWN. */
  accepting = true;
  readonly #ctx: PrimaryContext;
  readonly #db: Database.Database;
  readonly #token = newToken();
  readonly #server: RpcServer;
  readonly #ring: CommitPublication[] = [];
  /** requestId → instanceId of the writes forwarded by other processes, for their change events. */
  readonly #forwarded = new Map<string, string>();
  #heartbeat: NodeJS.Timeout | null = null;
  #unsubscribe: () => void = () => {};

  private constructor(
    ctx: PrimaryContext,
    epoch: number,
    db: Database.Database,
    coordinator: WriteCoordinator,
  ) {
    this.#ctx = ctx;
    this.epoch = epoch;
    this.#db = db;
    this.coordinator = coordinator;
    this.#server = new RpcServer((method, params) => this.#serve(method, params), ctx.log);
  }

  /**
   * Promotion, after the election lock is won: open the database (and `migrate`), open the
   * coordinator fenced by `epoch`, bind the endpoints, then announce them in the info file. On a
   * failure everything opened here is closed again and the error comes back.
   */
  static async open(ctx: PrimaryContext, epoch: number): Promise<Primary> {
    const o = ctx.options;
    const db = new Database(ctx.dbPath);
    let coordinator: WriteCoordinator | null = null;
    let primary: Primary | null = null;
    try {
      db.pragma('journal_mode = WAL');
      db.pragma(`busy_timeout = ${o.coordinator.busyTimeoutMs ?? o.readBusyTimeoutMs}`);
      if (o.migrate !== undefined) o.migrate(db as unknown as SqliteDatabase);
      ctx.phase('database-open', epoch);
      const c = o.coordinator;
      coordinator = createWriteCoordinator({
        database: db as unknown as SqliteDatabase,
        durability: o.durability,
        logger: o.logger,
        // A replaced primary (should it ever run again) cannot commit: the successor's epoch is higher.
        fencingEpoch: epoch,
        ...(c.queueSize === undefined ? {} : { queueSize: c.queueSize }),
        ...(c.maxBatchSize === undefined ? {} : { maxBatchSize: c.maxBatchSize }),
        ...(c.maxBatchDelayMs === undefined ? {} : { maxBatchDelayMs: c.maxBatchDelayMs }),
        ...(c.maxWaiting === undefined ? {} : { maxWaiting: c.maxWaiting }),
        ...(c.busyTimeoutMs === undefined ? {} : { busyTimeoutMs: c.busyTimeoutMs }),
        ...(c.idempotency === undefined
          ? {}
          : {
              idempotency: {
                ...(c.idempotency.maxAgeMs === undefined ? {} : { maxAgeMs: c.idempotency.maxAgeMs }),
                ...(c.idempotency.maxEntries === undefined ? {} : { maxEntries: c.idempotency.maxEntries }),
              },
            }),
      });
      for (const [name, def] of Object.entries(o.writes)) {
        const handler = def.handler;
        coordinator.register(name, CHECKED_PARAMS, (d, value) => handler(d, value as never));
      }
      ctx.phase('coordinator-open', epoch);
      primary = new Primary(ctx, epoch, db, coordinator);
      await primary.#start();
      return primary;
    } catch (e) {
      if (primary !== null) await primary.#server.close().catch(() => {});
      await coordinator?.close({ drainTimeoutMs: 0 }).catch(() => {});
      db.close();
      throw e;
    }
  }

  async #start(): Promise<void> {
    const ctx = this.#ctx;
    const o = ctx.options;
    const epoch = this.epoch;
    const endpoints = endpointsFor(ctx.runtimeDir, ctx.key, epoch);
    await this.#server.bind(endpoints.rpc, endpoints.pub);
    ctx.phase('bound', epoch);
    const co = this.coordinator;
    this.#unsubscribe = co.subscribe((e) => {
      const pub: CommitPublication = {
        seq: e.seq,
        epoch,
        writes: e.jobs.map((j) => ({
          // null: a runExclusive transaction
          method: j.method,
          requestId: j.requestId,
          // a forwarded write names its source; every other job is this process's own
          sourceInstanceId:
            (j.requestId === null ? undefined : this.#forwarded.get(j.requestId)) ?? o.instanceId,
        })),
      };
      this.#ring.push(pub);
      if (this.#ring.length > o.changesBufferSize)
        this.#ring.splice(0, this.#ring.length - o.changesBufferSize);
      this.#server.publish(TOPIC_COMMIT, pub);
      ctx.onCommit(pub);
    });
    // Only now, bound and ready, tell the others where we are.
    const info: PrimaryInfo = {
      version: 1,
      dbPath: ctx.dbPath,
      endpoints,
      epoch,
      pid: process.pid,
      token: this.#token,
      instanceId: o.instanceId,
      startedAt: Date.now(),
    };
    writeFileAtomic(ctx.infoPath, JSON.stringify(info));
    ctx.phase('announced', epoch);
    this.#heartbeat = setInterval(() => {
      this.#server.publish(TOPIC_HEARTBEAT, {
        epoch,
        seq: co.seq,
        pid: process.pid,
        instanceId: o.instanceId,
      });
    }, o.heartbeat.intervalMs);
  }

  /**
   * Shutdown, steps 2 to 4 of the proxy's close: refuse new writes, drain the coordinator, let the
   * answers and the last commits leave, withdraw the info file and say bye, then close.
   */
  async close(drainTimeoutMs: number): Promise<void> {
    const ctx = this.#ctx;
    // 2. refuse new remote writes (SHUTTING_DOWN), drain the coordinator's queue
    this.accepting = false;
    try {
      await this.coordinator.close({ drainTimeoutMs });
    } catch (e) {
      ctx.log.warn({ err: e }, 'dbproxy: coordinator close failed');
    }
    if (this.#heartbeat !== null) clearInterval(this.#heartbeat);
    this.#unsubscribe();
    // 3. the answers and the last commits leave
    await this.#server.flush(500);
    // 4. withdraw the info file (nobody else can have written it while we hold the lock), then
    //    say bye, so secondaries go straight to the election instead of waiting for a timeout
    const info = readPrimaryInfo(ctx.infoPath);
    if (info !== null && info.epoch === this.epoch && info.pid === process.pid) removeQuietly(ctx.infoPath);
    this.#server.publish(TOPIC_BYE, { epoch: this.epoch });
    await this.#server.flush(200);
    await this.#server.close();
    removeEndpointFiles(ctx.runtimeDir, ctx.key, this.epoch + 1);
    this.#db.close();
  }

  /**
   * Submits a write on the coordinator, by its registered name. The coordinator refuses a job still
   * queued at its deadline, and checks the deadline again right before it runs the job (one batched
   * behind a long job would otherwise start late, after its caller was told TIMEOUT).
   */
  async submit(
    write: ResolvedWrite,
    requestId: string,
    deadline: number,
    source: string,
    signal?: AbortSignal,
    durability?: 'normal' | 'full',
  ): Promise<WriteResultWire> {
    const { method } = write;
    const forwarded = source !== this.#ctx.options.instanceId;
    if (forwarded) this.#forwarded.set(requestId, source);
    try {
      const r = await this.coordinator.submit<unknown>(
        { method, params: write.value },
        {
          requestId,
          deadline,
          ...(signal === undefined ? {} : { signal }),
          ...(durability === undefined ? {} : { durability }),
        },
      );
      return { value: r.value, seq: r.seq, replayed: r.replayed };
    } catch (e) {
      throw fromCoordinatorError(e, method);
    } finally {
      if (forwarded) this.#forwarded.delete(requestId);
    }
  }

  #checkAuth(meta: AuthMeta): void {
    if (
      !sameSecret(meta.token, this.#token) ||
      meta.dbPath !== this.#ctx.dbPath ||
      meta.epoch !== this.epoch
    ) {
      throw wireError('WRONG_PRIMARY', 'refused: token, database path or epoch do not match this primary', {
        details: { epoch: this.epoch },
      });
    }
  }

  #serve(method: string, params: unknown): unknown {
    if (method === METHOD_DB_WRITE) {
      // no parameter values in tracing contexts
      return serveTrace.hasSubscribers
        ? serveTrace.tracePromise(() => this.#serveWrite(params), { rpcMethod: method })
        : this.#serveWrite(params);
    }
    if (method === METHOD_DB_PING) {
      const p = pingParamsSchema.safeParse(params);
      if (!p.success) throw wireError('INVALID_PARAMS', 'invalid db.ping params');
      this.#checkAuth(p.data.meta);
      return {
        epoch: this.epoch,
        seq: this.coordinator.seq,
        pid: process.pid,
        instanceId: this.#ctx.options.instanceId,
      };
    }
    if (method === METHOD_DB_CHANGES) {
      const p = changesParamsSchema.safeParse(params);
      if (!p.success) throw wireError('INVALID_PARAMS', 'invalid db.changes params');
      this.#checkAuth(p.data.meta);
      const after = p.data.afterSeq;
      const events = this.#ring.filter((e) => e.seq > after);
      const first = this.#ring[0];
      const complete =
        after >= this.coordinator.seq || (first !== undefined && first.seq <= after + 1 && events.length > 0);
      return { events, complete, seq: this.coordinator.seq };
    }
    throw wireError('METHOD_NOT_FOUND', `unknown JSON-RPC method ${JSON.stringify(method).slice(0, 100)}`);
  }

  async #serveWrite(params: unknown): Promise<WriteResultWire> {
    const served = this.#ctx.served;
    served.requests++;
    try {
      const p = writeParamsSchema.safeParse(params);
      if (!p.success) {
        throw wireError('INVALID_PARAMS', 'invalid db.write params', {
          details: { issues: p.error.issues.map((i) => ({ path: i.path, message: i.message })) },
        });
      }
      const { meta, method } = p.data;
      this.#checkAuth(meta);
      if (!this.accepting) throw wireError('SHUTTING_DOWN', 'the primary is shutting down');
      if (Date.now() >= meta.deadline) {
        throw wireError('EXPIRED', 'the write reached the primary after its deadline', {
          details: { method },
        });
      }
      const write = resolveWrite(this.#ctx.options.writes, method, p.data.params);
      return await this.submit(
        write,
        meta.requestId,
        meta.deadline,
        meta.sourceInstanceId,
        undefined,
        p.data.durability,
      );
    } catch (e) {
      served.errors++;
      throw e;
    }
  }
}
