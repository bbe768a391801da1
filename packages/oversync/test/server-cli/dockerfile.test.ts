/**
 * No Docker engine runs here, so the Dockerfile is checked by running what it runs: its
 * ENTRYPOINT + CMD (exec form), resolved through the package's `bin` as the image's PATH would,
 * with the Dockerfile's ENV plus what `docker run -e` adds, as a child process; then readiness,
 * an authenticated request and SIGTERM (the STOPSIGNAL) ending in exit 0.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCluster } from '@x/dbx';
import { createTestDatabase, type TestDatabase } from '@x/testkit';
import { afterAll, beforeAll, expect, test } from 'vitest';
import {
  binScript,
  HttpDevice,
  hs256Token,
  PACKAGE_DIR,
  SECRET,
  startServer,
  TABLES,
  TABLES_SQL,
} from './harness.js';

interface Dockerfile {
  env: Record<string, string>;
  command: string[];
  stopSignal: string | undefined;
  healthcheck: string | undefined;
}

/** The instructions this test needs, from the Dockerfile text (continuations joined). */
function parseDockerfile(text: string): Dockerfile {
  const lines = text
    .replace(/\\\r?\n/g, ' ')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  const env: Record<string, string> = {};
  let entrypoint: string[] = [];
  let cmd: string[] = [];
  let stopSignal: string | undefined;
  let healthcheck: string | undefined;
  const execForm = (rest: string, what: string): string[] => {
    try {
      const v = JSON.parse(rest) as unknown;
      if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v;
    } catch {
      // fall through
    }
    throw new Error(`${what} must be in exec form (a JSON array) so SIGTERM reaches the server: ${rest}`);
  };
  for (const line of lines) {
    const [, instr = '', rest = ''] = /^(\S+)\s*(.*)$/.exec(line) ?? [];
    switch (instr.toUpperCase()) {
      case 'ENV':
        for (const m of rest.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)/g)) {
          env[m[1]!] = m[2]!.startsWith('"') ? (JSON.parse(m[2]!) as string) : m[2]!;
        }
        break;
      case 'ENTRYPOINT':
        entrypoint = execForm(rest, 'ENTRYPOINT');
        break;
      case 'CMD':
        cmd = execForm(rest, 'CMD');
        break;
      case 'STOPSIGNAL':
        stopSignal = rest;
        break;
      case 'HEALTHCHECK':
        healthcheck = rest;
        break;
    }
  }
  return { env, command: [...entrypoint, ...cmd], stopSignal, healthcheck };
}

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase({ prefix: 'oversync_docker' });
  const cluster = createCluster({ primary: db.url });
  await cluster.exec(TABLES_SQL);
  await cluster.close();
});
afterAll(async () => {
  await db?.drop();
});

test("the Dockerfile's command, with its ENV, serves, is ready, and stops on its STOPSIGNAL with exit 0", async () => {
  const docker = parseDockerfile(readFileSync(join(PACKAGE_DIR, 'Dockerfile'), 'utf8'));
  const [program, ...args] = docker.command;
  expect(program, 'the command is the published bin').toBe('oversync-server');
  binScript(program!); // throws when package.json has no such bin
  expect(docker.stopSignal).toBe('SIGTERM');
  expect(docker.healthcheck).toContain('/healthz');
  expect(docker.env).toMatchObject({ OVERSYNC_HOST: '0.0.0.0', OVERSYNC_PORT: '8080' });

  // The image's ENV, minus PATH (the bin is resolved from package.json instead), plus `docker run
  // -e` settings; OVERSYNC_PORT=0 stands for the published port so parallel runs never collide.
  const { PATH: _path, ...imageEnv } = docker.env;
  const server = await startServer(args, {
    ...imageEnv,
    OVERSYNC_DATABASE_URL: db.url,
    OVERSYNC_JWT_SECRET: SECRET,
    OVERSYNC_TABLES: TABLES.join(','),
    OVERSYNC_PORT: '0',
  });
  try {
    expect(server.logs().find((l) => l['msg'] === 'oversync-server listening')?.['urls']).toEqual([
      expect.stringMatching(/^http:\/\/0\.0\.0\.0:\d+$/),
    ]);
    await server.ready();
    const caps = await new HttpDevice(server.url, await hs256Token('docker')).call(
      'GET',
      '/sync/capabilities',
    );
    expect(caps.status).toBe(200);
    server.child.kill(docker.stopSignal as NodeJS.Signals);
    expect(await server.child.wait(), server.child.stderr).toEqual({ code: 0, signal: null });
  } finally {
    server.child.kill('SIGKILL');
  }
});
