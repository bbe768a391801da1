/**
 * A smaller tour in CI, across real processes: nine device processes (three devices of one SQLite
 * file each, a primary and two secondaries) against the server on the shared test cluster
 * (primary + streaming replicas), with offline conflicts and a SIGKILLed device primary.
 */
import { createTestDatabase, type TestDatabase } from '@x/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runTourDetailed, type TourSummary } from '../../src/tour.js';

let tdb: TestDatabase;
let summary: TourSummary;
const lines: string[] = [];

beforeAll(async () => {
  tdb = await createTestDatabase({ prefix: 'demo_tour' });
  summary = await runTourDetailed({
    databaseUrl: tdb.url,
    replicaUrls: [...tdb.replicaUrls],
    itemsPerSecondary: 5,
    burstPerSecondary: 60,
    offlineEdits: 3,
    log: (who, line) => lines.push(`${who} ${line}`),
  });
}, 180_000);
afterAll(async () => {
  await tdb?.drop();
});

describe('the tour, smaller, across real processes', () => {
  it('passes its own final verification', () => {
    expect(summary.failures, lines.join('\n')).toEqual([]);
    expect(summary.ok).toBe(true);
  });

  it("leaves alice's two devices equal to the server and bob with only his rows", () => {
    const [laptop, phone, bob] = summary.devices;
    expect(laptop?.equalsServer).toBe(true);
    expect(phone?.equalsServer).toBe(true);
    expect(laptop?.items).toBe(phone?.items);
    expect(bob?.items).toBe(10);
  });

  it('resolved the offline edits as conflicts and lost no write across the SIGKILLed primary', () => {
    expect(summary.conflicts).toBeGreaterThanOrEqual(3);
    expect(summary.failoverWrites.acked).toBe(120);
    expect(summary.failoverWrites.lost).toBe(0);
    expect(summary.failoverWrites.duplicates).toBe(0);
    expect(Number.isFinite(summary.failoverMs)).toBe(true);
    expect(summary.serverBundles).toBeGreaterThanOrEqual(5);
  });

  it("sent an admin's plain-SQL UPDATE to both of alice's devices (backend writes)", () => {
    expect(lines.some((l) => l.includes("✔ the admin's UPDATE reached both of alice's devices (2/2)"))).toBe(
      true,
    );
  });

  it('printed a live log and a summary table', () => {
    expect(lines.some((l) => l.includes('SIGKILL primary'))).toBe(true);
    expect(lines.some((l) => l.startsWith('summary') && l.includes('result') && l.includes('PASS'))).toBe(
      true,
    );
  });
});
