// Devices that race on related rows (lists → items, lists → lists, both ON DELETE CASCADE): no
// device is ever wedged, every lost local edit is in the device's conflict log.
import { randomUUID } from 'node:crypto';
import type { ConflictResolver } from '@x/oversync/client';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CONVERGENCE_TABLES, PG_CONVERGENCE_DDL, SQLITE_CONVERGENCE_DDL } from '../../convergence/schema.js';
import { type Device, type DeviceOptions, networkOp, rows, snapshot } from '../helpers/device.js';
import type { TestSchema } from '../helpers/schema.js';
import { deviceSuite } from '../helpers/suite.js';

const LISTS: TestSchema = {
  pg: PG_CONVERGENCE_DDL,
  sqlite: SQLITE_CONVERGENCE_DDL,
  tables: CONVERGENCE_TABLES,
};
const suite = deviceSuite('fk', { schema: LISTS });

function addList(d: Device, name: string, parent: string | null = null): string {
  const id = randomUUID();
  d.db.prepare(`INSERT INTO lists(id, name, parent_list_id) VALUES (?, ?, ?)`).run(id, name, parent);
  return id;
}
function addItem(d: Device, listId: string, title: string): string {
  const id = randomUUID();
  d.db.prepare(`INSERT INTO items(id, list_id, title) VALUES (?, ?, ?)`).run(id, listId, title);
  return id;
}
function state(d: Device) {
  return snapshot(d.db, LISTS.tables);
}
async function serverState(user: string) {
  const lists = await suite.server.query(
    `SELECT id::text AS id, name, parent_list_id::text AS parent_list_id, rev FROM business.lists
     WHERE _sync_scope_id = $1 ORDER BY id`,
    [user],
  );
  const items = await suite.server.query(
    `SELECT id::text AS id, list_id::text AS list_id, title, done::int AS done, position, rev FROM business.items
     WHERE _sync_scope_id = $1 ORDER BY id`,
    [user],
  );
  return { lists, items };
}
/** Syncs every device until none has anything left to push (bounded). */
async function settle(...ds: Device[]): Promise<void> {
  for (let round = 0; round < 6; round++) {
    for (const d of ds) await d.client.sync();
    const pending = await Promise.all(ds.map((d) => d.client.pendingStatus()));
    if (pending.every((p) => p.total === 0)) {
      for (const d of ds) await d.client.sync();
      return;
    }
  }
  throw new Error('devices did not settle in 6 rounds');
}

/** Two attached devices of a fresh user that share list `l` (and nothing else). */
async function pair(optsY: DeviceOptions = {}) {
  const user = `u-${randomUUID()}`;
  const x = await suite.attached(user);
  const l = addList(x, 'L');
  await x.client.sync();
  const y = await suite.attached(user, optsY);
  expect(rows(y.db, 'lists')).toHaveLength(1);
  return { user, x, y, l };
}

