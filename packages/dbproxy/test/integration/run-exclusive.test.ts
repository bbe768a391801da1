import { join } from 'node:path';
import { tempDir } from '@x/testkit';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  createDbProxy,
  type DbProxy,
  EXCLUSIVE_METRICS_KEY,
  isDbProxyError,
  type WriteChange,
} from '../../src/index.js';
import { ProxyChild } from '../fixtures/children.js';
import { collectChanges } from '../fixtures/events.js';
import { migrate, writes } from '../fixtures/writes.js';

interface Observed {
  inTransaction: boolean;
  /** notes rows the writer connection sees inside the transaction, before fn writes */
  writerRows: number;
  /** notes rows an independent connection sees at the same moment (committed state) */
  committedRows: number;
  /** `_x_wc_meta.seq` inside the transaction, and committed */
  writerSeq: number;
  committedSeq: number;
}

const countSql = 'SELECT count(*) AS n FROM notes';
const seqSql = "SELECT value AS n FROM _x_wc_meta WHERE key = 'seq'";

/** An exclusive fn that records what it sees and inserts one row. */
function observing(reader: Database.Database, id: string, out: Observed[]) {
  return (db: { prepare(sql: string): { get(...a: unknown[]): unknown; run(...a: unknown[]): unknown } }) => {
    const n = (d: typeof db, sql: string) => Number((d.prepare(sql).get() as { n: number | bigint }).n);
    out.push({
      inTransaction: (db as unknown as { inTransaction: boolean }).inTransaction,
      writerRows: n(db, countSql),
      committedRows: n(reader as unknown as typeof db, countSql),
      writerSeq: n(db, seqSql),
      committedSeq: n(reader as unknown as typeof db, seqSql),
    });
    db.prepare('INSERT INTO notes (id, writer) VALUES (?, ?)').run(id, 'exclusive');
    return id;
  };
}

