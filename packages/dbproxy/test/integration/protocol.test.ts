import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '@x/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Dealer } from 'zeromq';
import { createDbProxy, type DbProxy, isDbProxyError } from '../../src/index.js';
import { collectChanges } from '../fixtures/events.js';
import { rowsWithId as countRows } from '../fixtures/rows.js';
import { migrate, writes } from '../fixtures/writes.js';

// biome-ignore lint/suspicious/noExplicitAny: raw JSON-RPC replies, inspected field by field
type Reply = Record<string, any>;

interface Info {
  endpoints: { rpc: string; pub: string };
  epoch: number;
  token: string;
  dbPath: string;
  pid: number;
}

/** The wire protocol seen from outside: a raw DEALER talking JSON-RPC 2.0 to a real primary. */
describe('db.write over the wire', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let dbPath: string;
  let runtimeDir: string;
  let primary: DbProxy;
  let secondary: DbProxy;
  let info: Info;
  let dealer: Dealer;
  let nextId = 1;

  const waiting = new Map<number | null, (r: Reply) => void>();
  const readLoop = async (): Promise<void> => {
    try {
      for await (const [frame] of dealer) {
        const r = JSON.parse(frame!.toString());
        for (const x of Array.isArray(r) ? r : [r]) {
          const w = waiting.get(x.id);
          waiting.delete(x.id);
          w?.(x);
        }
      }
    } catch {}
  };
  const call = async (method: string, params: unknown): Promise<Reply> => {
    const id = nextId++;
    const p = new Promise<Reply>((resolve) => waiting.set(id, resolve));
    await dealer.send(JSON.stringify({ jsonrpc: '2.0', id, method, params }));
    const r = await p;
    expect(r.id).toBe(id);
    return r;
  };
  const meta = (over: Record<string, unknown> = {}) => ({
    requestId: `r-${nextId}-${Math.random()}`,
    sourceInstanceId: 'raw',
    deadline: Date.now() + 5_000,
    epoch: info.epoch,
    dbPath: info.dbPath,
    token: info.token,
    ...over,
  });
  const rowsWithId = (id: string): number => countRows(dbPath, id);

  beforeAll(async () => {
    dir = await tempDir('dbproxy-protocol');
    dbPath = join(dir.path, 'p.db');
    runtimeDir = join(dir.path, 'run');
    primary = createDbProxy({ databasePath: dbPath, runtimeDir, instanceId: 'prim', writes, migrate });
    await primary.start();
    expect(primary.role).toBe('primary');
    secondary = createDbProxy({ databasePath: dbPath, runtimeDir, instanceId: 'sec', writes, migrate });
    await secondary.start();
    expect(secondary.role).toBe('secondary');
    info = JSON.parse(readFileSync(`${dbPath}-dbproxy.json`, 'utf8')) as Info;
    dealer = new Dealer({ linger: 0 });
    dealer.connect(info.endpoints.rpc);
    void readLoop();
  });

  afterAll(async () => {
    dealer?.close();
    await secondary?.close();
    await primary?.close();
    await dir?.cleanup();
  });

  it('publishes its info 0600 in a 0700 runtime dir, with ipc:// endpoints inside it', () => {
    expect(statSync(runtimeDir).mode & 0o777).toBe(0o700);
    expect(statSync(`${dbPath}-dbproxy.json`).mode & 0o777).toBe(0o600);
    expect(readdirSync(runtimeDir).filter((f) => !f.endsWith('.rpc') && !f.endsWith('.pub'))).toEqual([]);
    expect(info.endpoints.rpc.startsWith(`ipc://${runtimeDir}/`)).toBe(true);
    expect(info.endpoints.pub.startsWith(`ipc://${runtimeDir}/`)).toBe(true);
    expect(info.pid).toBe(process.pid);
    expect(info.epoch).toBe(1);
  });

  it('applies a well-formed write and replays it for the same requestId', async () => {
    const m = meta({ requestId: 'same-id' });
    const a = await call('db.write', { meta: m, method: 'insertNote', params: { id: 'w1', writer: 'raw' } });
    expect(a.result.replayed).toBe(false);
    const b = await call('db.write', { meta: m, method: 'insertNote', params: { id: 'w1', writer: 'raw' } });
    expect(b.result).toEqual({ ...a.result, replayed: true });
    expect(rowsWithId('w1')).toBe(1);
  });

  it('carries a per-write durability to the primary', async () => {
    const ok = await call('db.write', {
      meta: meta(),
      method: 'insertNote',
      params: { id: 'dur-1', writer: 'raw' },
      durability: 'full',
    });
    expect(ok.result.replayed).toBe(false);
    const bad = await call('db.write', {
      meta: meta(),
      method: 'insertNote',
      params: { id: 'dur-2', writer: 'raw' },
      durability: 'sometimes',
    });
    expect(bad.error.data.code).toBe('INVALID_PARAMS');
    expect(rowsWithId('dur-2')).toBe(0);
    const viaProxy = await secondary.write(
      'insertNote',
      { id: 'dur-3', writer: 'sec' },
      { durability: 'full' },
    );
    expect(viaProxy.replayed).toBe(false);
    expect(rowsWithId('dur-3')).toBe(1);
  });

  it('answers INVALID_PARAMS (-32602) for bad params and writes nothing', async () => {
    const r = await call('db.write', { meta: meta(), method: 'insertNote', params: { id: 42 } });
    expect(r.error.code).toBe(-32602);
    expect(r.error.data).toMatchObject({ code: 'INVALID_PARAMS', retryable: false, applied: 'no' });
    const bad = await call('db.write', { meta: { nope: 1 }, method: 'insertNote', params: {} });
    expect(bad.error.data.code).toBe('INVALID_PARAMS');
    expect(rowsWithId('42')).toBe(0);
  });

  it('answers METHOD_NOT_FOUND (-32601) for an unknown write method and an unknown RPC method', async () => {
    const r = await call('db.write', { meta: meta(), method: 'dropEverything', params: {} });
    expect(r.error.code).toBe(-32601);
    expect(r.error.data).toMatchObject({ code: 'METHOD_NOT_FOUND', applied: 'no' });
    const r2 = await call('db.explode', {});
    expect(r2.error.code).toBe(-32601);
    expect(r2.error.data.code).toBe('METHOD_NOT_FOUND');
  });

  it('refuses a forged token, a wrong database path and a stale epoch (WRONG_PRIMARY, not applied)', async () => {
    for (const over of [
      { token: 'x'.repeat(43) },
      {
        token:
          `${info.token.slice(0, -1)}A` === info.token
            ? `${info.token.slice(0, -1)}B`
            : `${info.token.slice(0, -1)}A`,
      },
      { dbPath: '/elsewhere/other.db' },
      { epoch: info.epoch + 1 },
    ]) {
      const id = `forged-${Math.random()}`;
      const r = await call('db.write', {
        meta: meta(over),
        method: 'insertNote',
        params: { id, writer: 'evil' },
      });
      expect(r.error.data).toMatchObject({ code: 'WRONG_PRIMARY', applied: 'no' });
      expect(rowsWithId(id)).toBe(0);
    }
    const ping = await call('db.ping', { meta: { ...meta(), token: 'forged-token-forged-token' } });
    expect(ping.error.data.code).toBe('WRONG_PRIMARY');
  });

  it('refuses an expired deadline with EXPIRED and does not apply it', async () => {
    const r = await call('db.write', {
      meta: meta({ deadline: Date.now() - 1 }),
      method: 'insertNote',
      params: { id: 'late', writer: 'raw' },
    });
    expect(r.error.data).toMatchObject({ code: 'EXPIRED', applied: 'no', retryable: true });
    expect(rowsWithId('late')).toBe(0);
  });

  it('expires a write whose deadline passes while it waits behind a long job', async () => {
    const slow = call('db.write', { meta: meta(), method: 'slowInsert', params: { id: 'slow-1', ms: 300 } });
    const queued = call('db.write', {
      meta: meta({ deadline: Date.now() + 100 }),
      method: 'insertNote',
      params: { id: 'queued-late', writer: 'raw' },
    });
    const [a, b] = [await slow, await queued];
    expect(a.result).toBeDefined();
    expect(b.error.data).toMatchObject({ code: 'EXPIRED', applied: 'no' });
    expect(rowsWithId('queued-late')).toBe(0);
  });

  it('answers a parse error with id null and error data, and keeps serving', async () => {
    const p = new Promise<Reply>((resolve) => waiting.set(null, resolve));
    await dealer.send('{not json');
    const r = await p;
    expect(r).toMatchObject({
      id: null,
      error: { code: -32700, data: { code: 'PARSE_ERROR', retryable: false, applied: 'no' } },
    });
    const ok = await call('db.ping', { meta: meta() });
    expect(ok.result.epoch).toBe(info.epoch);
  });

  it('JSON-RPC 2.0: params optional, invalid requests and an empty batch answered with error data', async () => {
    // no params: a valid request; db.ping needs its meta, so -32602 (not -32600)
    const id = nextId++;
    const noParams = new Promise<Reply>((resolve) => waiting.set(id, resolve));
    await dealer.send(JSON.stringify({ jsonrpc: '2.0', id, method: 'db.ping' }));
    expect((await noParams).error).toMatchObject({ code: -32602, data: { code: 'INVALID_PARAMS' } });
    // not a JSON-RPC 2.0 request: -32600, its id echoed
    const bad = nextId++;
    const invalid = new Promise<Reply>((resolve) => waiting.set(bad, resolve));
    await dealer.send(JSON.stringify({ jsonrpc: '1.0', id: bad, method: 'db.ping' }));
    expect((await invalid).error).toMatchObject({
      code: -32600,
      data: { code: 'INVALID_REQUEST', retryable: false, applied: 'no' },
    });
    // an empty batch: one error object, id null
    const empty = new Promise<Reply>((resolve) => waiting.set(null, resolve));
    await dealer.send('[]');
    expect(await empty).toMatchObject({
      id: null,
      error: { code: -32600, data: { code: 'INVALID_REQUEST' } },
    });
    // a notification (no id) is handled and never answered
    await dealer.send(
      JSON.stringify({
        jsonrpc: '2.0',
        method: 'db.write',
        params: { meta: meta(), method: 'insertNote', params: { id: 'notified', writer: 'raw' } },
      }),
    );
    const unanswered = new Promise<Reply>((resolve) => waiting.set(undefined as never, resolve));
    for (let i = 0; i < 200 && rowsWithId('notified') === 0; i++) await call('db.ping', { meta: meta() });
    expect(rowsWithId('notified')).toBe(1);
    const after = await Promise.race([unanswered, call('db.ping', { meta: meta() }).then(() => 'none')]);
    expect(after).toBe('none');
    waiting.delete(undefined as never);
  });

  it('takes request ids up to the coordinator limit on the wire, and refuses longer ones', async () => {
    const long = await call('db.write', {
      meta: meta({ requestId: 'q'.repeat(512) }),
      method: 'insertNote',
      params: { id: 'long-id', writer: 'raw' },
    });
    expect(long.result.replayed).toBe(false);
    const tooLong = await call('db.write', {
      meta: meta({ requestId: 'q'.repeat(513) }),
      method: 'insertNote',
      params: { id: 'too-long-id', writer: 'raw' },
    });
    expect(tooLong.error).toMatchObject({ code: -32602, data: { code: 'INVALID_PARAMS', applied: 'no' } });
    expect(rowsWithId('too-long-id')).toBe(0);
  });

  it('rebuilds typed errors on the secondary: CONFLICT, METHOD_NOT_FOUND, INVALID_PARAMS', async () => {
    await secondary.write('insertUnique', { k: 'u1' });
    const e1 = await secondary.write('insertUnique', { k: 'u1' }).catch((e) => e);
    expect(isDbProxyError(e1)).toBe(true);
    expect(e1).toMatchObject({ code: 'DBPROXY_CONFLICT', applied: 'no', retryable: false });
    expect(e1.details.sqliteCode).toBe('SQLITE_CONSTRAINT_PRIMARYKEY');
    const e2 = await secondary.write('nope', {}).catch((e) => e);
    expect(e2).toMatchObject({ code: 'DBPROXY_METHOD_NOT_FOUND', applied: 'no' });
    const e3 = await secondary.write('insertNote', { id: 7 }).catch((e) => e);
    expect(e3).toMatchObject({ code: 'DBPROXY_INVALID_PARAMS', applied: 'no' });
  });

  it('serves many requests in flight from one secondary, each matched to its caller', async () => {
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        secondary.write<{ rowid: number }>('insertNote', { id: `par-${i}`, writer: 'sec' }),
      ),
    );
    const rowids = new Set(results.map((r) => r.value.rowid));
    expect(rowids.size).toBe(200);
    for (let i = 0; i < 200; i += 37) expect(rowsWithId(`par-${i}`)).toBe(1);
  });

  it('a TIMEOUT with applied unknown is settled by retrying the same requestId: applied once', async () => {
    const ac = new AbortController();
    const changes = collectChanges(primary.changes({ signal: ac.signal }));
    const e = await secondary
      .write('slowInsert', { id: 'slow-2', ms: 400 }, { requestId: 'slow-req', timeoutMs: 150 })
      .catch((x) => x);
    expect(e).toMatchObject({ code: 'DBPROXY_TIMEOUT', applied: 'unknown', retryable: true });
    // the retry comes after the timed-out write has committed, so it is answered from the replay record
    await changes.until((s) => s.some((c) => c.type === 'write' && c.requestId === 'slow-req'));
    ac.abort();
    await changes.done;
    const again = await secondary.write('slowInsert', { id: 'slow-2', ms: 400 }, { requestId: 'slow-req' });
    expect(again.replayed).toBe(true);
    expect(rowsWithId('slow-2')).toBe(1);
  });

  it('serves db.changes: the commits after a seq, in order, for catch-up', async () => {
    await secondary.write('insertNote', { id: 'ch-1', writer: 'sec' }, { requestId: 'ch-req-1' });
    const r = await call('db.changes', { meta: meta(), afterSeq: 0 });
    const events = r.result.events as Array<{
      seq: number;
      epoch: number;
      writes: Array<{ requestId: string }>;
    }>;
    expect(r.result.complete).toBe(true);
    expect(events[0]!.seq).toBe(1);
    for (let i = 1; i < events.length; i++) expect(events[i]!.seq).toBe(events[i - 1]!.seq + 1);
    const last = events[events.length - 1]!;
    expect(last.seq).toBe(r.result.seq);
    expect(last.writes.map((w) => w.requestId)).toContain('ch-req-1');
    const none = await call('db.changes', { meta: meta(), afterSeq: r.result.seq });
    expect(none.result).toMatchObject({ events: [], complete: true });
    const forged = await call('db.changes', { meta: meta({ token: 'nope-nope-nope-nope' }), afterSeq: 0 });
    expect(forged.error.data.code).toBe('WRONG_PRIMARY');
  });
});