describe('foreign keys across devices', () => {
  it('parent deleted elsewhere: the child follows its parent by default, recorded, and the device syncs on', async () => {
    const { user, x, y, l } = await pair();
    x.db.prepare(`DELETE FROM lists WHERE id = ?`).run(l);
    await x.client.sync();
    const item = addItem(y, l, 'added offline');
    const events: string[] = [];
    y.client.on('conflict', (e) => events.push(`${e.context.reason}:${e.record.rule}`));
    const r = await y.client.sync();
    expect(r.push).toMatchObject({ outcome: 'no_change', conflictsResolved: 1 });
    expect(events).toEqual(['foreign_key:resolver']);
    const [c] = await y.client.conflicts({ lostOnly: true });
    expect(c).toMatchObject({
      table: 'items',
      key: { id: item },
      reason: 'foreign_key',
      localOp: 'INSERT',
      resolution: 'accept-server',
      localLost: true,
      serverRow: null,
    });
    expect(c?.localPayload).toMatchObject({ title: 'added offline', list_id: l });
    expect(c?.details).toMatchObject({ references: { table: 'lists', key: { id: l }, deleted: true } });
    // not wedged: later edits of any table still sync
    const l2 = addList(y, 'after');
    await settle(x, y);
    expect(state(x)).toEqual(state(y));
    expect((await serverState(user)).lists.map((r) => r.id)).toEqual([l2]);
  });

  it('parent deleted elsewhere: keep-local re-creates the parent, merged moves the child', async () => {
    for (const kind of ['keep-local', 'merged'] as const) {
      const user = `u-${randomUUID()}`;
      const x = await suite.attached(user);
      const l = addList(x, 'L');
      const keep = addList(x, 'keep');
      await x.client.sync();
      const resolver: ConflictResolver = (ctx) => {
        if (ctx.reason !== 'foreign_key') return { kind: 'accept-server' };
        expect(ctx.references).toMatchObject({ table: 'lists', key: { id: l }, recoverable: true });
        return kind === 'keep-local' ? { kind } : { kind, payload: { ...ctx.localPayload, list_id: keep } };
      };
      const y = await suite.attached(user, { resolver });
      x.db.prepare(`DELETE FROM lists WHERE id = ?`).run(l);
      await x.client.sync();
      const item = addItem(y, l, 'mine');
      await settle(y, x);
      expect(state(x)).toEqual(state(y));
      const server = await serverState(user);
      expect(server.items).toEqual([
        expect.objectContaining({ id: item, list_id: kind === 'merged' ? keep : l }),
      ]);
      expect(server.lists.map((r) => r.id).sort()).toEqual(kind === 'merged' ? [keep] : [keep, l].sort());
      const [c] = await y.client.conflicts();
      expect(c).toMatchObject({
        reason: 'foreign_key',
        resolution: kind,
        localLost: false,
        rule: kind === 'keep-local' ? 'parent-recreated' : 'resolver',
      });
    }
  });

  it('a device that pulled the parent delete first keeps syncing; its child becomes a recorded conflict', async () => {
    const { x, y, l } = await pair();
    const item = addItem(y, l, 'unpushed');
    x.db.prepare(`DELETE FROM lists WHERE id = ?`).run(l);
    await x.client.sync();
    const pulled = await y.client.pullToStable();
    expect(pulled.outcome).toBe('applied_incremental');
    expect(rows(y.db, 'lists')).toEqual([]);
    await settle(y, x);
    expect(state(x)).toEqual(state(y));
    expect(rows(y.db, 'items')).toEqual([]);
    expect(await y.client.conflicts({ lostOnly: true })).toEqual([
      expect.objectContaining({ table: 'items', key: { id: item }, reason: 'foreign_key' }),
    ]);
  });

  it('a sub-list added under a list deleted elsewhere follows it (self-reference)', async () => {
    const { user, x, y, l } = await pair();
    x.db.prepare(`DELETE FROM lists WHERE id = ?`).run(l);
    await x.client.sync();
    const sub = addList(y, 'sub', l);
    addItem(y, sub, 'in sub');
    await settle(y, x);
    expect(state(x)).toEqual(state(y));
    expect(await serverState(user)).toEqual({ lists: [], items: [] });
    const lost = await y.client.conflicts({ lostOnly: true });
    expect(lost.map((c) => c.table).sort()).toEqual(['items', 'lists']);
  });

  it('accepting a server row whose parent the device has not pulled yet works; the pull completes it', async () => {
    const { user, x, y, l } = await pair();
    const item = addItem(x, l, 'shared');
    await x.client.sync();
    await y.client.sync();
    const l2 = addList(x, 'L2');
    x.db.prepare(`UPDATE items SET list_id = ?, title = 'moved by x' WHERE id = ?`).run(l2, item);
    await x.client.sync();
    y.db.prepare(`UPDATE items SET title = 'edited by y' WHERE id = ?`).run(item);
    const pushed = await y.client.pushPending();
    expect(pushed).toMatchObject({ outcome: 'no_change', conflictsResolved: 1 });
    // y accepted x's row, which points at l2 before y has it: it waits for its parent
    expect(rows(y.db, 'items')).toEqual([]);
    await y.client.pullToStable();
    expect(rows(y.db, 'items')).toEqual([
      expect.objectContaining({ id: item, list_id: l2, title: 'moved by x' }),
    ]);
    await settle(x, y);
    expect(state(x)).toEqual(state(y));
    expect((await serverState(user)).items).toEqual([
      expect.objectContaining({ id: item, list_id: l2, title: 'moved by x' }),
    ]);
    expect(await y.client.conflicts({ lostOnly: true })).toEqual([
      expect.objectContaining({
        reason: 'row_version',
        localPayload: expect.objectContaining({ title: 'edited by y' }),
      }),
    ]);
  });

  it('a pulled parent delete never cascades away a newer row (own bundle replayed before the older peer bundles)', async () => {
    const { user, x, y, l } = await pair();
    const z = await suite.attached(user, { resolver: 'client-wins' });
    x.db.prepare(`DELETE FROM lists WHERE id = ?`).run(l);
    await x.client.sync();
    z.db.prepare(`UPDATE lists SET name = 'kept by z' WHERE id = ?`).run(l);
    await z.client.sync(); // keep-local: z re-creates l on top of x's delete
    const item = addItem(y, l, 'into l');
    expect(await y.client.pushPending()).toMatchObject({ outcome: 'committed' });
    // y now pulls x's delete of l (older than its own bundle), then z's re-creation
    await y.client.pullToStable();
    expect(rows(y.db, 'items')).toEqual([expect.objectContaining({ id: item, list_id: l })]);
    await settle(x, y, z);
    expect(state(x)).toEqual(state(y));
    expect(state(z)).toEqual(state(y));
    expect((await serverState(user)).items).toEqual([expect.objectContaining({ id: item })]);
  });

  it("a pushed row that the server's own cascade removes in the same commit is followed and recorded", async () => {
    const { user, x, y, l } = await pair();
    const top = addList(x, 'top');
    await x.client.sync();
    await y.client.sync();
    // y moves l under top; x, which has not pulled that, adds an item to l and deletes top
    y.db.prepare(`UPDATE lists SET parent_list_id = ? WHERE id = ?`).run(top, l);
    await y.client.sync();
    const item = addItem(x, l, 'into l');
    x.db.prepare(`DELETE FROM lists WHERE id = ?`).run(top);
    expect(await x.client.pushPending()).toMatchObject({ outcome: 'committed' });
    expect(await x.client.conflicts({ lostOnly: true })).toEqual([
      expect.objectContaining({ table: 'items', key: { id: item }, reason: 'deleted_by_cascade' }),
    ]);
    await settle(x, y);
    expect(state(x)).toEqual(state(y));
    expect(await serverState(user)).toEqual({ lists: [], items: [] });
    for (const d of [x, y]) {
      expect(d.db.prepare(`SELECT COUNT(*) FROM _sync_orphan_rows`).pluck().get()).toBe(0);
    }
  });

  it("a row edited after the freeze that the server's cascade deletes in the same commit keeps its edit (CI seed 1403)", async () => {
    // The replay took a committed row that was not in its outbox (the server's cascade) as
    // someone else's and applied it like a pull, deleting the dirty row of an edit made while
    // the push was in flight: the edit vanished without a conflict record.
    let duringPush: (() => void) | undefined;
    const { user, x, y, l } = await pair({});
    const xs = await suite.attached(user, {
      fetch: (u, i) => {
        if (duringPush && new URL(u).pathname.startsWith('/sync/push') && i.method === 'POST') {
          duringPush();
          duringPush = undefined;
        }
        return globalThis.fetch(u, i);
      },
    });
    const item = addItem(xs, l, 'in l');
    const top = addList(xs, 'top');
    await xs.client.sync();
    await y.client.sync();
    // y moves l under top; xs, which has not pulled that, deletes top, and edits the item in l
    // once its push is frozen and on the wire
    y.db.prepare(`UPDATE lists SET parent_list_id = ? WHERE id = ?`).run(top, l);
    await y.client.sync();
    xs.db.prepare(`DELETE FROM lists WHERE id = ?`).run(top);
    duringPush = () =>
      xs.db.prepare(`UPDATE items SET title = 'edited during the push' WHERE id = ?`).run(item);
    expect(await xs.client.pushPending()).toMatchObject({ outcome: 'committed' });
    expect(duringPush).toBeUndefined();
    // The edit is still queued, not dropped with the server's delete.
    expect(
      xs.db
        .prepare(`SELECT json_extract(payload, '$.title') FROM _sync_dirty_rows WHERE key_json LIKE ?`)
        .pluck()
        .get(`%${item}%`),
    ).toBe('edited during the push');
    await settle(x, y, xs);
    // server-wins: the row stays deleted, and the device's conflict log says what it lost
    expect(await serverState(user)).toEqual({ lists: [], items: [] });
    expect(await xs.client.conflicts({ lostOnly: true })).toContainEqual(
      expect.objectContaining({
        table: 'items',
        key: { id: item },
        localPayload: expect.objectContaining({ title: 'edited during the push' }),
      }),
    );
    expect(state(xs)).toEqual(state(y));
    expect(state(x)).toEqual(state(y));
  });

  it('rows that reference each other in a cycle come back from the stash together', async () => {
    // CI seed 1901 (three servers): a device stashed two lists that name each other as parent,
    // each waited for the other, and the pair with everything under it never came back.
    const { user, x, y, l: a } = await pair();
    const b = addList(x, 'B', a);
    addItem(x, b, 'in B');
    await x.client.sync();
    await y.client.pullToStable();
    // y deletes B (and, by cascade, its item) offline; x closes the cycle A -> B -> A and renames B
    y.db.prepare(`DELETE FROM lists WHERE id = ?`).run(b);
    x.db.prepare(`UPDATE lists SET parent_list_id = ? WHERE id = ?`).run(b, a);
    x.db.prepare(`UPDATE lists SET name = 'B2' WHERE id = ?`).run(b);
    await x.client.sync();
    // y pulls first: A now points at B, which y deleted, so A waits in the stash; then y's delete
    // of B meets x's rename and the server's B (under A, stashed) is accepted: the two wait on
    // each other
    await y.client.pullToStable();
    await settle(y, x);
    expect(state(y)).toEqual(state(x));
    const server = await serverState(user);
    expect(server.lists.map((r) => r.id).sort()).toEqual([a, b].sort());
    expect(server.items).toEqual([]); // y's delete of the item met no edit: it stands
    expect(rows(y.db, 'lists')).toHaveLength(2);
    expect(y.db.prepare(`SELECT COUNT(*) FROM _sync_orphan_rows`).pluck().get()).toBe(0);
  });

  it('replaying history past a parent this device deleted: intermediate bundles never fail the pull', async () => {
    const { user, x, y, l } = await pair();
    const q = addList(x, 'Q');
    await x.client.sync();
    await y.client.sync();
    // x puts a child into l and moves it out again; y, which has not pulled, deletes l
    const c = addItem(x, l, 'passing through');
    await x.client.sync();
    x.db.prepare(`UPDATE items SET list_id = ? WHERE id = ?`).run(q, c);
    await x.client.sync();
    y.db.prepare(`DELETE FROM lists WHERE id = ?`).run(l);
    await y.client.pushPending();
    const pulled = await y.client.pullToStable();
    expect(pulled.outcome).toBe('applied_incremental');
    await settle(x, y);
    expect(state(x)).toEqual(state(y));
    expect((await serverState(user)).items).toEqual([expect.objectContaining({ id: c, list_id: q })]);
    expect(await y.client.conflicts()).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// Property: random related edits on three devices with three resolvers, offline periods, then
// sync until quiet. Model: the server's rows are the truth every device must equal, and each
// device's final write to a row (a unique `rev` token) either reached the server (it is in the
// server's bundle history) or is in that device's conflict log as lost. A write the device itself
// overwrote or deleted later is superseded by its own edit and needs no account.
// ---------------------------------------------------------------------------------------------

const RUNS = Number(process.env.OVERSYNC_PROP_RUNS ?? 6);

type Op =
  | { k: 'list'; d: number; parent: number | null }
  | { k: 'item'; d: number; list: number }
  | { k: 'edit'; d: number; t: 'lists' | 'items'; row: number }
  | { k: 'move'; d: number; t: 'lists' | 'items'; row: number; to: number | null }
  | { k: 'delete'; d: number; t: 'lists' | 'items'; row: number }
  | { k: 'sync' | 'offline' | 'online'; d: number };

const dev = fc.integer({ min: 0, max: 2 });
const idx = fc.nat({ max: 7 });
const table = fc.constantFrom('lists' as const, 'items' as const);
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ k: fc.constant('list' as const), d: dev, parent: fc.option(idx) }) },
  { weight: 4, arbitrary: fc.record({ k: fc.constant('item' as const), d: dev, list: idx }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('edit' as const), d: dev, t: table, row: idx }) },
  {
    weight: 3,
    arbitrary: fc.record({ k: fc.constant('move' as const), d: dev, t: table, row: idx, to: fc.option(idx) }),
  },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('delete' as const), d: dev, t: table, row: idx }) },
  { weight: 4, arbitrary: fc.record({ k: fc.constant('sync' as const), d: dev }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constantFrom('offline' as const, 'online' as const), d: dev }) },
);

