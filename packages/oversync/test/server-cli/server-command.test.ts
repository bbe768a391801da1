/**
 * `oversync-server` end to end, as child processes over the test PostgreSQL: config file +
 * environment, readiness, HS256 and JWKS auth through jose, push/pull, SIGTERM draining a watch
 * stream, and the refusals of bad flags and bad configuration (exit 2, one line naming the culprit).
 */
import { randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { createCluster } from '@x/dbx';
import { createTestDatabase, type TempDir, type TestDatabase, tempDir } from '@x/testkit';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  HttpDevice,
  hs256Token,
  runBin,
  SECRET,
  startServer,
  TABLES,
  TABLES_SQL,
  userRow,
} from './harness.js';

let db: TestDatabase;
let dir: TempDir;
type PrivateKey = Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];

beforeAll(async () => {
  db = await createTestDatabase({ prefix: 'oversync_cli' });
  const cluster = createCluster({ primary: db.url });
  await cluster.exec(TABLES_SQL);
  await cluster.close();
  dir = await tempDir('oversync-cli');
});
afterAll(async () => {
  await dir?.cleanup();
  await db?.drop();
});

async function configFile(name: string, config: unknown): Promise<string> {
  const path = join(dir.path, name);
  await writeFile(path, JSON.stringify(config, null, 2));
  return path;
}

describe('HS256, config file + environment', () => {
  test('ready, authenticated push and pull, 401 for a bad token, SIGTERM drains an open watch stream and exits 0', async () => {
    // Tables and port from the file, the URL and the secret from the environment.
    const config = await configFile('hs256.json', {
      tables: TABLES.map((t) => {
        const [schema, table] = t.split('.');
        return { schema, table, syncKeyColumns: ['id'] };
      }),
      port: 0,
      logLevel: 'info',
    });
    const server = await startServer(['--config', config], {
      OVERSYNC_DATABASE_URL: db.url,
      OVERSYNC_JWT_SECRET: SECRET,
    });
    try {
      await server.ready();
      expect(await (await fetch(`${server.url}/healthz`)).json()).toEqual({ status: 'ok' });
      const listening = server.logs().find((l) => l['msg'] === 'oversync-server listening');
      expect(listening, 'the listening line is one JSON log line').toMatchObject({ level: 30 });
      expect(server.child.stderr).toContain(`listening on ${server.url}`);

      const user = `u-${randomUUID()}`;
      const device = new HttpDevice(server.url, await hs256Token(user));
      const id = randomUUID();
      const commit = await device.pushRows([userRow(id, 'ann')]);
      expect(commit['bundle_seq'], JSON.stringify(commit)).toBeGreaterThan(0);
      const other = new HttpDevice(server.url, await hs256Token(user));
      expect((await other.call('POST', '/sync/connect', { has_local_pending_rows: false })).status).toBe(200);
      const pull = await other.call('GET', '/sync/pull?after_bundle_seq=0');
      expect(pull.status).toBe(200);
      expect(JSON.stringify(pull.body)).toContain(id);

      // A token signed with another secret, an expired one and none at all: 401 authentication_failed.
      for (const token of [
        await hs256Token(user, 'another-secret-that-is-32-characters-long'),
        await new SignJWT({})
          .setProtectedHeader({ alg: 'HS256' })
          .setSubject(user)
          .setExpirationTime(Math.floor(Date.now() / 1000) - 60)
          .sign(new TextEncoder().encode(SECRET)),
        'not-a-jwt',
      ]) {
        const bad = await new HttpDevice(server.url, token).call('GET', '/sync/capabilities');
        expect(bad.status).toBe(401);
        expect(bad.body).toMatchObject({ error: 'authentication_failed' });
      }
      const none = await fetch(`${server.url}/sync/capabilities`, { headers: { 'oversync-source-id': 's' } });
      expect(none.status).toBe(401);

      // An open watch stream: SIGTERM ends it (the stream reaches its end), then the process exits 0.
      const watch = await fetch(`${server.url}/sync/watch?after_bundle_seq=0`, { headers: device.headers() });
      expect(watch.status).toBe(200);
      expect(watch.headers.get('content-type')).toContain('text/event-stream');
      const reader = watch.body!.getReader();
      server.child.kill('SIGTERM');
      let streamEnded = false;
      for (;;) {
        const chunk = await reader.read();
        if (chunk.done) {
          streamEnded = true;
          break;
        }
      }
      expect(streamEnded).toBe(true);
      const exit = await server.child.wait();
      expect(exit, server.child.stderr).toEqual({ code: 0, signal: null });
      expect(server.child.stderr).toContain('SIGTERM: draining');
      expect(server.logs().map((l) => l['msg'])).toContain('shut down');
    } finally {
      server.child.kill('SIGKILL');
    }
  });

  test('flags win over the environment, which wins over the config file', async () => {
    // The file names a table that does not exist and a bad secret; env and flags override both.
    const config = await configFile('layered.json', {
      tables: [{ schema: 'business', table: 'missing_table' }],
      jwt: { secret: 'the-file-secret-is-ignored-because-env-wins' },
      port: 1,
      snapshotPipelineMinRows: 1_000_000,
    });
    const server = await startServer(
      [
        '--config',
        config,
        '--port',
        '0',
        '--snapshot-pipeline-min-rows',
        '1',
        ...TABLES.flatMap((t) => ['--table', `${t}:id`]),
      ],
      { OVERSYNC_DATABASE_URL: db.url, OVERSYNC_JWT_SECRET: SECRET, OVERSYNC_TABLES: 'business.nope' },
    );
    try {
      await server.ready();
      const caps = await new HttpDevice(server.url, await hs256Token('layers')).call(
        'GET',
        '/sync/capabilities',
      );
      expect(caps.status).toBe(200);
      expect(caps.body['registered_tables']).toEqual(expect.arrayContaining(TABLES));
      // --snapshot-pipeline-min-rows 1 (over the file's million): a one-row snapshot is built in
      // the background (its build row), and pages as any snapshot does.
      const device = new HttpDevice(server.url, await hs256Token(`pipelined-${randomUUID()}`));
      const id = randomUUID();
      await device.pushRows([userRow(id, 'piped')]);
      const created = await device.call('POST', '/sync/snapshot-sessions', {});
      expect(created.status, JSON.stringify(created.body)).toBe(200);
      const snapshotId = created.body['snapshot_id'] as string;
      const cluster = createCluster({ primary: db.url });
      try {
        const builds = await cluster.query(
          'SELECT 1 FROM sync.snapshot_session_builds WHERE snapshot_id = $1',
          [snapshotId],
        );
        expect(builds.rowCount).toBe(1);
      } finally {
        await cluster.close();
      }
      const page = await device.call(
        'GET',
        `/sync/snapshot-sessions/${snapshotId}?after_row_ordinal=0&max_rows=10`,
      );
      expect(page.status).toBe(200);
      expect(JSON.stringify(page.body)).toContain(id);
      const exit = await server.stop();
      expect(exit, server.child.stderr).toEqual({ code: 0, signal: null });
    } finally {
      server.child.kill('SIGKILL');
    }
  });
});

