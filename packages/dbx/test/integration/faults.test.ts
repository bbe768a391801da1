import { type PgCluster, startPostgres, waitFor } from '@x/testkit';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Cluster, createCluster, type NodeStateEvent, type RoleChangeEvent } from '../../src/index.js';

// Kills, pauses and promotes nodes: a cluster of this file's own, never the shared one.
const WHO = 'select inet_server_port() as port';

function until(
  cond: () => boolean | Promise<boolean>,
  timeoutMs = 15_000,
  what = 'condition',
): Promise<void> {
  return waitFor(cond, { timeoutMs, what, intervalMs: 25 });
}

describe('faults: lag, dead replicas, retries, promotion', () => {
  let pgc: PgCluster;
  let cluster: Cluster;
  const events: Array<RoleChangeEvent | NodeStateEvent> = [];
  const warnings: string[] = [];
  let port: Record<string, number>;

  beforeAll(async () => {
    pgc = await startPostgres({ replicas: 2, embedded: true });
    port = Object.fromEntries([pgc.primary, ...pgc.replicas].map((n) => [n.name, n.port]));
    cluster = createCluster({
      primary: pgc.primary.url,
      replicas: pgc.replicas.map((r) => r.url),
      healthCheck: { intervalMs: 100, timeoutMs: 500, failuresBeforeDown: 2, fastRecheckMs: 30 },
      maxReplicaLagMs: 300,
      retry: { maxAttempts: 4, baseDelayMs: 20, maxDelayMs: 200 },
      pool: { max: 4, connectionTimeoutMs: 2_000 },
      logger: {
        debug() {},
        info() {},
        warn: (_o: object, msg?: string) => warnings.push(msg ?? ''),
        error() {},
      },
    });
    cluster.on('roleChange', (e) => events.push(e));
    cluster.on('nodeDown', (e) => events.push(e));
    cluster.on('nodeUp', (e) => events.push(e));
    await cluster.exec('create table items (id int primary key, label text not null)');
    await cluster.exec('create sequence runs');
    await pgc.waitForReplicas();
    await cluster.checkHealth();
  });
  afterAll(async () => {
    await cluster?.close();
    await pgc?.stop();
  });

  const servedBy = async (n: number, opts = {}) => {
    const ports = new Set<number>();
    for (let i = 0; i < n; i++)
      ports.add((await cluster.readQueryRow<{ port: number }>(WHO, [], opts))?.port ?? 0);
    return ports;
  };

  it('excludes a lagging replica (paused replay) and takes it back once it catches up', async () => {
    const replica1 = pgc.replicas[0];
    if (!replica1) throw new Error('no replica');
    await replica1.pauseReplay();
    try {
      await cluster.exec("insert into items values (1, 'lag')");
      await until(
        () => (cluster.stats().nodes.find((n) => n.name === 'replica1')?.lagMs ?? 0) > 300,
        10_000,
        'lag',
      );
      const s = cluster.stats().nodes.find((n) => n.name === 'replica1');
      expect(s?.lagBytes).toBeGreaterThan(0);
      expect(s?.healthy).toBe(true);
      const ports = await servedBy(8);
      expect(ports.has(port.replica1 as number)).toBe(false);
      expect(ports.has(port.replica2 as number)).toBe(true);
      // A per-read bound overrides the cluster's: this read tolerates any lag.
      const tolerant = await servedBy(8, { maxLagMs: null });
      expect(tolerant.has(port.replica1 as number)).toBe(true);
    } finally {
      await replica1.resumeReplay();
    }
    await until(
      () => cluster.stats().nodes.find((n) => n.name === 'replica1')?.lagMs === 0,
      10_000,
      'catch-up',
    );
    expect((await servedBy(8)).has(port.replica1 as number)).toBe(true);
  });

  it('read-your-writes under induced lag: every session read sees its own write', async () => {
    for (const r of pgc.replicas) await r.pauseReplay();
    try {
      let seen = 0;
      const total = 30;
      await Promise.all(
        Array.from({ length: 3 }, (_, w) =>
          cluster.session(async () => {
            for (let i = 0; i < total / 3; i++) {
              const id = 1000 + w * 100 + i;
              await cluster.exec("insert into items values ($1, 'ryw')", [id]);
              const row = await cluster.readQueryRow<{ id: number }>('select id from items where id = $1', [
                id,
              ]);
              if (row?.id === id) seen++;
            }
          }),
        ),
      );
      expect(seen).toBe(total);
      // The token crosses a process boundary as a string: a fresh request with it never reads stale data.
      const token = await cluster.session(async () => {
        await cluster.exec("insert into items values (2000, 'token')");
        return cluster.writeToken();
      });
      expect(typeof token).toBe('string');
      const row = await cluster.readQueryRow('select id from items where id = 2000', [], {
        token: token as string,
      });
      expect(row).toEqual({ id: 2000 });
      const seeded = await cluster.session(
        () => cluster.readQueryRow('select id from items where id = 2000'),
        {
          token,
        },
      );
      expect(seeded).toEqual({ id: 2000 });
      // Without a token, an eventual read may hit a paused replica and miss it: the lag is real.
      const direct = new pg.Client(pgc.replicas[1]?.url);
      direct.on('error', () => undefined);
      await direct.connect();
      const stale = await direct.query<{ n: number }>('select count(*)::int as n from items where id = 2000');
      await direct.end();
      expect(stale.rows[0]?.n).toBe(0);
    } finally {
      for (const r of pgc.replicas) await r.resumeReplay();
    }
    // Once replicas replayed the token, session reads go back to replicas.
    await pgc.waitForReplicas();
    const ports = await cluster.session(async () => {
      await cluster.exec("insert into items values (3000, 'after')");
      await pgc.waitForReplicas();
      return servedBy(4);
    });
    expect(ports.has(port.primary as number)).toBe(false);
  });

  it('a read with a token waits (up to readYourWritesWaitMs) for a replica to replay it', async () => {
    await using waiting = createCluster({
      primary: pgc.primary.url,
      replicas: pgc.replicas.map((r) => r.url),
      healthCheck: { intervalMs: 100, timeoutMs: 500 },
      readYourWritesWaitMs: 5_000,
    });
    await waiting.checkHealth();
    for (const r of pgc.replicas) await r.pauseReplay();
    let resumed = false;
    try {
      const token = await waiting.session(async () => {
        await waiting.exec("insert into items values (4000, 'wait')");
        return waiting.writeToken();
      });
      // the subject: replay resumes only after the read has begun waiting for the token
      setTimeout(() => {
        resumed = true;
        for (const r of pgc.replicas) r.resumeReplay().catch(() => undefined);
      }, 300);
      const row = await waiting.readQueryRow<{ id: number; port: number }>(
        'select id, inet_server_port() as port from items where id = 4000',
        [],
        { token: token as string },
      );
      expect(row?.id).toBe(4000);
      expect(row?.port).not.toBe(port.primary);
      expect(resumed).toBe(true);
    } finally {
      if (!resumed) for (const r of pgc.replicas) await r.resumeReplay();
    }
  });

  it('drops connections killed while idle, and never re-runs a statement that was in flight', async () => {
    const admin = new pg.Client(pgc.primary.url);
    await admin.connect();
    try {
      await Promise.all([cluster.exec('select 1'), cluster.exec('select 2')]);
      const primaryIdle = () => cluster.stats().nodes.find((n) => n.name === 'primary')?.idleCount ?? -1;
      expect(primaryIdle()).toBeGreaterThan(0);
      await admin.query(
        "select pg_terminate_backend(pid) from pg_stat_activity where pid <> pg_backend_pid() and backend_type = 'client backend' and application_name = ''",
      );
      await until(() => primaryIdle() === 0, 5_000, 'idle clients dropped');
      expect(await cluster.queryRow('select 42 as v')).toEqual({ v: 42 });

      // In flight: the statement may have run, so it must not be retried.
      const p = cluster.exec("select nextval('runs'), pg_sleep(5)").catch((e: unknown) => e);
      await until(async () => {
        const r = await admin.query(
          "select 1 from pg_stat_activity where query like 'select nextval%pg_sleep(5)'",
        );
        return (r.rowCount ?? 0) > 0;
      });
      await admin.query(
        "select pg_terminate_backend(pid) from pg_stat_activity where query like 'select nextval%pg_sleep(5)'",
      );
      const err = await p;
      expect(err).toMatchObject({ code: 'DBX_CONNECTION_FAILED', details: { sqlState: '57P01' } });
      expect((await admin.query<{ v: string }>('select last_value::text as v from runs')).rows[0]?.v).toBe(
        '1',
      );
    } finally {
      await admin.end();
    }
  });

  it('a connection killed under the statement that carried BEGIN: runTx runs its callback again, once', async () => {
    const admin = new pg.Client(pgc.primary.url);
    await admin.connect();
    const killUnder = async (marker: string) => {
      await until(async () => {
        const r = await admin.query(
          'select 1 from pg_stat_activity where pid <> pg_backend_pid() and state = $1 and query like $2',
          ['active', `%${marker}%`],
        );
        return (r.rowCount ?? 0) > 0;
      });
      await admin.query(
        'select pg_terminate_backend(pid) from pg_stat_activity where pid <> pg_backend_pid() and query like $1',
        [`%${marker}%`],
      );
    };
    try {
      await cluster.exec('create table if not exists carried_kill (attempt int)');
      // The first statement carries BEGIN (no parameters): killed there, nothing of the
      // transaction can have committed, so the callback runs again on another connection.
      let attempts = 0;
      const first = cluster.runTx(async (tx) => {
        attempts++;
        if (attempts === 1) await tx.exec("select pg_sleep(5), 'carried-kill-1'");
        await tx.exec('insert into carried_kill values ($1)', [attempts]);
        return attempts;
      });
      await killUnder('carried-kill-1');
      expect(await first).toBe(2);
      // A later statement in flight may have run: never retried.
      let later = 0;
      const second = cluster
        .runTx(async (tx) => {
          later++;
          await tx.exec('insert into carried_kill values ($1)', [100 + later]);
          await tx.exec("select pg_sleep(5), 'carried-kill-2'");
        })
        .catch((e: unknown) => e);
      await killUnder('carried-kill-2');
      expect(await second).toMatchObject({ code: 'DBX_CONNECTION_FAILED' });
      expect(later).toBe(1);
      expect((await admin.query('select attempt from carried_kill order by attempt')).rows).toEqual([
        { attempt: 2 },
      ]);
    } finally {
      await admin.end();
    }
  });

  it('retries the whole runTx on a serialization failure', async () => {
    await cluster.exec("insert into items values (5000, 'v0')");
    let attempts = 0;
    const result = await cluster.runTx(
      async (tx) => {
        attempts++;
        await tx.query('select label from items where id = 5000');
        if (attempts === 1) {
          // A concurrent committed update makes our update fail with 40001.
          const other = new pg.Client(pgc.primary.url);
          await other.connect();
          await other.query("update items set label = 'other' where id = 5000");
          await other.end();
        }
        await tx.exec("update items set label = 'mine' where id = 5000");
        return attempts;
      },
      { isolation: 'repeatable read' },
    );
    expect(result).toBe(2);
    expect(await cluster.queryRow('select label from items where id = 5000')).toEqual({ label: 'mine' });
    expect(cluster.stats().retries).toBeGreaterThan(0);
    // Exhaustion: the last error is the cause.
    let n = 0;
    const err = await cluster
      .runTx(
        async (tx) => {
          n++;
          await tx.query('select label from items where id = 5000');
          const other = new pg.Client(pgc.primary.url);
          await other.connect();
          await other.query(`update items set label = 'other${n}' where id = 5000`);
          await other.end();
          await tx.exec("update items set label = 'mine' where id = 5000");
        },
        { isolation: 'serializable', maxAttempts: 2 },
      )
      .catch((e: unknown) => e);
    expect(n).toBe(2);
    expect(err).toMatchObject({ code: 'DBX_RETRY_EXHAUSTED', details: { sqlState: '40001', attempts: 2 } });
  });

  it('keeps every read working while both replicas die (primary fallback), and takes them back', async () => {
    let errors = 0;
    let reads = 0;
    let stop = false;
    const loop = async () => {
      while (!stop) {
        try {
          await cluster.readQuery(WHO);
          reads++;
        } catch {
          errors++;
        }
      }
    };
    const workers = [loop(), loop(), loop()];
    await until(() => reads >= 10, 10_000, 'reads flowing before the kills');
    const [r1, r2] = pgc.replicas;
    if (!r1 || !r2) throw new Error('replicas');
    await r1.kill();
    await until(
      () => cluster.stats().nodes.find((n) => n.name === 'replica1')?.healthy === false,
      10_000,
      'down',
    );
    await r2.kill();
    await until(
      () => cluster.stats().nodes.find((n) => n.name === 'replica2')?.healthy === false,
      10_000,
      'down',
    );
    const before = reads;
    // Reads go on after both replicas are down (the wait fails the test if they stop).
    await until(() => reads >= before + 10, 10_000, 'reads served with both replicas down');
    stop = true;
    await Promise.all(workers);
    expect(errors).toBe(0);
    expect(await servedBy(3)).toEqual(new Set([port.primary]));
    expect(events.filter((e) => e.type === 'nodeDown').map((e) => e.node)).toEqual(['replica1', 'replica2']);
    // An explicit replica-only read has nowhere to go.
    await expect(cluster.readQuery(WHO, [], { node: 'replica' })).rejects.toMatchObject({
      code: 'DBX_RETRY_EXHAUSTED',
    });
    await r1.start();
    await r2.start();
    await until(() => cluster.stats().nodes.every((n) => n.healthy), 20_000, 'up');
    expect(events.filter((e) => e.type === 'nodeUp').length).toBe(2);
    await pgc.waitForReplicas();
    await until(async () => (await servedBy(4)).has(port.replica1 as number), 10_000, 'replica1 serving');
  });

  it('retries a write (connection refused, nothing sent) until the restarted primary takes it', async () => {
    await using patient = createCluster({
      primary: pgc.primary.url,
      healthCheck: { intervalMs: 100, timeoutMs: 500 },
      retry: { maxAttempts: 200, baseDelayMs: 50, maxDelayMs: 100 },
    });
    await patient.exec('select 1');
    await pgc.primary.stop();
    // Nothing is listening: without retries this fails at once.
    const failing = await cluster.exec('select 1').catch((e: unknown) => e);
    expect(failing).toMatchObject({ code: 'DBX_RETRY_EXHAUSTED' });
    expect((failing as Error).cause).toMatchObject({
      code: expect.stringMatching(/DBX_(CONNECTION_FAILED|NO_HEALTHY_NODE)/),
    });
    const write = patient.exec("insert into items values (7000, 'during restart')");
    // The write has been refused and is being retried while nothing listens; only then restart.
    await until(() => patient.stats().retries > 0, 10_000, 'a retried write');
    await pgc.primary.start();
    await write;
    await cluster.waitForPrimary({ timeoutMs: 20_000 });
    expect(await cluster.queryRow('select id from items where id = 7000')).toEqual({ id: 7000 });
    await pgc.waitForReplicas();
  });

  it('detects a promoted replica: writes follow it, with an event and a log line', async () => {
    const r1 = pgc.replicas[0];
    if (!r1) throw new Error('replica');
    await pgc.primary.kill();
    await r1.promote();
    await until(() => cluster.stats().writer === 'replica1', 15_000, 'writer switch');
    const change = events.find((e) => e.type === 'roleChange' && e.node === 'replica1');
    expect(change).toMatchObject({ from: 'replica', to: 'primary', writer: 'replica1' });
    expect(warnings.some((w) => w.includes('role change') && w.includes('replica1'))).toBe(true);
    expect(await cluster.queryRow<{ port: number }>(WHO)).toEqual({ port: port.replica1 });
    await cluster.exec("insert into items values (9000, 'after failover')");
    expect(
      await cluster.readQueryRow('select id from items where id = 9000', [], { node: 'primary' }),
    ).toEqual({
      id: 9000,
    });
    // The old primary comes back, still a primary on the old timeline (split brain): the newest
    // promotion keeps the writes, and the situation is logged.
    await pgc.primary.start();
    await until(
      () => cluster.stats().nodes.find((n) => n.name === 'primary')?.healthy === true,
      15_000,
      'old up',
    );
    await until(() => warnings.some((w) => w.includes('more than one node')), 5_000, 'split-brain warning');
    expect(cluster.stats().writer).toBe('replica1');
    expect(await cluster.queryRow<{ port: number }>(WHO)).toEqual({ port: port.replica1 });
  });
});