/** Device 2's resolver: merges item titles, re-creates lost parents, otherwise takes the server's row. */
const mergeResolver: ConflictResolver = (ctx) => {
  if (ctx.reason === 'foreign_key' && ctx.localOp !== 'DELETE') return { kind: 'keep-local' };
  if (ctx.table === 'items' && ctx.serverRowLocal && ctx.localPayload) {
    return { kind: 'merged', payload: { ...ctx.serverRowLocal, title: ctx.localPayload.title } };
  }
  return { kind: 'accept-server' };
};
const RESOLVERS: DeviceOptions[] = [{}, { resolver: 'client-wins' }, { resolver: mergeResolver }];

function ids(d: Device, t: 'lists' | 'items'): string[] {
  return d.db.prepare(`SELECT id FROM ${t} ORDER BY id`).pluck().all() as string[];
}
const pick = (xs: string[], i: number | null): string | undefined =>
  i === null || xs.length === 0 ? undefined : xs[i % xs.length];

describe('foreign-key conflicts: property against the server truth', () => {
  it(
    'devices racing on lists and items always converge, and every final local write is accounted for',
    async () => {
      let run = 0;
      await fc.assert(
        fc.asyncProperty(fc.array(op, { minLength: 10, maxLength: 40 }), async (ops) => {
          run++;
          const user = `u-${randomUUID()}`;
          const ds: Device[] = [];
          for (const o of RESOLVERS) ds.push(await suite.attached(user, { retry: { enabled: false }, ...o }));
          // (device, table, id) → the token of the device's last write to that row
          const finalWrites = new Map<string, string>();
          const write = (d: number, t: string, id: string) => {
            const token = `r${run}-${randomUUID().slice(0, 8)}`;
            finalWrites.set(`${d}|${t}|${id}`, token);
            return token;
          };
          for (const o of ops) {
            const d = ds[o.d] as Device;
            const lists = ids(d, 'lists');
            switch (o.k) {
              case 'list': {
                const id = randomUUID();
                d.db
                  .prepare(`INSERT INTO lists(id, name, parent_list_id, rev) VALUES (?, 'l', ?, ?)`)
                  .run(id, pick(lists, o.parent) ?? null, write(o.d, 'lists', id));
                break;
              }
              case 'item': {
                const list = pick(lists, o.list);
                if (!list) break;
                const id = randomUUID();
                d.db
                  .prepare(`INSERT INTO items(id, list_id, title, rev) VALUES (?, ?, 'i', ?)`)
                  .run(id, list, write(o.d, 'items', id));
                break;
              }
              case 'edit': {
                const id = pick(ids(d, o.t), o.row);
                if (!id) break;
                const col = o.t === 'lists' ? 'name' : 'title';
                d.db
                  .prepare(`UPDATE ${o.t} SET ${col} = ${col} || '+', rev = ? WHERE id = ?`)
                  .run(write(o.d, o.t, id), id);
                break;
              }
              case 'move': {
                const id = pick(ids(d, o.t), o.row);
                if (!id) break;
                const to = pick(lists, o.to) ?? null;
                if (o.t === 'items') {
                  if (!to) break;
                  d.db
                    .prepare(`UPDATE items SET list_id = ?, rev = ? WHERE id = ?`)
                    .run(to, write(o.d, o.t, id), id);
                  break;
                }
                // no cycles: the new parent must not be the list or one of its descendants
                const below = d.db
                  .prepare(
                    `WITH RECURSIVE sub(id) AS (SELECT ? UNION SELECT l.id FROM lists l JOIN sub ON l.parent_list_id = sub.id)
                     SELECT id FROM sub`,
                  )
                  .pluck()
                  .all(id) as string[];
                if (to && below.includes(to)) break;
                d.db
                  .prepare(`UPDATE lists SET parent_list_id = ?, rev = ? WHERE id = ?`)
                  .run(to, write(o.d, o.t, id), id);
                break;
              }
              case 'delete': {
                const id = pick(ids(d, o.t), o.row);
                if (!id) break;
                const before = { lists: ids(d, 'lists'), items: ids(d, 'items') };
                d.db.prepare(`DELETE FROM ${o.t} WHERE id = ?`).run(id);
                // the delete (and its cascade) supersedes this device's writes to those rows
                for (const t of ['lists', 'items'] as const) {
                  const after = new Set(ids(d, t));
                  for (const gone of before[t].filter((x) => !after.has(x)))
                    finalWrites.delete(`${o.d}|${t}|${gone}`);
                }
                break;
              }
              case 'sync':
              case 'offline':
              case 'online':
                await networkOp(d, o.k);
                break;
            }
          }
          for (const d of ds) d.offline = false;
          await settle(...ds);
          const truth = await serverState(user);
          const norm = (s: ReturnType<typeof state>) => JSON.parse(JSON.stringify(s)) as unknown;
          for (const d of ds) expect(norm(state(d))).toEqual(norm(truth));
          const history = new Set(
            (
              await suite.server.query<{ rev: string }>(
                `SELECT DISTINCT payload_wire->>'rev' AS rev FROM sync.bundle_rows WHERE payload_wire IS NOT NULL`,
              )
            ).map((r) => r.rev),
          );
          const lost = await Promise.all(
            ds.map(
              async (d) =>
                new Set((await d.client.conflicts({ lostOnly: true })).map((c) => c.localPayload?.rev)),
            ),
          );
          const unaccounted = [...finalWrites].filter(
            ([k, token]) => !history.has(token) && !lost[Number(k.split('|')[0])]?.has(token),
          );
          expect(unaccounted).toEqual([]);
        }),
        { numRuns: RUNS, endOnFailure: true },
      );
    },
    60_000 + RUNS * 10_000,
  );
});
