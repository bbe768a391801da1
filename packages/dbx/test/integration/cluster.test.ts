import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import {
  createTcpProxy,
  createTestDatabase,
  requireReplicas,
  spawnNode,
  type TcpProxy,
  type TestDatabase,
  waitFor,
} from '@x/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  type Cluster,
  collect,
  collectOne,
  createCluster,
  currentQuerier,
  isConstraintViolation,
  isDbxError,
  pgErrorCode,
  type QueryMessage,
  type Tx,
} from '../../src/index.js';

const skip = requireReplicas(2);

/** A TCP proxy in front of the server of `url`, with `url` rewritten to go through it. */
async function proxyTo(url: string): Promise<TcpProxy & { url: string }> {
  const target = new URL(url);
  const proxy = await createTcpProxy({ host: target.hostname, port: Number(target.port) });
  target.port = String(proxy.port);
  return Object.assign(proxy, { url: target.toString() });
}

function portOf(url: string): number {
  return Number(new URL(url).port);
}

interface Served {
  port: number;
  replica: boolean;
}

const WHO = 'select inet_server_port() as port, pg_is_in_recovery() as replica';

describe.skipIf(skip)('cluster on a primary and two streaming replicas', () => {
  let db: TestDatabase;
  let cluster: Cluster;
  let primaryPort: number;
  let replicaPorts: number[];
  const logs: Array<{ level: string; obj: object; msg: string | undefined }> = [];
  const logger = {
    debug: (obj: object, msg?: string) => logs.push({ level: 'debug', obj, msg }),
    info: (obj: object, msg?: string) => logs.push({ level: 'info', obj, msg }),
    warn: (obj: object, msg?: string) => logs.push({ level: 'warn', obj, msg }),
    error: (obj: object, msg?: string) => logs.push({ level: 'error', obj, msg }),
  };

  beforeAll(async () => {
    db = await createTestDatabase({ prefix: 'dbx' });
    primaryPort = portOf(db.url);
    replicaPorts = db.replicaUrls.map(portOf);
    cluster = createCluster({
      primary: db.url,
      replicas: [...db.replicaUrls],
      healthCheck: { intervalMs: 200, timeoutMs: 1000 },
      slowQueryThresholdMs: 150,
      logger,
    });
    await cluster.exec('create table items (id int primary key, label text not null)');
    await cluster.checkHealth();
  });
  afterAll(async () => {
    await cluster?.close();
    await db?.drop();
  });

  it('routes query/exec/runTx to the primary and readQuery round-robin over both replicas', async () => {
    const w = await cluster.queryRow<Served>(WHO);
    expect(w).toEqual({ port: primaryPort, replica: false });
    const tx = await cluster.runTx((t) => t.queryRow<Served>(WHO));
    expect(tx?.port).toBe(primaryPort);
    const seen = new Set<number>();
    for (let i = 0; i < 6; i++) {
      const r = await cluster.readQueryRow<Served>(WHO);
      expect(r?.replica).toBe(true);
      seen.add(r?.port ?? 0);
    }
    expect([...seen].sort()).toEqual([...replicaPorts].sort());
  });

  it('a per-call override picks the node class', async () => {
    expect((await cluster.readQueryRow<Served>(WHO, [], { node: 'primary' }))?.port).toBe(primaryPort);
    expect((await cluster.readQueryRow<Served>(WHO, [], { node: 'replica' }))?.replica).toBe(true);
    const any = new Set<number>();
    for (let i = 0; i < 9; i++)
      any.add((await cluster.readQueryRow<Served>(WHO, [], { node: 'any' }))?.port ?? 0);
    expect(any.size).toBe(3);
  });

  it('runTx commits on success and rolls back (rethrowing) on throw, never leaking a client', async () => {
    await cluster.runTx(async (tx) => {
      await tx.exec('insert into items values ($1, $2)', [1, 'one']);
    });
    const boom = new Error('boom');
    await expect(
      cluster.runTx(async (tx) => {
        await tx.exec('insert into items values ($1, $2)', [2, 'two']);
        throw boom;
      }),
    ).rejects.toBe(boom);
    const rows = await cluster.query<{ id: number }>('select id from items order by id');
    expect(rows.rows).toEqual([{ id: 1 }]);
    const primary = cluster.stats().nodes.find((n) => n.writer);
    expect(primary?.totalCount).toBe(primary?.idleCount);
  });

  it('runTx applies isolation, read only and deferrable', async () => {
    const settings = await cluster.runTx(
      async (tx) => ({
        iso: (await tx.queryRow<{ v: string }>("select current_setting('transaction_isolation') as v"))?.v,
        ro: (await tx.queryRow<{ v: string }>("select current_setting('transaction_read_only') as v"))?.v,
        def: (await tx.queryRow<{ v: string }>("select current_setting('transaction_deferrable') as v"))?.v,
      }),
      { isolation: 'serializable', readOnly: true, deferrable: true },
    );
    expect(settings).toEqual({ iso: 'serializable', ro: 'on', def: 'on' });
    const rr = await cluster.runTx(
      (tx) => tx.queryRow<{ v: string }>("select current_setting('transaction_isolation') as v"),
      {
        isolation: 'repeatable read',
      },
    );
    expect(rr?.v).toBe('repeatable read');
    await expect(cluster.runTx(async () => 1, { isolation: 'chaos' as never })).rejects.toMatchObject({
      code: 'DBX_INVALID_OPTIONS',
    });
  });

  it('nested runTx uses a savepoint', async () => {
    await cluster.runTx(async (tx) => {
      await tx.exec("insert into items values (10, 'outer')");
      await expect(
        tx.runTx(async (inner) => {
          await inner.exec("insert into items values (11, 'inner')");
          throw new Error('inner fails');
        }),
      ).rejects.toThrow('inner fails');
      await tx.runTx(async (inner) => {
        await inner.exec("insert into items values (12, 'inner ok')");
      });
    });
    const ids = (await cluster.query<{ id: number }>('select id from items where id >= 10 order by id')).rows;
    expect(ids.map((r) => r.id)).toEqual([10, 12]);
  });

  it('a COMMIT that silently rolled back (a caught failure inside) is reported, not swallowed', async () => {
    await expect(
      cluster.runTx(async (tx) => {
        await tx.exec("insert into items values (20, 'x')");
        await tx.exec("insert into items values (20, 'dup')").catch(() => undefined);
      }),
    ).rejects.toMatchObject({ code: 'DBX_QUERY_FAILED' });
    expect(await cluster.queryRow('select 1 from items where id = 20')).toBeUndefined();
  });

  it('currentQuerier() returns the enclosing transaction; service code joins it', async () => {
    expect(currentQuerier()).toBeUndefined();
    const insertViaService = async (id: number) => {
      const q = currentQuerier() ?? cluster;
      await q.exec("insert into items values ($1, 'svc')", [id]);
      return q;
    };
    await expect(
      cluster.runTx(async (tx) => {
        const used = await insertViaService(30);
        expect(used).toBe(tx);
        // readQuery inside the transaction sees its uncommitted write (it joins the transaction).
        expect(await cluster.readQueryRow('select id from items where id = 30')).toEqual({ id: 30 });
        // cluster.runTx inside runTx joins as a savepoint.
        await cluster.runTx(async (inner) => expect(inner).toBe(tx));
        throw new Error('undo');
      }),
    ).rejects.toThrow('undo');
    expect(await cluster.queryRow('select 1 from items where id = 30')).toBeUndefined();
    expect(currentQuerier()).toBeUndefined();
  });

  it('begin() returns a handle with commit and rollback; using it afterwards fails', async () => {
    const tx = await cluster.begin({ isolation: 'repeatable read' });
    await tx.exec("insert into items values (40, 'handle')");
    const iso = await tx.queryRow<{ v: string }>("select current_setting('transaction_isolation') as v");
    expect(iso?.v).toBe('repeatable read');
    await tx.commit();
    await expect(tx.exec('select 1')).rejects.toMatchObject({ code: 'DBX_TX_CLOSED' });
    await expect(tx.commit()).rejects.toMatchObject({ code: 'DBX_TX_CLOSED' });
    // A write in a read-only runTx is the caller's mistake: reported at once, never retried.
    let roAttempts = 0;
    const roErr = await cluster
      .runTx(
        async (t) => {
          roAttempts++;
          await t.exec("insert into items values (42, 'ro')");
        },
        { readOnly: true },
      )
      .catch((e: unknown) => e);
    expect(pgErrorCode(roErr)).toBe('25006');
    expect(roAttempts).toBe(1);
    const ro = await cluster.begin({ readOnly: true });
    await expect(ro.exec("insert into items values (41, 'ro')")).rejects.toSatisfy(
      (e) => pgErrorCode(e) === '25006',
    );
    await ro.rollback();
    {
      await using scoped = await cluster.begin();
      await scoped.exec("insert into items values (43, 'disposed')");
    }
    expect(await cluster.queryRow('select 1 from items where id = 43')).toBeUndefined();
    const primary = cluster.stats().nodes.find((n) => n.writer);
    expect(primary?.totalCount).toBe(primary?.idleCount);
  });

  it('keeps the server error as cause with SQLSTATE, and classifies constraint violations', async () => {
    const err = await cluster.exec("insert into items values (1, 'again')").catch((e: unknown) => e);
    expect(isDbxError(err)).toBe(true);
    expect(err).toMatchObject({
      code: 'DBX_QUERY_FAILED',
      details: { sqlState: '23505', constraint: 'items_pkey' },
    });
    expect(isConstraintViolation(err)).toBe(true);
    expect((err as Error).cause).toBeInstanceOf(Error);
    expect(((err as Error).cause as { code: string }).code).toBe('23505');
  });

  it('read-your-writes: in a session, reads see the session write (token is a serialisable LSN)', async () => {
    await cluster.session(async () => {
      expect(cluster.writeToken()).toBeNull();
      for (let i = 0; i < 20; i++) {
        await cluster.exec("insert into items values ($1, 'ryw')", [100 + i]);
        const token = cluster.writeToken();
        expect(token).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
        const row = await cluster.readQueryRow('select id from items where id = $1', [100 + i]);
        expect(row).toEqual({ id: 100 + i });
      }
    });
    expect(cluster.writeToken()).toBeNull();
  });

  it('collect/collectOne validate rows with zod', async () => {
    const Item = z.object({ id: z.number(), label: z.string() });
    const items = await cluster.query('select id, label from items where id = 1').then(collect(Item));
    expect(items).toEqual([{ id: 1, label: 'one' }]);
    await expect(cluster.query('select 1 as id').then(collectOne(Item))).rejects.toMatchObject({
      code: 'DBX_ROW_INVALID',
    });
    await expect(cluster.query('select 1 where false').then(collectOne(Item))).rejects.toMatchObject({
      code: 'DBX_NO_ROWS',
    });
  });

  it('cancels a long pg_sleep on the server when the signal aborts', async () => {
    const sleeping = async (): Promise<number> =>
      (await cluster.queryRow<{ n: number }>(
        "select count(*)::int as n from pg_stat_activity where query = 'select pg_sleep(30)' and state = 'active'",
      ))!.n;
    const ac = new AbortController();
    const p = cluster.readQuery('select pg_sleep(30)', [], { signal: ac.signal, node: 'primary' });
    // abort once the statement runs on the server (no event for that: polled)
    await waitFor(async () => (await sleeping()) === 1, { what: 'pg_sleep(30) to run' });
    ac.abort(new Error('user gave up'));
    const err = await p.catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'DBX_QUERY_CANCELLED' });
    // The server no longer runs it.
    expect(await sleeping()).toBe(0);
    // runTx with an aborted statement rolls back.
    const ac2 = new AbortController();
    const tx_ = cluster.runTx(async (tx) => {
      await tx.exec("insert into items values (50, 'cancel')");
      await tx.exec('select pg_sleep(30)', [], { signal: ac2.signal });
    });
    await waitFor(async () => (await sleeping()) === 1, { what: 'pg_sleep(30) to run in the transaction' });
    ac2.abort();
    await expect(tx_).rejects.toMatchObject({ code: 'DBX_QUERY_CANCELLED' });
    expect(await cluster.queryRow('select 1 from items where id = 50')).toBeUndefined();
    // An already aborted signal rejects before anything runs.
    await expect(cluster.query('select 1', [], { signal: AbortSignal.abort() })).rejects.toMatchObject({
      code: 'DBX_QUERY_CANCELLED',
    });
  });

  it('runTx sends BEGIN with its first statement when that has no parameters, alone before one that has', async () => {
    await cluster.exec('create table carried (id int primary key, label text not null)');
    const seen: QueryMessage[] = [];
    const onMessage = (m: unknown) => seen.push(m as QueryMessage);
    subscribe('x:dbx:query', onMessage);
    try {
      const got = await cluster.runTx(async (tx) => {
        const first = await tx.queryRow<{ one: number }>('select 1 as one');
        await tx.exec("insert into carried values (7001, 'carried')");
        return first;
      });
      expect(got).toEqual({ one: 1 });
      // begin + first statement, the insert, commit: three round trips, not four
      expect(seen.map((m) => m.method)).toEqual(['tx.query', 'tx.exec', 'tx']);
      expect(seen[0]!.sql).toMatch(/^begin[^;]*;\s*select 1 as one$/);
      seen.length = 0;
      await cluster.runTx(async (tx) => {
        await tx.exec('insert into carried values ($1, $2)', [7002, 'alone']);
      });
      expect(seen.map((m) => m.sql.split(' ')[0])).toEqual(['begin', 'insert', 'commit']);
      seen.length = 0;
      // a callback that ran nothing sends nothing
      expect(await cluster.runTx(async () => 'nothing')).toBe('nothing');
      expect(seen).toEqual([]);
    } finally {
      unsubscribe('x:dbx:query', onMessage);
    }
    // The carried BEGIN opened the transaction: a throw after both kinds of first statement rolls back.
    const boom = new Error('boom');
    for (const first of [
      (tx: Tx) => tx.exec("insert into carried values (7003, 'rolled back')"),
      (tx: Tx) => tx.exec('insert into carried values ($1, $2)', [7003, 'rolled back']),
    ]) {
      await expect(
        cluster.runTx(async (tx) => {
          await first(tx);
          throw boom;
        }),
      ).rejects.toBe(boom);
    }
    expect(await cluster.query('select id from carried order by id')).toMatchObject({
      rows: [{ id: 7001 }, { id: 7002 }],
    });
  });

  it('publishes x:dbx:query with node, duration and row count, and logs slow queries without params', async () => {
    const seen: QueryMessage[] = [];
    const onMessage = (m: unknown) => seen.push(m as QueryMessage);
    subscribe('x:dbx:query', onMessage);
    try {
      await cluster
        .readQuery('select id from items where id = $1', ['secret-value-1'])
        .catch(() => undefined);
      await cluster.query('select pg_sleep(0.2), $1::text as s', ['secret-value-2']);
    } finally {
      unsubscribe('x:dbx:query', onMessage);
    }
    const read = seen.find((m) => m.method === 'readQuery');
    expect(read?.node).toMatch(/^replica/);
    expect(seen.find((m) => m.method === 'query')).toMatchObject({ node: 'primary', rowCount: 1 });
    const slow = logs.filter((l) => l.msg === 'dbx: slow query');
    expect(slow.length).toBeGreaterThan(0);
    expect(JSON.stringify(logs)).not.toContain('secret-value');
  });

  it('copyFrom / copyTo / stream run on the primary', async () => {
    async function* lines() {
      for (let i = 0; i < 500; i++) yield `${1000 + i}\tcopied ${i}\n`;
    }
    expect(await cluster.copyFrom('copy items (id, label) from stdin', lines())).toBe(500);
    const chunks: Buffer[] = [];
    for await (const c of cluster.copyTo(
      'copy (select id from items where id >= 1000 order by id) to stdout',
    )) {
      chunks.push(c);
    }
    expect(Buffer.concat(chunks).toString().trim().split('\n')).toHaveLength(500);
    let n = 0;
    for await (const row of cluster.stream<{ id: number }>(
      'select id from items where id >= $1 order by id',
      [1000],
      {
        batchSize: 64,
      },
    )) {
      expect(row.id).toBe(1000 + n);
      n++;
      if (n === 300) break;
    }
    expect(n).toBe(300);
    const primary = cluster.stats().nodes.find((x) => x.writer);
    expect(primary?.waitingCount).toBe(0);
    // A stream that is a runTx's first statement runs inside the transaction (the BEGIN that
    // runTx sends with the first statement goes ahead of the cursor): a throw rolls it back.
    await cluster.exec('create table streamed_in_tx (id int)');
    const boom = new Error('boom');
    await expect(
      cluster.runTx(async () => {
        for await (const _ of cluster.stream('insert into streamed_in_tx values (1) returning id')) {
          // read to the end
        }
        throw boom;
      }),
    ).rejects.toBe(boom);
    expect(await cluster.queryRow('select count(*)::int as n from streamed_in_tx')).toEqual({ n: 0 });
  });

  it('stats() reports per node pool totals, role, health and lag', async () => {
    for (let i = 0; i < 3; i++) await cluster.readQuery('select 1', [], { node: 'any' });
    await cluster.checkHealth();
    const s = cluster.stats();
    expect(s.writer).toBe('primary');
    expect(s.nodes.map((n) => [n.name, n.role, n.healthy])).toEqual([
      ['primary', 'primary', true],
      ['replica1', 'replica', true],
      ['replica2', 'replica', true],
    ]);
    for (const n of s.nodes) {
      expect(n.idleCount, n.name).toBeLessThanOrEqual(n.totalCount);
      expect(n.waitingCount).toBe(0);
      expect(n.queries, n.name).toBeGreaterThan(0); // every node served queries above
      expect(n.latencyMs).toBeGreaterThan(0);
      expect(n.lsn).toMatch(/\//);
    }
  });

  it('finds the real primary when the configured one is a standby (25006 re-routes the write)', async () => {
    const changes: unknown[] = [];
    await using wrong = createCluster({
      primary: { name: 'configured', connectionString: db.replicaUrls[0] as string },
      replicas: [{ name: 'actual', connectionString: db.url }],
      retry: { maxAttempts: 6, baseDelayMs: 50, maxDelayMs: 200 },
      healthCheck: { intervalMs: 5_000 },
    });
    wrong.on('roleChange', (e) => changes.push(e));
    await wrong.exec("insert into items values (60, 'rerouted')");
    expect(wrong.stats().writer).toBe('actual');
    expect(await cluster.queryRow('select label from items where id = 60')).toEqual({ label: 'rerouted' });
    expect(changes).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ node: 'configured', from: 'primary', to: 'replica' }),
        expect.objectContaining({ node: 'actual', from: 'replica', to: 'primary', writer: 'actual' }),
      ]),
    );
  });

  it('every async operation rejects with DBX_QUERY_CANCELLED on an aborted signal, holding nothing', async () => {
    const signal = AbortSignal.abort(new Error('gone'));
    const calls: Array<[string, () => Promise<unknown>]> = [
      ['query', () => cluster.query('select 1', [], { signal })],
      ['queryRow', () => cluster.queryRow('select 1', [], { signal })],
      ['exec', () => cluster.exec('select 1', [], { signal })],
      ['readQuery', () => cluster.readQuery('select 1', [], { signal })],
      ['readQueryRow', () => cluster.readQueryRow('select 1', [], { signal, token: '0/0' })],
      ['runTx', () => cluster.runTx(async () => 1, { signal })],
      ['begin', () => cluster.begin({ signal })],
      ['connect', () => cluster.connect({ signal })],
      ['copyFrom', () => cluster.copyFrom('copy items from stdin', (async function* () {})(), { signal })],
      ['checkHealth', () => cluster.checkHealth({ signal })],
      ['waitForPrimary', () => cluster.waitForPrimary({ signal })],
      [
        'stream',
        async () => {
          for await (const _ of cluster.stream('select 1', [], { signal })) {
          }
        },
      ],
      [
        'copyTo',
        async () => {
          for await (const _ of cluster.copyTo('copy (select 1) to stdout', { signal })) {
          }
        },
      ],
    ];
    for (const [name, call] of calls) {
      const err = await call().then(
        () => new Error(`${name} resolved`),
        (e: unknown) => e,
      );
      expect(err, name).toMatchObject({ code: 'DBX_QUERY_CANCELLED' });
    }
    for (const n of cluster.stats().nodes) expect(n.totalCount, n.name).toBe(n.idleCount);
  });

  it('publishes every health check on x:dbx:health', async () => {
    const seen: Array<{ node: string; ok: boolean; role?: string }> = [];
    const onMessage = (m: unknown) => seen.push(m as { node: string; ok: boolean });
    subscribe('x:dbx:health', onMessage);
    try {
      await cluster.checkHealth();
    } finally {
      unsubscribe('x:dbx:health', onMessage);
    }
    expect(seen.map((m) => [m.node, m.ok, m.role]).sort()).toEqual([
      ['primary', true, 'primary'],
      ['replica1', true, 'replica'],
      ['replica2', true, 'replica'],
    ]);
  });

  it('a replica that stops answering (traffic dropped) is excluded by the health check timeout, then readmitted', async () => {
    await using proxy = await proxyTo(db.replicaUrls[0] as string);
    await using c = createCluster({
      primary: db.url,
      replicas: [proxy.url, db.replicaUrls[1] as string],
      healthCheck: { intervalMs: 100, timeoutMs: 300, failuresBeforeDown: 2, fastRecheckMs: 20 },
      pool: { connectionTimeoutMs: 1_000 },
    });
    const events: string[] = [];
    c.on('nodeDown', (e) => events.push(`down:${e.node}`));
    c.on('nodeUp', (e) => events.push(`up:${e.node}`));
    await c.checkHealth();
    proxy.setDropping(true);
    await waitFor(() => c.stats().nodes.find((n) => n.name === 'replica1')?.healthy === false, {
      timeoutMs: 5_000,
      what: 'replica1 marked down',
    });
    expect(c.stats().nodes.find((n) => n.name === 'replica1')?.lastError).toMatch(/timed out|timeout/i);
    const ports = new Set<number>();
    for (let i = 0; i < 6; i++) {
      const r = await c.readQueryRow<Served>(WHO, [], { signal: AbortSignal.timeout(3_000) });
      ports.add(r?.port ?? 0);
    }
    expect(ports).toEqual(new Set([replicaPorts[1]]));
    proxy.setDropping(false);
    proxy.cutAll();
    await waitFor(() => c.stats().nodes.find((n) => n.name === 'replica1')?.healthy === true, {
      timeoutMs: 15_000,
      what: 'replica1 back up',
    });
    expect(events).toEqual(['down:replica1', 'up:replica1']);
  });

  it('an abort settles promptly even when the server never answers (traffic black-holed)', async () => {
    await using proxy = await proxyTo(db.replicaUrls[0] as string);
    await using c = createCluster({
      primary: db.url,
      replicas: [proxy.url],
      pool: { connectionTimeoutMs: 500 },
      healthCheck: { intervalMs: 60_000 },
    });
    expect((await c.readQueryRow<Served>(WHO, [], { node: 'replica' }))?.replica).toBe(true);
    proxy.setDropping(true);
    // the subject: a timeout signal (300 ms) ends a read the server never answers; a hang fails by the test timeout
    const err = await c
      .readQuery(WHO, [], { node: 'replica', signal: AbortSignal.timeout(300) })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'DBX_QUERY_CANCELLED' });
    proxy.setDropping(false);
    proxy.cutAll();
  });

  it('an aborted stream settles promptly when the server never answers', async () => {
    await using proxy = await proxyTo(db.url);
    await using c = createCluster({
      primary: proxy.url,
      pool: { connectionTimeoutMs: 500 },
      healthCheck: { intervalMs: 60_000 },
    });
    const ac = new AbortController();
    const err = await (async () => {
      let n = 0;
      for await (const _ of c.stream('select g from generate_series(1, 1000000) g', [], {
        signal: ac.signal,
        batchSize: 10,
      })) {
        if (++n === 20) {
          proxy.setDropping(true);
          // the subject: the abort comes while the stream waits on a server that has stopped answering
          setTimeout(() => ac.abort(), 100);
        }
      }
    })().catch((e: unknown) => e);
    // a stream that did not settle fails by the test timeout
    expect(err).toMatchObject({ code: 'DBX_QUERY_CANCELLED' });
    proxy.setDropping(false);
    proxy.cutAll();
  });

  it('close() waits for in-flight statements, then ends the pools', async () => {
    const c = createCluster({ primary: db.url, replicas: [...db.replicaUrls] });
    const running = c.queryRow<{ done: boolean }>('select pg_sleep(0.3) is not null as done');
    const reading = c.readQueryRow<{ one: number }>('select 1 as one, pg_sleep(0.2)');
    await c.close(); // called while both are in flight

    expect(await running).toEqual({ done: true });
    expect((await reading)?.one).toBe(1);
    expect(c.stats().nodes.every((n) => n.totalCount === 0)).toBe(true);
  });

  it('close() bounds the wait for a client held through connect(), and warns', async () => {
    const warned: string[] = [];
    const c = createCluster({
      primary: db.url,
      closeDrainTimeoutMs: 200,
      logger: { debug() {}, info() {}, error() {}, warn: (_o: object, m?: string) => warned.push(m ?? '') },
    });
    const held = await c.connect();
    await c.close(); // returns despite the held client: a hang fails by the test timeout
    expect(warned.some((w) => w.includes('did not end in time'))).toBe(true);
    held.release();
  });

  it('a process exits by itself right after close() (no timer or socket left behind)', async () => {
    const child = spawnNode(new URL('../fixtures/close-exit.ts', import.meta.url).pathname, [
      db.url,
      ...db.replicaUrls,
    ]);
    await child.waitForLine(/^closed$/, 30_000);
    // The child's closeDrainTimeoutMs is 10 minutes: a leftover drain timer would hold it past the test timeout.
    const exit = await child.wait();
    expect(exit.code).toBe(0);
  });

  it('stream and copyTo stop and release their connection when the signal aborts', async () => {
    const ac = new AbortController();
    let n = 0;
    const err = await (async () => {
      for await (const _ of cluster.stream('select g from generate_series(1, 100000) g', [], {
        signal: ac.signal,
        batchSize: 100,
      })) {
        if (++n === 150) ac.abort();
      }
    })().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'DBX_QUERY_CANCELLED' });
    const ac2 = new AbortController();
    const err2 = await (async () => {
      for await (const _ of cluster.copyTo('copy (select g from generate_series(1, 2000000) g) to stdout', {
        signal: ac2.signal,
      })) {
        ac2.abort();
      }
    })().catch((e: unknown) => e);
    expect(err2).toMatchObject({ code: 'DBX_QUERY_CANCELLED' });
    const primary = cluster.stats().nodes.find((x) => x.writer);
    expect(primary?.totalCount).toBe(primary?.idleCount);
    expect(await cluster.queryRow('select 1 as ok')).toEqual({ ok: 1 });
  });

  it('invalid options throw DBX_INVALID_OPTIONS; calls after close reject with DBX_CLUSTER_CLOSED', async () => {
    expect(() => createCluster({ primary: '', retry: { maxAttempts: 0 } })).toThrow(
      expect.objectContaining({ code: 'DBX_INVALID_OPTIONS' }),
    );
    const c = createCluster({ primary: db.url });
    expect(await c.queryRow('select 1 as one')).toEqual({ one: 1 });
    const closing = c.close();
    expect(c.close()).toBe(closing);
    await closing;
    await expect(c.query('select 1')).rejects.toMatchObject({ code: 'DBX_CLUSTER_CLOSED' });
    await expect(c.readQuery('select 1')).rejects.toMatchObject({ code: 'DBX_CLUSTER_CLOSED' });
  });

  it('a transaction refuses unknown per-call option keys, naming them, and stays usable', async () => {
    const invalid = (key: string) => ({
      code: 'DBX_INVALID_OPTIONS',
      message: expect.stringContaining(`${key}: unknown option`),
    });
    const inner = await cluster.runTx(async (tx) => {
      await expect(tx.query('select 1', [], { signall: undefined } as never)).rejects.toMatchObject(
        invalid('signall'),
      );
      await expect(tx.exec('select 1', [], { timeout: 5 } as never)).rejects.toMatchObject(
        invalid('timeout'),
      );
      await expect(tx.runTx(async () => 1, { readonly: true } as never)).rejects.toMatchObject(
        invalid('readonly'),
      );
      // a read inside the transaction joins it, with the read options checked first
      await expect(cluster.readQuery('select 1', [], { nodes: 'any' } as never)).rejects.toMatchObject(
        invalid('nodes'),
      );
      return tx.queryRow<{ one: number }>('select 1 as one', [], {});
    });
    expect(inner).toEqual({ one: 1 });
    const h = await cluster.begin();
    await expect(h.runTx(async () => 1, { isolation: 'snapshot' } as never)).rejects.toMatchObject({
      code: 'DBX_INVALID_OPTIONS',
      message: expect.stringContaining('"serializable"'),
    });
    await h.rollback();
  });

  it('a named statement is prepared once on its connection and then reused; a name is checked', async () => {
    const sql = 'select $1::int + 1 as v';
    const prepared = await cluster.runTx(async (tx) => {
      for (const v of [1, 2, 3]) {
        expect(await tx.queryRow<{ v: number }>(sql, [v], { name: 'dbx_named_add' })).toEqual({ v: v + 1 });
      }
      return tx.query<{ statement: string }>(
        "select statement from pg_prepared_statements where name = 'dbx_named_add'",
      );
    });
    // Prepared on the server (an unnamed statement leaves nothing there), once, with its text.
    expect(prepared.rows).toEqual([{ statement: sql }]);
    // On the writer outside a transaction too, and with exec.
    expect(await cluster.queryRow<{ v: number }>(sql, [41], { name: 'dbx_named_add' })).toEqual({ v: 42 });
    expect(await cluster.exec('select $1::int', [1], { name: 'dbx_named_one' })).toEqual({ rowCount: 1 });
    await expect(cluster.query(sql, [1], { name: '' })).rejects.toMatchObject({
      code: 'DBX_INVALID_OPTIONS',
      message: expect.stringContaining('name: expected a non-empty string'),
    });
    await expect(cluster.runTx((tx) => tx.query(sql, [1], { name: 7 } as never))).rejects.toMatchObject({
      code: 'DBX_INVALID_OPTIONS',
    });
    // One name, another text: refused by node-postgres on a connection that prepared the first.
    await expect(
      cluster.runTx(async (tx) => {
        await tx.query(sql, [1], { name: 'dbx_named_twice' });
        await tx.query('select $1::int - 1 as v', [1], { name: 'dbx_named_twice' });
      }),
    ).rejects.toMatchObject({ message: expect.stringContaining('dbx_named_twice') });
  });
});