describe('runExclusive: a local transaction of its own on the primary', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let proxies: DbProxy[];
  let children: ProxyChild[];
  let readers: Database.Database[];
  const dbPath = () => join(dir.path, 'x.db');
  const runtime = () => join(dir.path, 'run');
  const make = (id: string): DbProxy => {
    const p = createDbProxy({
      databasePath: dbPath(),
      runtimeDir: runtime(),
      instanceId: id,
      writes,
      migrate,
    });
    proxies.push(p);
    return p;
  };
  const reader = (): Database.Database => {
    const r = new Database(dbPath(), { readonly: true });
    readers.push(r);
    return r;
  };

  beforeEach(async () => {
    dir = await tempDir('dbproxy-excl');
    proxies = [];
    children = [];
    readers = [];
  });
  afterEach(async () => {
    for (const c of children) await c.exit().catch(() => c.kill());
    for (const p of proxies.reverse()) await p.close();
    for (const r of readers) r.close();
    await dir.cleanup();
  });

  it('runs alone, in queue order between local writes, and its commit is sequenced and published', async () => {
    const a = make('a');
    await a.start();
    expect(a.role).toBe('primary');
    const b = make('b');
    await b.start();
    const ac = new AbortController();
    const changes = collectChanges(b.changes({ signal: ac.signal }));
    // b is linked once its write is acked, and its stream is live once that commit reaches it
    await b.write('insertNote', { id: 'warm', writer: 'b' }, { requestId: 'req-warm' });
    await changes.until((s) => s.some((e) => e.type === 'write' && e.requestId === 'req-warm'));
    const r = reader();

    // All queued in the same turn: three writes, the exclusive transaction, three writes.
    const obs: Observed[] = [];
    const before = [1, 2, 3].map((i) => a.write('insertNote', { id: `before-${i}`, writer: 'a' }));
    const ex = a.runExclusive(observing(r, 'ex-1', obs));
    const after = [1, 2, 3].map((i) => a.write('insertNote', { id: `after-${i}`, writer: 'a' }));
    const [bs, xr, as] = await Promise.all([Promise.all(before), ex, Promise.all(after)]);

    expect(xr.value).toBe('ex-1');
    expect(xr.replayed).toBe(false);
    expect(obs).toHaveLength(1);
    const o = obs[0]!;
    expect(o.inTransaction).toBe(true);
    // the earlier writes are committed, the later ones not started: no uncommitted rows but its own
    expect(o.writerRows).toBe(o.committedRows);
    expect(o.committedRows).toBe(4); // warm + before-1..3
    // its own transaction: the coordinator wrote exactly the next seq at BEGIN
    expect(o.writerSeq).toBe(o.committedSeq + 1);
    expect(o.writerSeq).toBe(xr.seq);
    for (const w of bs) expect(w.seq).toBeLessThan(xr.seq);
    for (const w of as) expect(w.seq).toBeGreaterThan(xr.seq);
    expect(a.lastWriteSeq).toBeGreaterThanOrEqual(xr.seq);

    // b reads it at that seq, and got it as a change of its own seq, from a, with no method
    const got = await b.read((db) => db.prepare("SELECT writer FROM notes WHERE id = 'ex-1'").get(), {
      minSeq: xr.seq,
    });
    expect(got).toEqual({ writer: 'exclusive' });
    await changes.until((s) => s.some((e) => e.type === 'write' && e.seq >= as.at(-1)!.seq));
    ac.abort();
    await changes.done;
    const seen = changes.seen;
    const atSeq = seen.filter((e): e is WriteChange => e.type === 'write' && e.seq === xr.seq);
    expect(atSeq).toEqual([
      { type: 'write', seq: xr.seq, epoch: a.epoch, method: null, requestId: null, sourceInstanceId: 'a' },
    ]);
    expect(seen.some((e) => e.type === 'gap')).toBe(false);
    const m = a.metrics().methods[EXCLUSIVE_METRICS_KEY];
    expect(m).toMatchObject({ count: 1, ok: 1 });
  });

  it('is serialised with writes forwarded from another process and never shares their commit', async () => {
    const a = make('a');
    await a.start();
    const child = new ProxyChild('c', dbPath(), runtime());
    children.push(child);
    await child.waitFor((e) => e.event === 'started');
    const ac = new AbortController();
    const changes = collectChanges(a.changes({ signal: ac.signal }));
    child.send({ cmd: 'storm', count: 1500, concurrency: 32, prefix: 'fw' });
    await child.waitFor((e) => e.event === 'acked');
    const stormDone = child.waitFor((e) => e.event === 'storm-done', 60_000);

    const r = reader();
    const obs: Observed[] = [];
    const results: number[] = [];
    for (let i = 0; i < 15; i++) {
      const x = await a.runExclusive(observing(r, `ex-${i}`, obs));
      results.push(x.seq);
      // spread them over the storm: the next one after a forwarded write has committed (or the storm ended)
      await Promise.race([
        changes.until((s) =>
          s.some((e) => e.type === 'write' && e.sourceInstanceId === 'c' && e.seq > x.seq),
        ),
        stormDone,
      ]);
    }
    const done = await stormDone;
    expect(done['failed']).toEqual([]);
    const lastForwarded = (done['metrics'] as { seq: number }).seq;
    await changes.until((s) => s.some((e) => e.type === 'write' && e.seq >= lastForwarded));
    ac.abort();
    await changes.done;
    const seen = changes.seen.filter((e): e is WriteChange => e.type === 'write');

    for (const o of obs) {
      expect(o.inTransaction).toBe(true);
      expect(o.writerRows).toBe(o.committedRows); // nothing uncommitted from forwarded writes
      expect(o.writerSeq).toBe(o.committedSeq + 1);
    }
    const forwarded = seen.filter((e) => e.sourceInstanceId === 'c');
    expect(forwarded).toHaveLength(1500);
    for (const seq of results) {
      // alone in its commit
      expect(seen.filter((e) => e.seq === seq)).toEqual([
        expect.objectContaining({ method: null, sourceInstanceId: 'a' }),
      ]);
    }
    // the storm was really going on around them
    const interleaved = results.filter(
      (s) => forwarded.some((e) => e.seq < s) && forwarded.some((e) => e.seq > s),
    );
    expect(interleaved.length).toBeGreaterThan(0);
    const rows = await a.read((db) =>
      db.prepare("SELECT count(*) AS n FROM notes WHERE writer = 'exclusive'").get(),
    );
    expect(rows).toEqual({ n: 15 });
  });

  it('is refused on a secondary with DBPROXY_NOT_PRIMARY, and after close with DBPROXY_CLOSED', async () => {
    const a = make('a');
    await a.start();
    const b = make('b');
    let ran = false;
    // b has not started yet: runExclusive starts it, then refuses
    const e = await b
      .runExclusive(() => {
        ran = true;
      })
      .catch((x: unknown) => x);
    expect(b.role).toBe('secondary');
    expect(isDbProxyError(e)).toBe(true);
    expect(e).toMatchObject({ code: 'DBPROXY_NOT_PRIMARY', retryable: false, applied: 'no' });
    expect(ran).toBe(false);
    await a.close();
    const c = await a.runExclusive(() => 1).catch((x: unknown) => x);
    expect(c).toMatchObject({ code: 'DBPROXY_CLOSED' });
  });

  it('rolls back when fn throws and rejects with fn’s own error; replays by requestId', async () => {
    const a = make('a');
    await a.start();
    const seq0 = (await a.write('insertNote', { id: 'x', writer: 'a' })).seq;
    class Mine extends Error {}
    const thrown = new Mine('no');
    const e = await a
      .runExclusive((db) => {
        db.prepare("INSERT INTO notes (id, writer) VALUES ('gone', 'exclusive')").run();
        throw thrown;
      })
      .catch((x: unknown) => x);
    expect(e).toBe(thrown);
    // a constraint error raised by fn also comes back as fn saw it
    await a.write('insertUnique', { k: 'k1' });
    const c = await a
      .runExclusive((db) => db.prepare("INSERT INTO uniq (k) VALUES ('k1')").run())
      .catch((x: unknown) => x);
    expect(c).toMatchObject({ code: 'SQLITE_CONSTRAINT_PRIMARYKEY' });
    const n = await a.read((db) => db.prepare("SELECT count(*) AS n FROM notes WHERE id = 'gone'").get());
    expect(n).toEqual({ n: 0 });

    let runs = 0;
    const job = () => {
      runs++;
      return { runs };
    };
    const first = await a.runExclusive(job, { requestId: 'ex-req' });
    const again = await a.runExclusive(job, { requestId: 'ex-req' });
    expect(first).toMatchObject({ value: { runs: 1 }, replayed: false });
    expect(first.seq).toBeGreaterThan(seq0);
    expect(again).toEqual({ value: { runs: 1 }, seq: first.seq, replayed: true });
    expect(runs).toBe(1);
    expect(a.metrics().methods[EXCLUSIVE_METRICS_KEY]).toMatchObject({ count: 4, ok: 2 });
  });

  it('a transaction still queued at its deadline, or aborted while queued, never runs', async () => {
    const a = make('a');
    await a.start();
    let ran = 0;
    // slowInsert holds the writer for 150 ms; both are queued behind it
    const slow = a.write('slowInsert', { id: 's', ms: 150 });
    const ac = new AbortController();
    const expired = a.runExclusive(() => ran++, { timeoutMs: 20 }).catch((x: unknown) => x);
    const aborted = a.runExclusive(() => ran++, { signal: ac.signal }).catch((x: unknown) => x);
    const reason = new Error('stop');
    ac.abort(reason);
    await slow;
    expect(await expired).toMatchObject({ code: 'DBPROXY_EXPIRED', retryable: true, applied: 'no' });
    expect(await aborted).toBe(reason);
    expect(ran).toBe(0);
    // a pre-aborted signal is refused at once
    expect(await a.runExclusive(() => ran++, { signal: ac.signal }).catch((x: unknown) => x)).toBe(reason);
    expect(ran).toBe(0);
  });
});