describe('JWKS', () => {
  let jwks: Server;
  let jwksUrl: string;
  let privateKey: PrivateKey;
  const kid = 'test-key-1';

  beforeAll(async () => {
    const pair = await generateKeyPair('ES256');
    privateKey = pair.privateKey;
    const jwk = { ...(await exportJWK(pair.publicKey)), kid, alg: 'ES256', use: 'sig' };
    jwks = createServer((req, res) => {
      if (req.url !== '/.well-known/jwks.json') {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] }));
    });
    await new Promise<void>((done) => jwks.listen(0, '127.0.0.1', done));
    jwksUrl = `http://127.0.0.1:${(jwks.address() as { port: number }).port}/.well-known/jwks.json`;
  });
  afterAll(async () => {
    await new Promise((done) => jwks?.close(done));
  });

  test('tokens signed by a key of the JWKS are accepted (issuer and audience checked); others are 401', async () => {
    const server = await startServer(
      [
        '--database-url',
        db.url,
        '--jwt-jwks-url',
        jwksUrl,
        '--jwt-issuer',
        'https://issuer.example',
        '--jwt-audience',
        'oversync',
        '--port',
        '0',
        '--table',
        'business.users',
        '--table',
        'business.posts',
      ],
      {},
    );
    try {
      await server.ready();
      const sign = (key: PrivateKey, claims: { iss?: string; aud?: string } = {}) =>
        new SignJWT({})
          .setProtectedHeader({ alg: 'ES256', kid })
          .setSubject(`jwks-${randomUUID()}`)
          .setIssuer(claims.iss ?? 'https://issuer.example')
          .setAudience(claims.aud ?? 'oversync')
          .setExpirationTime('5m')
          .sign(key);
      const ok = await new HttpDevice(server.url, await sign(privateKey)).call('GET', '/sync/capabilities');
      expect(ok.status, JSON.stringify(ok.body)).toBe(200);
      const stranger = (await generateKeyPair('ES256')).privateKey;
      for (const token of [
        await sign(stranger),
        await sign(privateKey, { iss: 'https://other.example' }),
        await sign(privateKey, { aud: 'someone-else' }),
        await hs256Token('hmac-user'),
      ]) {
        const res = await new HttpDevice(server.url, token).call('GET', '/sync/capabilities');
        expect(res.status).toBe(401);
      }
      expect((await server.stop()).code).toBe(0);
    } finally {
      server.child.kill('SIGKILL');
    }
  });
});

