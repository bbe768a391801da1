/**
 * Test fixture: a fresh database holding the reference example server's `business` schema (scope-
 * prefixed composite keys, a self-reference, a two-table FK cycle, bytea and typed columns), an
 * @x/dbx cluster, a bootstrapped sync service and a fastify app mounting the plugin. The host's
 * "auth" is a test header `x-test-user` carrying the trusted user id.
 */
import { randomUUID } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { type Cluster, createCluster } from '@x/dbx';
import {
  createSyncService,
  oversyncFastifyPlugin,
  oversyncFrameworkErrors,
  type SyncService,
  type SyncServiceOptions,
} from '@x/oversync/server';
import { createTestDatabase, type TestDatabase } from '@x/testkit';
import Fastify, { type FastifyInstance, type LightMyRequestResponse } from 'fastify';

export const BUSINESS_SCHEMA_SQL = `
CREATE SCHEMA business;
CREATE TABLE business.users (
  _sync_scope_id TEXT NOT NULL, id UUID NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL,
  created_at TIMESTAMPTZ DEFAULT now(), updated_at TIMESTAMPTZ DEFAULT now(),
  PRIMARY KEY (_sync_scope_id, id));
CREATE TABLE business.posts (
  _sync_scope_id TEXT NOT NULL, id UUID NOT NULL, title TEXT NOT NULL, content TEXT NOT NULL, author_id UUID,
  created_at TIMESTAMPTZ DEFAULT now(), updated_at TIMESTAMPTZ DEFAULT now(),
  PRIMARY KEY (_sync_scope_id, id),
  CONSTRAINT posts_author_id_fkey FOREIGN KEY (_sync_scope_id, author_id)
    REFERENCES business.users (_sync_scope_id, id) DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE business.categories (
  _sync_scope_id TEXT NOT NULL, id UUID NOT NULL, name TEXT NOT NULL, parent_id UUID,
  PRIMARY KEY (_sync_scope_id, id),
  CONSTRAINT categories_parent_id_fkey FOREIGN KEY (_sync_scope_id, parent_id)
    REFERENCES business.categories (_sync_scope_id, id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE business.teams (
  _sync_scope_id TEXT NOT NULL, id UUID NOT NULL, name TEXT NOT NULL, captain_member_id UUID,
  PRIMARY KEY (_sync_scope_id, id));
CREATE TABLE business.team_members (
  _sync_scope_id TEXT NOT NULL, id UUID NOT NULL, name TEXT NOT NULL, team_id UUID NOT NULL,
  PRIMARY KEY (_sync_scope_id, id),
  CONSTRAINT team_members_team_id_fkey FOREIGN KEY (_sync_scope_id, team_id)
    REFERENCES business.teams (_sync_scope_id, id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED);
ALTER TABLE business.teams ADD CONSTRAINT teams_captain_member_id_fkey FOREIGN KEY (_sync_scope_id, captain_member_id)
  REFERENCES business.team_members (_sync_scope_id, id) DEFERRABLE INITIALLY DEFERRED;
CREATE TABLE business.files (
  _sync_scope_id TEXT NOT NULL, id UUID NOT NULL, name TEXT NOT NULL, data BYTEA NOT NULL,
  PRIMARY KEY (_sync_scope_id, id));
CREATE TABLE business.file_reviews (
  _sync_scope_id TEXT NOT NULL, id UUID NOT NULL, review TEXT NOT NULL, file_id UUID NOT NULL,
  PRIMARY KEY (_sync_scope_id, id),
  CONSTRAINT file_reviews_file_id_fkey FOREIGN KEY (_sync_scope_id, file_id)
    REFERENCES business.files (_sync_scope_id, id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE business.typed_rows (
  _sync_scope_id TEXT NOT NULL, id UUID NOT NULL, name TEXT NOT NULL, note TEXT NULL, count_value BIGINT NULL,
  enabled_flag BIGINT NOT NULL, rating DOUBLE PRECISION NULL, data BYTEA NULL, created_at TIMESTAMPTZ NULL,
  PRIMARY KEY (_sync_scope_id, id));
`;

export const BUSINESS_TABLES = [
  'users',
  'posts',
  'categories',
  'teams',
  'team_members',
  'files',
  'file_reviews',
  'typed_rows',
].map((table) => ({ schema: 'business', table, syncKeyColumns: ['id'] }));

