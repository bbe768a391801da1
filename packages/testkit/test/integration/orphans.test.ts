import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { spawnNode, waitFor } from '../../src/index.js';

const fixture = fileURLToPath(new URL('../fixtures/start-cluster.ts', import.meta.url));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
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
    // other processes' exits and a directory's removal announce nothing here: polled (fails by timing out)
    await waitFor(() => !pids.some(alive), {
      timeoutMs: 10_000,
      intervalMs: 100,
      what: 'the postmasters to exit',
    });
    await waitFor(() => !existsSync(root), {
      timeoutMs: 10_000,
      intervalMs: 100,
      what: 'the data dirs to go',
    });
  });
});