describe('refusals: exit 2 and one line naming the culprit', () => {
  const refused = async (args: string[], env: Record<string, string> = {}) => {
    const child = runBin(args, env);
    const exit = await child.wait();
    const lines = child.stderr.trim().split('\n');
    return { exit, lines };
  };

  test('an unknown flag', async () => {
    const { exit, lines } = await refused(['--prot', '8080']);
    expect(exit.code, lines.join('\n')).toBe(2);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^oversync-server: OVERSYNC_SERVER_BAD_FLAG: .*'--prot'/);
  });

  test('a flag value of the wrong type', async () => {
    const { exit, lines } = await refused(['--port', 'eighty']);
    expect(exit.code).toBe(2);
    expect(lines).toEqual([
      'oversync-server: OVERSYNC_SERVER_BAD_FLAG: --port: expected an integer, got "eighty"',
    ]);
  });

  test('an unknown key in the config file, at any depth', async () => {
    const top = await configFile('unknown-top.json', { tabels: [], jwt: { secret: SECRET } });
    const a = await refused(['--config', top]);
    expect(a.exit.code).toBe(2);
    expect(a.lines).toHaveLength(1);
    expect(a.lines[0]).toMatch(
      /OVERSYNC_SERVER_INVALID_CONFIG: config file .*unknown-top\.json: tabels: unknown key$/,
    );
    const nested = await configFile('unknown-nested.json', {
      tables: [{ table: 'users', syncKey: 'id' }],
      jwt: { secret: SECRET },
    });
    const b = await refused(['--config', nested]);
    expect(b.exit.code).toBe(2);
    expect(b.lines[0]).toMatch(/tables\.0\.syncKey: unknown key$/);
  });

  test('a missing required setting names it and where to give it', async () => {
    const noTables = await configFile('no-tables.json', { jwt: { secret: SECRET } });
    const a = await refused(['--config', noTables]);
    expect(a.exit.code).toBe(2);
    expect(a.lines).toEqual([
      'oversync-server: OVERSYNC_SERVER_INVALID_CONFIG: tables: missing (give --table, OVERSYNC_TABLES or "tables" in the config file)',
    ]);
    const b = await refused(['--table', 'business.users']);
    expect(b.exit.code).toBe(2);
    expect(b.lines[0]).toMatch(/OVERSYNC_SERVER_INVALID_CONFIG: jwt: missing/);
  });

  test('an unknown OVERSYNC_* variable, a bad variable value, an unreadable config file', async () => {
    const a = await refused([], { OVERSYNC_JWT_SECRT: SECRET });
    expect(a.exit.code).toBe(2);
    expect(a.lines[0]).toMatch(/environment variable OVERSYNC_JWT_SECRT: unknown/);
    const b = await refused(['--table', 'business.users'], { OVERSYNC_JWT_SECRET: 'short' });
    expect(b.exit.code).toBe(2);
    expect(b.lines[0]).toMatch(/OVERSYNC_JWT_SECRET: must be at least 32 characters/);
    const c = await refused(['--config', join(dir.path, 'does-not-exist.json')]);
    expect(c.exit.code).toBe(2);
    expect(c.lines[0]).toMatch(/OVERSYNC_SERVER_CONFIG_UNREADABLE: .*ENOENT/);
  });
});