export interface Fixture {
  db: TestDatabase;
  cluster: Cluster;
  service: SyncService;
  app: FastifyInstance;
  close(): Promise<void>;
}

export interface FixtureOptions {
  service?: Partial<SyncServiceOptions>;
  schemaSql?: string;
  bodyLimit?: number;
}

export async function createFixture(opts: FixtureOptions = {}): Promise<Fixture> {
  const db = await createTestDatabase({ prefix: 'oversync' });
  const cluster = createCluster({ primary: { connectionString: db.url, options: '-c TimeZone=UTC' } });
  await cluster.exec(opts.schemaSql ?? BUSINESS_SCHEMA_SQL);
  const service = createSyncService({
    db: cluster,
    registeredTables: BUSINESS_TABLES,
    ...opts.service,
  });
  await service.bootstrap();
  const app = Fastify({ logger: false, frameworkErrors: oversyncFrameworkErrors });
  await app.register(oversyncFastifyPlugin, {
    service,
    userIdFromRequest: (req) => {
      const h = req.headers['x-test-user'];
      return typeof h === 'string' ? h : undefined;
    },
    ...(opts.bodyLimit ? { bodyLimit: opts.bodyLimit } : {}),
  });
  await app.ready();
  return {
    db,
    cluster,
    service,
    app,
    async close() {
      await app.close();
      await service.close();
      await cluster.close();
      await db.drop();
    },
  };
}

/** A test file's one fixture, created by `start()` (the file's beforeAll). */
export interface SharedFixture extends Fixture {
  start(): Promise<void>;
}

/**
 * One fixture for a whole test file, usable at module level before it exists:
 * `const fx = sharedFixture(opts); beforeAll(fx.start); afterAll(fx.close);`. Its fields read the
 * fixture `start()` created; `close()` closes it if there is one.
 */
export function sharedFixture(opts: FixtureOptions = {}): SharedFixture {
  let fx: Fixture | undefined;
  const created = () => {
    if (!fx) throw new Error('sharedFixture: the fixture is created by start() in beforeAll');
    return fx;
  };
  return {
    get db() {
      return created().db;
    },
    get cluster() {
      return created().cluster;
    },
    get service() {
      return created().service;
    },
    get app() {
      return created().app;
    },
    async start() {
      fx = await createFixture(opts);
    },
    async close() {
      await fx?.close();
    },
  };
}

/** A device talking to the fixture's app: one user, one source id. */
export class Device {
  sourceBundleId = 0;
  constructor(
    readonly app: FastifyInstance,
    readonly userId: string,
    readonly sourceId: string = `src-${randomUUID().slice(0, 8)}`,
  ) {}

