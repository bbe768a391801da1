import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { spawnNode } from '@x/testkit';
import { describe, expect, it } from 'vitest';
import { type Device, rows, snapshot } from '../helpers/device.js';
import { deviceSuite } from '../helpers/suite.js';

const CHILD = join(import.meta.dirname, '../helpers/crash-child.ts');

const suite = deviceSuite('d');

async function bundleCount(user: string): Promise<number> {
  const [r] = await suite.server.query<{ n: string }>(
    `SELECT COUNT(*)::text AS n FROM sync.bundle_log b JOIN sync.user_state u USING (user_pk) WHERE u.user_id = $1`,
    [user],
  );
  return Number(r?.n);
}

async function seededUser(count: number): Promise<{ user: string; seed: Device }> {
  const user = `u-${randomUUID()}`;
  const seed = await suite.attached(user);
  seed.db.transaction(() => {
    for (let i = 0; i < count; i++)
      seed.db.prepare(`INSERT INTO users(id, name) VALUES (?, ?)`).run(randomUUID(), `seed ${i}`);
  })();
  await seed.client.sync();
  return { user, seed };
}

interface KillOptions {
  /** More arguments of the child (its `n`). */
  args?: string[];
  timeoutMs?: number;
  /** For the pull modes: run once the child has attached, before it is told to pull. */
  attached?: () => Promise<void>;
}

/** Runs crash-child.ts in `mode` and SIGKILLs it when it prints `line`; returns that line. */
async function killAt(mode: string, path: string, user: string, line: RegExp, opts: KillOptions = {}) {
  const child = spawnNode(CHILD, [mode, path, suite.server.baseUrl, user, ...(opts.args ?? [])]);
  if (opts.attached) {
    await child.waitForLine(/ATTACHED/, 30_000);
    await opts.attached();
    child.send('go');
  }
  const printed = await child.waitForLine(line, opts.timeoutMs ?? 30_000);
  child.kill('SIGKILL');
  const exit = await child.wait();
  expect(exit.signal).toBe('SIGKILL');
  return printed;
}

/** After a kill inside the snapshot apply: nothing applied, and the next attach hydrates `seed`'s rows. */
async function expectHydratesAgain(user: string, path: string, seed: Device, rowCount: number) {
  const d = suite.device(user, {}, path);
  await d.client.open();
  expect(d.db.prepare(`SELECT COUNT(*) FROM users`).pluck().get()).toBe(0);
  expect(d.db.prepare(`SELECT COUNT(*) FROM _sync_row_state`).pluck().get()).toBe(0);
  expect(await d.client.attach(user)).toMatchObject({ outcome: 'used_remote_state', restore: { rowCount } });
  expect(snapshot(d.db)).toEqual(snapshot(seed.db));
}

