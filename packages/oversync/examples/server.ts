import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { createCluster } from '@x/dbx';
import { createSyncService, oversyncFastifyPlugin } from '@x/oversync/server';
import Fastify from 'fastify';

// The business tables: owned by a user (`_sync_scope_id`), keyed by a uuid, every unique index and
// foreign key scope-first, foreign keys DEFERRABLE.
const DDL = `
  create schema if not exists business;
  create table if not exists business.users (
    _sync_scope_id text not null, id uuid not null, name text not null, email text not null default '',
    primary key (_sync_scope_id, id));
  create table if not exists business.posts (
    _sync_scope_id text not null, id uuid not null, author_id uuid not null, title text not null,
    primary key (_sync_scope_id, id),
    foreign key (_sync_scope_id, author_id) references business.users (_sync_scope_id, id)
      on delete cascade deferrable initially deferred);`;

// Your auth. Here: HS256 JWTs checked with node:crypto; use your identity provider's verifier.
const secret = process.env.JWT_SECRET ?? 'change-me';
const sign = (data: string) => createHmac('sha256', secret).update(data).digest('base64url');
function verifyJwt(token: string): { sub: string } | null {
  const [header, payload, signature = ''] = token.split('.');
  const expected = sign(`${header}.${payload}`);
  if (signature.length !== expected.length || !timingSafeEqual(Buffer.from(signature), Buffer.from(expected)))
    return null;
  const claims = JSON.parse(Buffer.from(payload ?? '', 'base64url').toString());
  if (typeof claims.sub !== 'string' || (typeof claims.exp === 'number' && claims.exp * 1000 < Date.now()))
    return null;
  return { sub: claims.sub };
}
function issueJwt(sub: string): string {
  const b64 = (v: object) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const unsigned = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${unsigned}.${sign(unsigned)}`;
}

// Request typing: what the auth hook puts on each request.
declare module 'fastify' {
  interface FastifyRequest {
    user: { sub: string } | null;
  }
}

const db = createCluster({
  primary: {
    connectionString: process.env.DATABASE_URL ?? 'postgres://localhost/postgres',
    options: '-c TimeZone=UTC',
  },
});
await db.exec(DDL);
const sync = createSyncService({
  db,
  registeredTables: [
    { schema: 'business', table: 'users', syncKeyColumns: ['id'] },
    { schema: 'business', table: 'posts', syncKeyColumns: ['id'] },
  ],
  bundleChangeWatch: { enabled: true },
});
await sync.bootstrap(); // creates/validates the `sync` schema, installs triggers

const app = Fastify();
app.decorateRequest('user', null);
app.addHook('onRequest', async (req) => {
  const auth = req.headers.authorization;
  req.user = auth?.startsWith('Bearer ') ? verifyJwt(auth.slice(7)) : null;
});
await app.register(oversyncFastifyPlugin, {
  service: sync,
  userIdFromRequest: (req) => req.user?.sub, // the trusted user id; none ⇒ 401 authentication_failed
});
const url = await app.listen({ port: Number(process.env.PORT ?? 0), host: '127.0.0.1' });
console.log('sync server on', url);

// server-originated write: reaches every device of user-123 on its next pull
const id = randomUUID();
const written = await sync.scopeManager().execWrite('user-123', { writerId: 'importer' }, async (tx) => {
  await tx.query('INSERT INTO business.users (id, name, email) VALUES ($1, $2, $3)', [
    id,
    'Ann',
    'ann@example.com',
  ]);
});
console.log('server write', written);

// What a device sees: capabilities need a valid token and a source id; a missing token is a 401.
const headers = { authorization: `Bearer ${issueJwt('user-123')}`, 'oversync-source-id': randomUUID() };
const capabilities = await fetch(`${url}/sync/capabilities`, { headers });
console.log('capabilities', capabilities.status, (await capabilities.json()).registered_tables);
const anonymous = await fetch(`${url}/sync/capabilities`);
console.log('without a token', anonymous.status, await anonymous.json());

// shutdown: stop HTTP intake first, then drain the service, then the pool
await app.close();
await sync.close();
await db.close();
