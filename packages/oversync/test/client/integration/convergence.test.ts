import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { tempDir } from '@x/testkit';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Device, networkOp, openDevice } from '../helpers/device.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const RUNS = Number(process.env.OVERSYNC_PROP_RUNS ?? 6);

let server: TestServer;
let dir: { path: string; cleanup(): Promise<void> };

beforeAll(async () => {
  server = await startTestServer();
  dir = await tempDir('oversync-client-prop');
});
afterAll(async () => {
  await server?.close();
  await dir?.cleanup();
});

type Cmd =
  | { kind: 'upsert'; device: number; key: number; name: string }
  | { kind: 'delete'; device: number; key: number }
  | { kind: 'sync'; device: number }
  | { kind: 'offline' | 'online'; device: number };

const device = fc.integer({ min: 0, max: 2 });
const key = fc.integer({ min: 0, max: 3 });
const cmd: fc.Arbitrary<Cmd> = fc.oneof(
  {
    arbitrary: fc.record({
      kind: fc.constant('upsert' as const),
      device,
      key,
      name: fc.string({ maxLength: 6 }),
    }),
    weight: 4,
  },
  { arbitrary: fc.record({ kind: fc.constant('delete' as const), device, key }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant('sync' as const), device }), weight: 3 },
  {
    arbitrary: fc.record({ kind: fc.constantFrom('offline' as const, 'online' as const), device }),
    weight: 1,
  },
);

function users(d: Device): Array<{ id: string; name: string }> {
  return d.db.prepare(`SELECT id, name FROM users ORDER BY id`).all() as Array<{ id: string; name: string }>;
}

describe('convergence property', () => {
  it(
    'random edits on three devices (random resolvers) with offline periods end with every device equal to the server',
    async () => {
      let run = 0;
      await fc.assert(
        fc.asyncProperty(
          fc.array(cmd, { minLength: 5, maxLength: 25 }),
          fc.tuple(...[0, 1, 2].map(() => fc.constantFrom('server-wins' as const, 'client-wins' as const))),
          async (cmds, resolvers) => {
            run++;
            const user = `u-${randomUUID()}`;
            const keys = Array.from({ length: 4 }, () => randomUUID());
            const ds = [0, 1, 2].map((i) =>
              openDevice(`p${run}-${i}`, join(dir.path, `p${run}-${i}.db`), server.baseUrl, user, {
                retry: { enabled: false },
                resolver: resolvers[i],
              }),
            );
            try {
              for (const d of ds) {
                await d.client.open();
                await d.client.attach(user);
              }
              for (const c of cmds) {
                const d = ds[c.device] as Device;
                switch (c.kind) {
                  case 'upsert':
                    d.db
                      .prepare(
                        `INSERT INTO users(id, name) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET name = excluded.name`,
                      )
                      .run(keys[c.key], c.name);
                    break;
                  case 'delete':
                    d.db.prepare(`DELETE FROM users WHERE id = ?`).run(keys[c.key]);
                    break;
                  case 'sync':
                  case 'offline':
                  case 'online':
                    await networkOp(d, c.kind);
                    break;
                }
              }
              for (const d of ds) d.offline = false;
              for (let round = 0; round < 3; round++) for (const d of ds) await d.client.sync();
              const srv = await server.query<{ id: string; name: string }>(
                `SELECT id::text AS id, name FROM business.users WHERE _sync_scope_id = $1 ORDER BY id`,
                [user],
              );
              for (const d of ds) {
                expect(users(d)).toEqual(srv);
                expect((await d.client.pendingStatus()).total).toBe(0);
              }
            } finally {
              for (const d of ds) await d.close();
            }
          },
        ),
        { numRuns: RUNS, endOnFailure: true },
      );
    },
    30_000 + RUNS * 3_000,
  );
});