describe('a device process killed mid-sync loses and duplicates nothing', () => {
  it('killed before the push commit: the frozen bundle is uploaded again, once', async () => {
    const user = `u-${randomUUID()}`;
    const path = suite.path('crash');
    await killAt('push-before-commit', path, user, /AT_COMMIT/, { args: ['12'] });
    expect(await suite.serverUsers(user)).toHaveLength(0);
    const d = suite.device(user, {}, path);
    await d.client.open();
    expect(await d.client.pendingStatus()).toMatchObject({ outboxRows: 12 });
    expect(await d.client.attach(user)).toMatchObject({ outcome: 'resumed_attached_state' });
    expect(await d.client.pushPending()).toMatchObject({ outcome: 'committed', rowCount: 12 });
    expect(await suite.serverUsers(user)).toHaveLength(12);
    expect(await bundleCount(user)).toBe(1);
    expect(await d.client.pendingStatus()).toMatchObject({ total: 0 });
  });

  it('killed after the commit, before the replay: the committed bundle is replayed, not re-committed', async () => {
    const user = `u-${randomUUID()}`;
    const path = suite.path('crash');
    await killAt('push-after-commit', path, user, /COMMITTED/, { args: ['7'] });
    expect(await suite.serverUsers(user)).toHaveLength(7);
    const d = suite.device(user, {}, path);
    await d.client.open();
    await d.client.attach(user);
    d.db.prepare(`INSERT INTO users(id, name) VALUES (?, 'after restart')`).run(randomUUID());
    await d.client.sync();
    await d.client.sync();
    expect(await bundleCount(user)).toBe(2);
    const local = rows(d.db, 'users').map((r) => ({ id: r.id, name: r.name }));
    expect(local).toEqual(await suite.serverUsers(user));
    expect(await d.client.pendingStatus()).toMatchObject({ total: 0 });
  });

  it('killed while staging a hydrate: the next attach hydrates from scratch', async () => {
    const { user } = await seededUser(45);
    const path = suite.path('crash');
    await killAt('hydrate-staging', path, user, /STAGING/);
    const d = suite.device(user, {}, path);
    await d.client.open();
    // a pending remote replace keeps app writes out until it finishes
    expect(() => d.db.prepare(`INSERT INTO users(id, name) VALUES ('x', 'x')`).run()).toThrow(
      /SYNC_TRANSITION_PENDING/,
    );
    expect(await d.client.attach(user)).toMatchObject({
      outcome: 'used_remote_state',
      restore: { rowCount: 45 },
    });
    expect(rows(d.db, 'users').map((r) => ({ id: r.id, name: r.name }))).toEqual(
      await suite.serverUsers(user),
    );
  });

  it('killed inside the snapshot apply transaction: nothing applied, the next attach hydrates', async () => {
    const { user, seed } = await seededUser(300);
    const path = suite.path('crash');
    await killAt('apply-stall', path, user, /MID_APPLY/, { args: ['150'] });
    await expectHydratesAgain(user, path, seed, 300);
  });

  it('killed between two slices of the snapshot apply: the app saw the previous state, nothing applied', async () => {
    const { user, seed } = await seededUser(2500);
    const path = suite.path('crash');
    const line = await killAt('apply-slices', path, user, /BETWEEN_SLICES/, { timeoutMs: 60_000 });
    // the app's connection read the state before the hydrate while the first page (10 rows) sat in
    // the open transaction of the stage-free hydrate
    expect(line).toMatch(/ 10\/2500 app sees 0$/);
    await expectHydratesAgain(user, path, seed, 2500);
  });

  it('killed in the middle of a stage-free rebuild: the previous state stays readable, the next sync applies every row', async () => {
    const { user, seed } = await seededUser(1200);
    const path = suite.path('crash');
    const before = await suite.attached(user, {}, path);
    const previous = snapshot(before.db);
    expect(rows(before.db, 'users')).toHaveLength(1200);
    await before.close();
    // the server moves on: 300 more rows and one changed
    seed.db.transaction(() => {
      for (let i = 0; i < 300; i++)
        seed.db.prepare(`INSERT INTO users(id, name) VALUES (?, ?)`).run(randomUUID(), `later ${i}`);
      seed.db.prepare(`UPDATE users SET name = 'changed' WHERE rowid = 1`).run();
    })();
    await seed.client.sync();
    const line = await killAt('rebuild-slices', path, user, /BETWEEN_SLICES/, { timeoutMs: 60_000 });
    // pages of the new snapshot sat in the open transaction; the app's connection read the old rows
    expect(line).toMatch(/ \d+\/1500 app sees 1200$/);
    const d = suite.device(user, {}, path);
    await d.client.open();
    expect(snapshot(d.db)).toEqual(previous);
    expect(d.db.prepare(`SELECT COUNT(*) FROM _sync_row_state`).pluck().get()).toBe(1200);
    // the binding was attached: the attach resumes it, and the next sync finishes the rebuild the
    // kill interrupted (its gate was committed before the swap began)
    expect(await d.client.attach(user)).toMatchObject({ outcome: 'resumed_attached_state' });
    await d.client.sync();
    expect(snapshot(d.db)).toEqual(snapshot(seed.db));
    expect(d.db.prepare(`SELECT COUNT(*) FROM _sync_row_state`).pluck().get()).toBe(1500);
  });

  it('killed inside a pulled bundle apply: the bundle and its checkpoint roll back together', async () => {
    const { user, seed } = await seededUser(1);
    const path = suite.path('crash');
    await killAt('pull-stall', path, user, /MID_APPLY/, {
      args: ['5'],
      attached: async () => {
        seed.db.transaction(() => {
          for (let i = 0; i < 10; i++) {
            seed.db.prepare(`INSERT INTO users(id, name) VALUES (?, ?)`).run(randomUUID(), `big bundle ${i}`);
          }
        })();
        await seed.client.sync();
      },
    });
    const d = suite.device(user, {}, path);
    await d.client.open();
    expect(rows(d.db, 'users')).toHaveLength(1);
    expect((await d.client.readStatus()).lastBundleSeqSeen).toBe(1);
    await d.client.attach(user);
    expect(await d.client.pullToStable()).toMatchObject({ outcome: 'applied_incremental', rowsApplied: 10 });
    expect(snapshot(d.db)).toEqual(snapshot(seed.db));
  });

  it('killed between two pulled bundles: the checkpoint kept the applied one', async () => {
    const { user, seed } = await seededUser(1);
    const path = suite.path('crash');
    await killAt('pull-between-bundles', path, user, /PULLING/, {
      attached: async () => {
        for (let i = 0; i < 3; i++) {
          seed.db.prepare(`INSERT INTO users(id, name) VALUES (?, ?)`).run(randomUUID(), `bundle ${i}`);
          await seed.client.sync();
        }
      },
    });
    const d = suite.device(user, {}, path);
    await d.client.open();
    expect(rows(d.db, 'users')).toHaveLength(2);
    await d.client.attach(user);
    expect(await d.client.pullToStable()).toMatchObject({
      outcome: 'applied_incremental',
      bundlesApplied: 2,
    });
    expect(snapshot(d.db)).toEqual(snapshot(seed.db));
  });
});
