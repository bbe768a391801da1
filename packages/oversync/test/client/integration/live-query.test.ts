import { randomUUID } from 'node:crypto';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { createSyncClient, type SyncClient } from '@x/oversync/client';
import { tempSqlite } from '@x/testkit';
import { createWriteCoordinator } from '@x/writecoordinator';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import type { Device } from '../helpers/device.js';
import { CLIENT_TABLES, SQLITE_BUSINESS_DDL } from '../helpers/schema.js';
import { deviceSuite } from '../helpers/suite.js';

const suite = deviceSuite('live');
const { attached } = suite;

type Row = Record<string, unknown>;

/** Pulls results of one `for await` by hand: `next()` is the next result (fails after `ms`). */
function reader<R = Row>(iterable: AsyncIterable<R[]>) {
  const it = iterable[Symbol.asyncIterator]();
  return {
    it,
    async next(what = 'a result', ms = 10_000): Promise<R[]> {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
      });
      try {
        const r = await Promise.race([it.next(), deadline]);
        if (r.done) throw new Error(`${what}: the iteration ended`);
        return r.value;
      } finally {
        clearTimeout(timer);
      }
    },
    async ended(ms = 10_000): Promise<boolean> {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`not ended within ${ms} ms`)), ms);
      });
      try {
        return (await Promise.race([it.next(), deadline])).done === true;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

/**
 * A SQL function `probe()` on the device's connection that counts the query's runs and lets a
 * test wait for the next one (a watched query selects it once per run).
 */
function probe(db: Database.Database) {
  let runs = 0;
  let waiters: Array<() => void> = [];
  db.function('probe', { deterministic: false }, () => {
    runs++;
    const w = waiters;
    waiters = [];
    queueMicrotask(() => {
      for (const f of w) f();
    });
    return 1;
  });
  return {
    get runs() {
      return runs;
    },
    /** Resolves after the next run has read (and its result has been compared). */
    nextRun(): Promise<void> {
      return new Promise<void>((resolve) => waiters.push(resolve)).then(() => nextTurn());
    },
  };
}

/** A fresh attached device with `probe()` on its connection, watching `sql`. */
async function probed<R = Row>(sql: string, opts: { throttleMs?: number } = {}) {
  const d = await attached(`u-${randomUUID()}`);
  const p = probe(d.db);
  return { d, p, r: reader(d.client.watch<R>(sql, [], opts)) };
}

const insertUser = (d: Device, name: string, id = randomUUID()) => {
  d.db.prepare(`INSERT INTO users(id, name) VALUES (?, ?)`).run(id, name);
  return id;
};
const names = (rows: Row[]) => rows.map((r) => r.name);

describe('client.watch: live queries', () => {
  it('yields the current result at once, then after each local write to a table it reads', async () => {
    const d = await attached(`u-${randomUUID()}`);
    insertUser(d, 'ann');
    const r = reader(d.client.watch(`SELECT name FROM users ORDER BY name`));
    expect(names(await r.next('first result'))).toEqual(['ann']);
    insertUser(d, 'bob');
    expect(names(await r.next('after a local insert'))).toEqual(['ann', 'bob']);
    d.db.prepare(`UPDATE users SET name = 'bea' WHERE name = 'bob'`).run();
    expect(names(await r.next('after a local update'))).toEqual(['ann', 'bea']);
    d.db.prepare(`DELETE FROM users WHERE name = 'ann'`).run();
    expect(names(await r.next('after a local delete'))).toEqual(['bea']);
    await r.it.return?.();
  });

  it('does not re-run for a table it does not read, and never yields an unchanged result', async () => {
    const { d, p, r } = await probed<{ names: string | null }>(
      `SELECT probe() AS p, (SELECT group_concat(name) FROM users WHERE name LIKE 'a%') AS names`,
    );
    expect((await r.next())[0]?.names).toBe(null);
    const runs = p.runs;
    // posts is not read by the query: no re-run
    d.db.prepare(`INSERT INTO posts(id, title) VALUES (?, 'p')`).run(randomUUID());
    // users is, but the result stays the same: a re-run, nothing yielded
    const rerun = p.nextRun();
    insertUser(d, 'zed');
    await rerun;
    expect(p.runs).toBe(runs + 1);
    // the next result is the one after the next real change: nothing came in between
    insertUser(d, 'amy');
    expect((await r.next('after a change'))[0]?.names).toBe('amy');
    expect(p.runs).toBe(runs + 2);
    await r.it.return?.();
  });

  it('finds the tables through views and joins', async () => {
    const d = await attached(`u-${randomUUID()}`);
    d.db.exec(
      `CREATE VIEW IF NOT EXISTS post_authors AS SELECT p.title, u.name FROM posts p JOIN users u ON u.id = p.author_id`,
    );
    const author = insertUser(d, 'ann');
    const r = reader(d.client.watch(`SELECT title, name FROM post_authors ORDER BY title`));
    expect(await r.next()).toEqual([]);
    d.db.prepare(`INSERT INTO posts(id, title, author_id) VALUES (?, 'hello', ?)`).run(randomUUID(), author);
    expect(await r.next('after a write to posts')).toEqual([{ title: 'hello', name: 'ann' }]);
    d.db.prepare(`UPDATE users SET name = 'anne' WHERE id = ?`).run(author);
    expect(await r.next('after a write to users')).toEqual([{ title: 'hello', name: 'anne' }]);
    await r.it.return?.();
  });

  it('yields the rows of another device once its bundle is pulled', async () => {
    const user = `u-${randomUUID()}`;
    const a = await attached(user);
    const b = await attached(user);
    const r = reader(a.client.watch(`SELECT name FROM users ORDER BY name`));
    expect(await r.next()).toEqual([]);
    insertUser(b, 'from b');
    await b.client.sync();
    await a.client.pullToStable();
    expect(names(await r.next('after the pull'))).toEqual(['from b']);
    await r.it.return?.();
  });

  it('coalesces a burst of writes into one re-run', async () => {
    const { d, p, r } = await probed<{ n: number }>(
      `SELECT (SELECT count(*) FROM users) AS n, probe() AS p`,
      {
        throttleMs: 1_000,
      },
    );
    expect((await r.next())[0]?.n).toBe(0);
    const runs = p.runs;
    // 20 writes, each in its own transaction and its own turn of the event loop
    for (let i = 0; i < 20; i++) {
      insertUser(d, `burst ${i}`);
      await nextTurn();
    }
    expect((await r.next('after the burst'))[0]?.n).toBe(20);
    expect(p.runs).toBe(runs + 1);
    await r.it.return?.();
  });

  it('binds parameters, positional and named', async () => {
    const d = await attached(`u-${randomUUID()}`);
    insertUser(d, 'ann');
    insertUser(d, 'bob');
    const byPos = reader(d.client.watch(`SELECT name FROM users WHERE name = ?`, ['bob']));
    const byName = reader(d.client.watch(`SELECT name FROM users WHERE name = @n`, { n: 'ann' }));
    expect(names(await byPos.next())).toEqual(['bob']);
    expect(names(await byName.next())).toEqual(['ann']);
    await byPos.it.return?.();
    await byName.it.return?.();
  });

  it('ends by return(), by its signal and by client.close(), and leaves no trigger behind', async () => {
    const d = await attached(`u-${randomUUID()}`);
    const tempTriggers = () =>
      d.db
        .prepare(
          `SELECT name FROM sqlite_temp_master WHERE type = 'trigger' AND name LIKE 'x_oversync_watch_%'`,
        )
        .pluck()
        .all();
    const byReturn = reader(d.client.watch(`SELECT name FROM users`));
    await byReturn.next();
    expect(tempTriggers().length).toBeGreaterThan(0);
    await byReturn.it.return?.();
    expect(await byReturn.ended()).toBe(true);

    const ac = new AbortController();
    const bySignal = reader(d.client.watch(`SELECT name FROM users`, [], { signal: ac.signal }));
    await bySignal.next();
    ac.abort();
    expect(await bySignal.ended()).toBe(true);

    const byClose = reader(d.client.watch(`SELECT name FROM users`));
    await byClose.next();
    const results: Row[][] = [];
    let errors = 0;
    const stop = d.client.watch(`SELECT title FROM posts`, [], {
      onResult: (rows) => results.push(rows),
      onError: () => errors++,
    });
    await d.client.close();
    expect(await byClose.ended()).toBe(true);
    expect(tempTriggers()).toEqual([]);
    stop();
    expect(errors).toBe(0);
    // after close: an iteration ends at once, a callback watch gets OVERSYNC_CLIENT_CLOSED
    expect(await reader(d.client.watch(`SELECT 1`)).ended()).toBe(true);
    const closedError = await new Promise((resolve) => {
      d.client.watch(`SELECT 1`, [], { onResult: () => {}, onError: resolve });
    });
    expect(closedError).toMatchObject({ code: 'OVERSYNC_CLIENT_CLOSED' });
  });

  it('calls onResult until the returned function is called', async () => {
    const d = await attached(`u-${randomUUID()}`);
    const seen: unknown[][] = [];
    let wake: () => void = () => {};
    const stop = d.client.watch(`SELECT name FROM users ORDER BY name`, [], {
      onResult: (rows) => {
        seen.push(names(rows));
        wake();
      },
    });
    const next = () => new Promise<void>((resolve) => (wake = resolve));
    await next();
    const second = next();
    insertUser(d, 'ann');
    await second;
    expect(seen).toEqual([[], ['ann']]);
    stop();
    const p = probe(d.db);
    // a watch of the same table still running shows the write was noticed; the stopped one stays quiet
    const r = reader(d.client.watch(`SELECT probe() AS p, (SELECT count(*) FROM users) AS n`));
    await r.next();
    insertUser(d, 'bob');
    await r.next('the other watch');
    expect(seen).toEqual([[], ['ann']]);
    expect(p.runs).toBe(2);
    await r.it.return?.();
  });

  it('refuses a statement that writes, and fails on one that does not prepare', async () => {
    const d = await attached(`u-${randomUUID()}`);
    const write = reader(d.client.watch(`DELETE FROM users`));
    await expect(write.next()).rejects.toMatchObject({ code: 'OVERSYNC_CLIENT_INVALID_OPTIONS' });
    const bad = reader(d.client.watch(`SELECT nope FROM nowhere`));
    await expect(bad.next()).rejects.toThrow(/no such table/);
    expect(() => d.client.watch(`SELECT 1`, [], { throttleMs: -1 })).toThrow(
      expect.objectContaining({ code: 'OVERSYNC_CLIENT_INVALID_OPTIONS' }),
    );
  });
});

describe('client.watch through a write coordinator', () => {
  it('yields after app writes submitted to the coordinator and after pulls applied through it', async () => {
    const user = `u-${randomUUID()}`;
    const tmp = await tempSqlite('oversync-live-coord');
    const db = new Database(tmp.path);
    db.exec(SQLITE_BUSINESS_DDL);
    const coordinator = createWriteCoordinator({ database: db });
    let client: SyncClient | undefined;
    try {
      client = createSyncClient({
        writer: coordinator,
        baseUrl: suite.server.baseUrl,
        token: user,
        schema: 'business',
        tables: CLIENT_TABLES,
      });
      await client.open();
      await client.attach(user);
      const r = reader(client.watch(`SELECT name FROM users ORDER BY name`));
      expect(await r.next()).toEqual([]);
      await coordinator.submit((x) =>
        x.prepare(`INSERT INTO users(id, name) VALUES (?, 'via coordinator')`).run(randomUUID()),
      );
      expect(names(await r.next('after a coordinator job'))).toEqual(['via coordinator']);
      const other = await attached(user);
      insertUser(other, 'pulled');
      await other.client.sync();
      await client.sync();
      expect(names(await r.next('after a pull through the coordinator'))).toEqual([
        'pulled',
        'via coordinator',
      ]);
      await client.close();
      expect(await r.ended()).toBe(true);
    } finally {
      await client?.close();
      await coordinator.close();
      db.close();
      await tmp.cleanup();
    }
  });
});
