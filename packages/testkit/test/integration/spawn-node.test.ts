import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { spawnNode } from '../../src/index.js';

const echo = fileURLToPath(new URL('../fixtures/echo.ts', import.meta.url));

describe('spawnNode', () => {
  it('runs a .ts script through tsx: lines, send, waitForLine, exit code, stderr', async () => {
    const child = spawnNode(echo);
    expect(child.pid).toBeGreaterThan(0);
    await child.waitForLine(/^ready$/);
    child.send('hello');
    expect(await child.waitForLine((l) => l.startsWith('HEL'))).toBe('HELLO');
    child.send('world');
    await child.waitForLine(/^WORLD$/);
    child.send('exit');
    expect(await child.wait()).toEqual({ code: 3, signal: null });
    const all: string[] = [];
    for await (const line of child.lines) all.push(line);
    expect(all).toEqual(['ready', 'HELLO', 'WORLD']);
    expect(child.stderr).toContain('a line on stderr');
  });

  it('kill() defaults to SIGKILL and wait() reports the signal', async () => {
    const child = spawnNode(echo);
    await child.waitForLine(/^ready$/);
    child.kill();
    expect(await child.wait()).toEqual({ code: null, signal: 'SIGKILL' });
    child.kill(); // after exit: a no-op
  });

  it('waitForLine rejects with TESTKIT_CHILD_EXITED when output ends, TESTKIT_TIMEOUT when nothing matches', async () => {
    const child = spawnNode(echo);
    await expect(child.waitForLine(/never/, 300)).rejects.toMatchObject({ code: 'TESTKIT_TIMEOUT' });
    const pending = child.waitForLine(/never/, 10_000);
    child.send('exit');
    await expect(pending).rejects.toMatchObject({ code: 'TESTKIT_CHILD_EXITED' });
  });

  it('passes args, env and cwd; runs plain .js/.mjs without tsx', async () => {
    const { tempDir } = await import('../../src/index.js');
    await using dir = await tempDir('spawn');
    const { writeFile } = await import('node:fs/promises');
    const script = `${dir.path}/print.mjs`;
    await writeFile(
      script,
      'console.log(JSON.stringify({ args: process.argv.slice(2), v: process.env.X_V, cwd: process.cwd() }))\n',
    );
    const child = spawnNode(script, ['a', 'b'], { env: { X_V: '42' }, cwd: dir.path });
    const out = JSON.parse(await child.waitForLine(/^\{/)) as { args: string[]; v: string; cwd: string };
    expect(out).toEqual({ args: ['a', 'b'], v: '42', cwd: dir.path });
    expect((await child.wait()).code).toBe(0);
  });
});
