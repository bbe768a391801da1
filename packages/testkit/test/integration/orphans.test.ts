import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { spawnNode } from '../../src/index.js';

const fixture = fileURLToPath(new URL('../fixtures/start-cluster.ts', import.meta.url));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function eventually(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return check();
}

describe('no orphan servers', () => {
  it('postmasters and data dirs are removed when the owning process is SIGKILLed', async () => {
    const child = spawnNode(fixture);
    const line = await child.waitForLine(/^CLUSTER /, 60_000);
    const { pids, root } = JSON.parse(line.slice('CLUSTER '.length)) as { pids: number[]; root: string };
    expect(pids).toHaveLength(2);
    expect(pids.every(alive)).toBe(true);
    expect(existsSync(root)).toBe(true);
    child.kill('SIGKILL');
    expect((await child.wait()).signal).toBe('SIGKILL');
    expect(await eventually(() => !pids.some(alive), 10_000)).toBe(true);
    expect(await eventually(() => !existsSync(root), 10_000)).toBe(true);
  });
});