  headers(): Record<string, string> {
    return {
      'x-test-user': this.userId,
      'oversync-source-id': this.sourceId,
      'content-type': 'application/json',
    };
  }
  async req(method: 'GET' | 'POST' | 'DELETE', url: string, body?: unknown): Promise<LightMyRequestResponse> {
    return this.app.inject({
      method,
      url,
      headers: this.headers(),
      ...(body === undefined ? {} : { payload: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
  }
  async json<T = Record<string, unknown>>(method: 'GET' | 'POST' | 'DELETE', url: string, body?: unknown) {
    const res = await this.req(method, url, body);
    return { status: res.statusCode, body: (res.body ? JSON.parse(res.body) : undefined) as T };
  }
  async connect(hasLocalPendingRows = false) {
    return this.json('POST', '/sync/connect', { has_local_pending_rows: hasLocalPendingRows });
  }
  /** create + chunks + commit; returns the commit response (or the first failing response). */
  async push(rows: unknown[], opts: { chunkSize?: number; initializationId?: string } = {}) {
    const sbid = this.sourceBundleId + 1;
    const create = await this.json('POST', '/sync/push-sessions', {
      source_bundle_id: sbid,
      planned_row_count: rows.length,
      ...(opts.initializationId ? { initialization_id: opts.initializationId } : {}),
    });
    if (create.status !== 200) return create;
    if (create.body['status'] === 'already_committed') {
      this.sourceBundleId = sbid;
      return create;
    }
    const pushId = create.body['push_id'] as string;
    const size = opts.chunkSize ?? 1000;
    for (let i = 0; i < rows.length; i += size) {
      const chunk = await this.json('POST', `/sync/push-sessions/${pushId}/chunks`, {
        start_row_ordinal: i,
        rows: rows.slice(i, i + size),
      });
      if (chunk.status !== 200) return chunk;
    }
    const commit = await this.json('POST', `/sync/push-sessions/${pushId}/commit`);
    if (commit.status === 200) this.sourceBundleId = sbid;
    return commit;
  }
  async pull(after = 0, extra = '') {
    return this.json('GET', `/sync/pull?after_bundle_seq=${after}${extra}`);
  }
}

let deviceCount = 0;
/** A device of `userId` (default: a new user) whose connect initialised its empty scope. */
export async function emptyScopeDevice(
  app: FastifyInstance,
  userId = `d${++deviceCount}-${randomUUID().slice(0, 6)}`,
): Promise<Device> {
  const d = new Device(app, userId);
  const res = await d.connect(false);
  if (res.body['resolution'] !== 'initialize_empty')
    throw new Error(`connect of a new scope answered ${JSON.stringify(res.body)}`);
  return d;
}

export function userRow(id: string, name: string, base = 0, op = 'INSERT') {
  return {
    schema: 'business',
    table: 'users',
    key: { id },
    op,
    base_row_version: base,
    payload: { id, name, email: `${name}@example.com` },
  };
}

/** A fresh INSERT (base version 0) of `payload` into business.`table`, keyed by its id. */
export function insertRow(table: string, payload: { id: string } & Record<string, unknown>) {
  return { schema: 'business', table, key: { id: payload.id }, op: 'INSERT', base_row_version: 0, payload };
}

export function deleteRow(table: string, id: string, base: number) {
  return { schema: 'business', table, key: { id }, op: 'DELETE', base_row_version: base };
}

export { randomUUID };

/** The one number a `SELECT count(…)::text AS n …` query answers (row counts checked by tests). */
export async function countOf(fx: Fixture, sql: string, params: unknown[] = []): Promise<number> {
  return Number((await fx.cluster.query<{ n: string }>(sql, params)).rows[0]!.n);
}

/**
 * Reads the stream of a `GET /sync/watch` response: each call resolves with the `bundle_seq` of
 * its next `event: bundle` frame (heartbeats are skipped) and rejects if the stream ends first.
 */
export function bundleEvents(res: Response): () => Promise<number> {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  return async () => {
    for (;;) {
      const m = /event: bundle\ndata: (\{[^\n]*\})\n\n/.exec(buf);
      if (m) {
        buf = buf.slice(m.index + m[0].length);
        return (JSON.parse(m[1]!) as { bundle_seq: number }).bundle_seq;
      }
      const chunk = await reader.read();
      if (chunk.done) throw new Error('watch stream ended');
      buf += decoder.decode(chunk.value, { stream: true });
    }
  };
}

/**
 * The next time the service traces operation `name` (its tracing channel `x:oversync:<name>`) at
 * `event`: `start` when the operation begins, `asyncEnd` when it has succeeded. Tests wait on it
 * instead of sleeping; `cancel()` stops listening.
 */
export function nextTraced(
  name: string,
  event: 'start' | 'asyncEnd',
): { promise: Promise<void>; cancel: () => void } {
  const channel = `tracing:x:oversync:${name}:${event}`;
  let cancel!: () => void;
  const promise = new Promise<void>((resolve) => {
    const onMessage = (message: unknown) => {
      if (event === 'asyncEnd' && (message as { error?: unknown }).error !== undefined) return;
      cancel();
      resolve();
    };
    cancel = () => unsubscribe(channel, onMessage);
    subscribe(channel, onMessage);
  });
  return { promise, cancel };
}

/**
 * A business row written past capture (triggers off: `session_replication_role = replica`): a
 * row without its row_state entry, the inconsistency a snapshot create must refuse.
 */
export async function insertBypassingCapture(fx: Fixture, userId: string, id: string): Promise<void> {
  await fx.cluster.runTx(async (tx) => {
    await tx.query('SET LOCAL session_replication_role = replica');
    await tx.query(
      `INSERT INTO business.users (_sync_scope_id, id, name, email) VALUES ($1, $2, 'stray', 's@example.com')`,
      [userId, id],
    );
  });
}
