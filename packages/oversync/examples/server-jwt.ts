import { randomUUID } from 'node:crypto';
import { createCluster } from '@x/dbx';
import { createSyncService, oversyncFastifyPlugin, oversyncFrameworkErrors } from '@x/oversync/server';
import Fastify, { type FastifyRequest } from 'fastify';
import { jwtVerify, SignJWT } from 'jose';

// A complete sync server with authentication: HS256 JWTs verified by jose (the user id is `sub`),
// pino JSON logs, health and readiness routes, and a shutdown that drains on SIGTERM.
// `npx oversync-server` runs the same thing configured by flags or a file (see docs/deploy.md).
const secret = new TextEncoder().encode(process.env.JWT_SECRET ?? 'change-me-to-32-or-more-random-chars!');

const db = createCluster({
  primary: {
    connectionString: process.env.DATABASE_URL ?? 'postgres://localhost/postgres',
    options: '-c TimeZone=UTC',
  },
});
await db.exec(`
  create schema if not exists business;
  create table if not exists business.users (
    _sync_scope_id text not null, id uuid not null, name text not null, email text not null default '',
    primary key (_sync_scope_id, id));
  create table if not exists business.posts (
    _sync_scope_id text not null, id uuid not null, author_id uuid not null, title text not null,
    primary key (_sync_scope_id, id),
    foreign key (_sync_scope_id, author_id) references business.users (_sync_scope_id, id)
      on delete cascade deferrable initially deferred);`);

const app = Fastify({
  logger: { level: process.env.LOG_LEVEL ?? 'warn' },
  frameworkErrors: oversyncFrameworkErrors,
});
const sync = createSyncService({
  db,
  registeredTables: [
    { schema: 'business', table: 'users', syncKeyColumns: ['id'] },
    { schema: 'business', table: 'posts', syncKeyColumns: ['id'] },
  ],
  bundleChangeWatch: { enabled: true },
  logger: app.log,
});
await sync.bootstrap();

// Auth: verify the bearer token once per request; a missing or bad token leaves no user (⇒ 401).
const users = new WeakMap<FastifyRequest, string>();
app.addHook('onRequest', async (req) => {
  const token = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1];
  if (!token || !req.url.startsWith('/sync/')) return;
  try {
    const { payload } = await jwtVerify(token, secret, { algorithms: ['HS256'], requiredClaims: ['sub'] });
    users.set(req, String(payload.sub));
  } catch (err) {
    req.log.info({ err }, 'bearer token refused');
  }
});
await app.register(oversyncFastifyPlugin, { service: sync, userIdFromRequest: (req) => users.get(req) });

let shuttingDown = false;
app.get('/healthz', async () => ({ status: 'ok' }));
app.get('/readyz', async (_req, reply) => {
  if (shuttingDown) return reply.code(503).send({ status: 'not_ready' });
  await db.query('select 1');
  return { status: 'ready' };
});

// Shutdown order: readiness off, HTTP intake (open watch streams end), the service, the pool.
async function shutdown(): Promise<void> {
  shuttingDown = true;
  await app.close();
  await sync.close();
  await db.close();
}
process.once('SIGTERM', () => void shutdown().then(() => process.exit(0)));

const url = await app.listen({ port: Number(process.env.PORT ?? 0), host: '127.0.0.1' });
console.log('sync server on', url);

// What a device does: a token from your identity provider (signed here), then the protocol.
const token = await new SignJWT({})
  .setProtectedHeader({ alg: 'HS256' })
  .setSubject('user-123')
  .setExpirationTime('1h')
  .sign(secret);
const headers = { authorization: `Bearer ${token}`, 'oversync-source-id': randomUUID() };
const capabilities = await fetch(`${url}/sync/capabilities`, { headers });
console.log('capabilities', capabilities.status, (await capabilities.json()).registered_tables);
const forged = await fetch(`${url}/sync/capabilities`, {
  headers: { ...headers, authorization: 'Bearer x.y.z' },
});
console.log('with a forged token', forged.status, (await forged.json()).error);
console.log('readyz', (await fetch(`${url}/readyz`)).status);

await shutdown();
