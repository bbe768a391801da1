import path from 'node:path';
import { spawnNode } from '@x/testkit';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { type TestDb, tempDb } from '../helpers/db.js';

const WRITER = path.join(import.meta.dirname, '../fixtures/writer.ts');
const PACKAGE_DIR = path.join(import.meta.dirname, '../..');

interface Ack {
  rowid: number;
  seq: number;
  replayed: boolean;
}

/** Runs the writer child, SIGKILLs it after `killAt` acks if given, and collects every ACK it printed. */
async function runWriter(
  dbPath: string,
  from: number,
  to: number,
  killAt?: number,
): Promise<{ acks: Map<string, Ack>; done: boolean; signal: NodeJS.Signals | null; stderr: string }> {
  const child = spawnNode(WRITER, [dbPath, String(from), String(to)], { cwd: PACKAGE_DIR });
  const acks = new Map<string, Ack>();
  let done = false;
  // The iteration ends when stdout closes, so acks written before the kill are all read.
  for await (const line of child.lines) {
    const [tag, k, rowid, seq, replayed] = line.split(' ');
    if (tag === 'DONE') done = true;
    if (tag !== 'ACK' || k === undefined) continue;
    if (acks.has(k)) throw new Error(`${k} acknowledged twice`);
    acks.set(k, { rowid: Number(rowid), seq: Number(seq), replayed: replayed === 'true' });
    if (acks.size === killAt) child.kill('SIGKILL');
  }
  const { signal } = await child.wait();
  return { acks, done, signal, stderr: child.stderr };
}

let t: TestDb;
afterEach(async () => {
  await t?.cleanup();
});

describe('crash and replay (real child process, SIGKILL)', () => {
  it('every acknowledged write is present exactly once after a SIGKILL mid-stream and a replay', async () => {
    t = await tempDb('crash.db');
    const total = 200_000; // far more than the child can write before it is killed
    const first = await runWriter(t.path, 0, total, 2_000);
    expect(first.signal, first.stderr).toBe('SIGKILL');
    expect(first.done).toBe(false);
    expect(first.acks.size).toBeGreaterThanOrEqual(2_000);
    expect(first.acks.size).toBeLessThan(total);

    // Restart over a range covering every acknowledged request plus some never sent.
    const acked = [...first.acks.keys()].map((k) => Number(k.slice(4)));
    const upTo = Math.max(...acked) + 500;
    const second = await runWriter(t.path, 0, upTo);
    expect(second.done, second.stderr).toBe(true);
    expect(second.acks.size).toBe(upTo);

    for (const [k, ack] of first.acks) {
      const replay = second.acks.get(k);
      expect(replay, k).toBeDefined();
      // An acknowledged write is replayed from the idempotency table with its original result.
      expect(replay).toEqual({ rowid: ack.rowid, seq: ack.seq, replayed: true });
    }
    const db = new Database(t.path, { readonly: true });
    const rows = db.prepare('SELECT k, count(*) AS n, min(id) AS id FROM acks GROUP BY k').all() as Array<{
      k: string;
      n: number;
      id: number;
    }>;
    db.close();
    const byKey = new Map(rows.map((r) => [r.k, r]));
    expect(rows.filter((r) => r.n !== 1)).toEqual([]);
    expect(byKey.size).toBe(upTo);
    for (const [k, ack] of first.acks) expect(byKey.get(k)?.id, k).toBe(ack.rowid);
    // Some writes were acknowledged only on the second run: they ran then, exactly once.
    expect([...second.acks.values()].some((a) => !a.replayed)).toBe(true);
  });
});
