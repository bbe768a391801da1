import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnNode, tempDir } from '@x/testkit';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { lockPathFor, tryAcquireElectionLock } from '../../src/internal/election.js';

const HOLDER = fileURLToPath(new URL('../fixtures/hold-lock.ts', import.meta.url));

describe('election lock', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let lockPath: string;
  beforeEach(async () => {
    dir = await tempDir('dbproxy-lock');
    lockPath = lockPathFor(join(dir.path, 'x.db'));
  });
  afterEach(() => dir.cleanup());

  it('admits one holder, bumps the epoch on each acquisition, and never unlinks the file', () => {
    const a = tryAcquireElectionLock(lockPath);
    expect(a?.epoch).toBe(1);
    expect(tryAcquireElectionLock(lockPath)).toBeNull();
    expect(tryAcquireElectionLock(lockPath)).toBeNull(); // failed attempts keep no lock behind
    a!.release();
    a!.release(); // idempotent
    expect(existsSync(lockPath)).toBe(true);
    const b = tryAcquireElectionLock(lockPath);
    expect(b?.epoch).toBe(2);
    b!.release();
  });

  it('is released by the OS when its holder is SIGKILLed', async () => {
    const holder = spawnNode(HOLDER, [lockPath]);
    const line = await holder.waitForLine(/held/, 20_000);
    expect(JSON.parse(line)).toEqual({ held: true, epoch: 1 });
    expect(tryAcquireElectionLock(lockPath)).toBeNull();
    holder.kill('SIGKILL');
    await holder.wait();
    const mine = tryAcquireElectionLock(lockPath);
    expect(mine?.epoch).toBe(2);
    // and while we hold it, another process cannot take it
    const other = spawnNode(HOLDER, [lockPath]);
    expect(JSON.parse(await other.waitForLine(/held/, 20_000))).toEqual({ held: false, epoch: null });
    other.kill();
    await other.wait();
    mine!.release();
  });
});
