import { join } from 'node:path';
import { tempDir } from '@x/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { type ChildEvent, ProxyChild } from '../fixtures/children.js';

/**
 * Processes for one database are started and SIGKILLed in overlapping waves. At every sample, at
 * most one live process may say it is primary; after each wave settles, exactly one must; and every
 * promotion must carry a fresh, larger epoch.
 */
describe('start/kill races', () => {
  const children: ProxyChild[] = [];
  let dir: Awaited<ReturnType<typeof tempDir>> | undefined;

  afterAll(async () => {
    for (const c of children) if (!c.exited) c.kill();
    await dir?.cleanup();
  });

  it('never leaves two primaries', async () => {
    dir = await tempDir('dbproxy-races');
    const dbPath = join(dir.path, 'race.db');
    const runtimeDir = join(dir.path, 'run');
    let n = 0;
    const spawn = (): ProxyChild => {
      const c = new ProxyChild(`R${n++}`, dbPath, runtimeDir);
      children.push(c);
      return c;
    };
    const alive = (): ProxyChild[] => children.filter((c) => !c.exited);

    // Each child reports its promotions ('role' events, from its role-change listener); a wave has
    // settled once a process reports a promotion newer than the last settled one.
    let settledEpoch = 0;
    const promoted = (e: ChildEvent): boolean =>
      e.event === 'role' && e['role'] === 'primary' && Number(e['epoch']) > settledEpoch;
    const settle = async (): Promise<ProxyChild> => {
      const winner = await Promise.any(
        alive().map(async (c) => {
          await c.waitFor(promoted);
          return c;
        }),
      ).catch((e: unknown) => {
        throw new Error(`no primary after a wave: ${String(e)}`);
      });
      settledEpoch = Number(winner.events.find(promoted)?.['epoch']);
      const live = alive();
      const roles = await Promise.all(live.map((c) => c.role().catch(() => 'gone')));
      const primaries = live.filter((_, i) => roles[i] === 'primary');
      expect(
        primaries.map((c) => c.name),
        `roles ${roles.join(',')}`,
      ).toEqual([winner.name]);
      return winner;
    };

    // Wave 0: three processes race for an empty database.
    let wave = [spawn(), spawn(), spawn()];
    for (let round = 0; round < 4; round++) {
      await Promise.all(wave.map((c) => c.waitFor((e) => e.event === 'started')));
      const primary = await settle();
      // Kill the primary and a secondary while two newcomers start: they race the survivors.
      const victims = [
        primary,
        ...alive()
          .filter((c) => c !== primary)
          .slice(0, 1),
      ];
      wave = [spawn(), spawn()];
      for (const v of victims) v.kill();
      await Promise.all(victims.map((v) => v.handle.wait()));
    }
    await Promise.all(wave.map((c) => c.waitFor((e) => e.event === 'started')));
    await settle();

    const promotions = children
      .flatMap((c) =>
        c.events.filter((e) => e.event === 'role' && e['role'] === 'primary').map((e) => Number(e['epoch'])),
      )
      .sort((a, b) => a - b);
    expect(promotions.length).toBeGreaterThanOrEqual(5);
    expect(new Set(promotions).size).toBe(promotions.length);
  });
});
