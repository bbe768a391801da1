/**
 * Issue 15: every bad value a caller passes gets its own typed error, the same on the primary and on
 * a secondary, at once; no other caller sees any effect (their storm of writes runs beside it and
 * loses, doubles or fails nothing); transaction control inside a job fails only that job.
 */
import { join } from 'node:path';
import { tempDir } from '@x/testkit';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ChildEvent, ProxyChild } from '../fixtures/children.js';
import { rowsWithId as countRows } from '../fixtures/rows.js';

const STORM = 2_000;

interface Expected {
  ok: boolean;
  code?: string;
  applied?: string;
  /** Rows with the input's id the file must hold afterwards. */
  rows: number;
}

const EXPECTED: Record<string, Expected> = {
  bigint: { ok: false, code: 'DBPROXY_PARAMS_NOT_SERIALISABLE', applied: 'no', rows: 0 },
  circular: { ok: false, code: 'DBPROXY_PARAMS_NOT_SERIALISABLE', applied: 'no', rows: 0 },
  requestId300: { ok: true, rows: 1 },
  requestId513: { ok: false, code: 'DBPROXY_INVALID_ARGUMENT', applied: 'no', rows: 0 },
  timeout0: { ok: false, code: 'DBPROXY_INVALID_ARGUMENT', applied: 'no', rows: 0 },
  timeoutNegative: { ok: false, code: 'DBPROXY_INVALID_ARGUMENT', applied: 'no', rows: 0 },
  timeoutNaN: { ok: false, code: 'DBPROXY_INVALID_ARGUMENT', applied: 'no', rows: 0 },
  // a job's own COMMIT is refused by the coordinator's commit guard (SQLITE_CONSTRAINT_FOREIGNKEY)
  commitBegin: { ok: false, code: 'DBPROXY_CONFLICT', applied: 'no', rows: 0 },
  commit: { ok: false, code: 'DBPROXY_CONFLICT', applied: 'no', rows: 0 },
  rollbackBegin: { ok: false, code: 'DBPROXY_INTERNAL', applied: 'no', rows: 0 },
  release: { ok: false, code: 'DBPROXY_INTERNAL', applied: 'no', rows: 0 },
  rollbackTo: { ok: false, code: 'DBPROXY_INTERNAL', applied: 'no', rows: 0 },
};

describe('issue 15: bad input harms only its caller, on the primary and on a secondary', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let dbPath: string;
  let primary: ProxyChild;
  let secondary: ProxyChild;
  let bystander: ProxyChild;

  const rowsWithId = (id: string): number => countRows(dbPath, id);

  beforeAll(async () => {
    dir = await tempDir('dbproxy-bad-input');
    dbPath = join(dir.path, 'bad.db');
    const rt = join(dir.path, 'run');
    primary = new ProxyChild('P', dbPath, rt);
    await primary.waitFor((e) => e.event === 'started');
    secondary = new ProxyChild('S', dbPath, rt);
    bystander = new ProxyChild('B', dbPath, rt);
    await secondary.waitFor((e) => e.event === 'started');
    await bystander.waitFor((e) => e.event === 'started');
    expect(await primary.role()).toBe('primary');
    expect(await secondary.role()).toBe('secondary');
  });

  afterAll(async () => {
    for (const c of [primary, secondary, bystander]) if (c !== undefined && !c.exited) c.kill();
    await dir?.cleanup();
  });

  it('each bad input gets its own typed error while storms of other writers run beside it', async () => {
    const writers = [primary, secondary, bystander];
    const marks = writers.map((c) => c.events.length);
    // other callers: in the same processes as the bad input, and in a third one
    for (const c of writers) c.send({ cmd: 'storm', count: STORM, concurrency: 8, prefix: `ok-${c.name}` });
    await Promise.all(writers.map((c) => c.waitFor(() => c.acked.length >= 20, 30_000)));
    // One bad caller at a time (two jobs controlling the transaction in the same batch are not
    // both detected, see the writecoordinator README), each beside the storms.
    const results = new Map<string, ChildEvent>();
    for (const kind of Object.keys(EXPECTED)) {
      for (const c of [primary, secondary]) {
        const tag = `${c.name}-${kind}`;
        c.send({ cmd: 'bad', kind, tag });
        results.set(tag, await c.waitFor((e) => e.event === 'bad-result' && e['tag'] === tag, 30_000));
      }
    }
    for (const c of [primary, secondary]) {
      for (const [kind, want] of Object.entries(EXPECTED)) {
        const got = results.get(`${c.name}-${kind}`)!;
        expect({ on: c.name, kind, ok: got['ok'] }).toEqual({ on: c.name, kind, ok: want.ok });
        if (!want.ok) {
          const err = got['err'] as { code: string; applied: string };
          expect({ on: c.name, kind, code: err.code, applied: err.applied }).toEqual({
            on: c.name,
            kind,
            code: want.code,
            applied: want.applied,
          });
        }
        expect({ on: c.name, kind, rows: rowsWithId(`${kind}-${c.name}`) }).toEqual({
          on: c.name,
          kind,
          rows: want.rows,
        });
      }
    }
    // the storms were still running when the last bad input was answered
    for (const c of [primary, secondary]) {
      expect(c.events.some((e, i) => i >= marks[writers.indexOf(c)]! && e.event === 'storm-done')).toBe(
        false,
      );
    }
    const done = await Promise.all(
      writers.map((c, i) => c.waitFor((e) => e.event === 'storm-done', 60_000, marks[i])),
    );
    for (const d of done) expect(d['failed']).toEqual([]);
    const db = new Database(dbPath, { readonly: true });
    try {
      const counts = new Map(
        (
          db.prepare("SELECT id, count(*) AS n FROM notes WHERE id LIKE 'ok-%' GROUP BY id").all() as Array<{
            id: string;
            n: number;
          }>
        ).map((r) => [r.id, r.n]),
      );
      for (const c of writers) {
        const mine = c.acked.filter((id) => id.startsWith(`ok-${c.name}-`));
        expect(mine).toHaveLength(STORM);
        for (const id of mine) expect(counts.get(id), id).toBe(1);
      }
      expect(counts.size).toBe(3 * STORM);
      // the stored commit sequence is what the primary last handed out: never behind, never reused
      const stored = (db.prepare("SELECT value FROM _x_wc_meta WHERE key = 'seq'").get() as { value: number })
        .value;
      const from = primary.events.length;
      primary.send({ cmd: 'metrics', tag: 'm' });
      const m = await primary.waitFor((e) => e.event === 'metrics', 10_000, from);
      expect((m['metrics'] as { coordinator: { seq: number } }).coordinator.seq).toBe(stored);
    } finally {
      db.close();
    }
    // the secondary's link never went down for any of it: nothing was re-sent
    const from = secondary.events.length;
    secondary.send({ cmd: 'metrics', tag: 'm2' });
    const sm = await secondary.waitFor((e) => e.event === 'metrics', 10_000, from);
    expect((sm['metrics'] as { retries: number }).retries).toBe(0);
  });
});
