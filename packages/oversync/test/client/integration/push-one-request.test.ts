/**
 * The client pushes a bundle of one chunk in one request (`POST /sync/push`) when the server
 * advertises `single_request_push`, and through a push session otherwise: a bigger bundle, a
 * server without the feature (a go-oversync server), or one that stopped answering the route (a
 * rollback to an older version), after which it keeps to sessions. The requests are recorded at
 * the device's HTTP edge (its `fetch`), which also plays the older servers.
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { Device } from '../helpers/device.js';
import { deviceSuite } from '../helpers/suite.js';

const suite = deviceSuite('one');

/** `METHOD path` of each request the device sent, and the fetch recording them. */
function recorder(edge: (path: string, init: RequestInit) => Response | undefined = () => undefined) {
  const sent: string[] = [];
  const fetch = async (u: string, i: RequestInit) => {
    const path = new URL(u).pathname;
    sent.push(`${i.method ?? 'GET'} ${path}`);
    return edge(path, i) ?? (await globalThis.fetch(u, i));
  };
  return { sent, fetch };
}
/** The requests of one push through a push session of `chunks` chunks. */
const sessionPush = (chunks = 1) => [
  'POST /sync/push-sessions',
  ...Array.from({ length: chunks }, () => 'POST /sync/push-sessions/:id/chunks'),
  'POST /sync/push-sessions/:id/commit',
];
const pushRequests = (sent: string[]) =>
  sent.filter((s) => s.startsWith('POST /sync/push')).map((s) => s.replace(/[0-9a-f-]{36}/, ':id'));

function addUsers(d: Device, n: number): void {
  const insert = d.db.prepare('INSERT INTO users(id, name) VALUES (?, ?)');
  for (let i = 0; i < n; i++) insert.run(randomUUID(), `user ${i}`);
}

describe('one-request push', () => {
  it('a bundle of one chunk is one request; a bigger one a push session', async () => {
    const user = `u-${randomUUID()}`;
    const r = recorder();
    const d = await suite.attached(user, { fetch: r.fetch, uploadLimit: 5 });
    addUsers(d, 3);
    expect(await d.client.pushPending()).toMatchObject({ outcome: 'committed', rowCount: 3 });
    expect(pushRequests(r.sent)).toEqual(['POST /sync/push']);
    r.sent.length = 0;
    addUsers(d, 12);
    expect(await d.client.pushPending()).toMatchObject({ outcome: 'committed', rowCount: 12 });
    expect(pushRequests(r.sent)).toEqual(sessionPush(3));
    expect(await suite.serverUsers(user)).toHaveLength(15);
  });

  it('a server that does not advertise the feature gets push sessions', async () => {
    const user = `u-${randomUUID()}`;
    const r = recorder();
    const withoutFeature = async (u: string, i: RequestInit) => {
      const res = await r.fetch(u, i);
      if (new URL(u).pathname !== '/sync/capabilities') return res;
      const caps = (await res.json()) as { features: Record<string, boolean> };
      delete caps.features['single_request_push'];
      return Response.json(caps);
    };
    const d = await suite.attached(user, { fetch: withoutFeature });
    addUsers(d, 2);
    expect(await d.client.pushPending()).toMatchObject({ outcome: 'committed', rowCount: 2 });
    expect(pushRequests(r.sent)).toEqual(sessionPush());
    expect(await suite.serverUsers(user)).toHaveLength(2);
  });

  it('a server that stops answering the route: the same push goes through a session, and the next ones too', async () => {
    const user = `u-${randomUUID()}`;
    const r = recorder((path) =>
      path === '/sync/push'
        ? Response.json({ error: 'not_found', message: 'Route not found' }, { status: 404 })
        : undefined,
    );
    const d = await suite.attached(user, { fetch: r.fetch });
    addUsers(d, 2);
    expect(await d.client.pushPending()).toMatchObject({ outcome: 'committed', rowCount: 2 });
    addUsers(d, 1);
    expect(await d.client.pushPending()).toMatchObject({ outcome: 'committed', rowCount: 1 });
    expect(pushRequests(r.sent)).toEqual(['POST /sync/push', ...sessionPush(), ...sessionPush()]);
    expect(await suite.serverUsers(user)).toHaveLength(3);
  });

  it('an answer lost after the server committed: the retry is told already_committed and the rows are kept once', async () => {
    const user = `u-${randomUUID()}`;
    let lose = 1;
    const r = recorder();
    const losing = async (u: string, i: RequestInit) => {
      const res = await r.fetch(u, i);
      if (new URL(u).pathname === '/sync/push' && lose-- > 0)
        throw new TypeError('fetch failed: connection reset');
      return res;
    };
    const d = await suite.attached(user, { fetch: losing });
    addUsers(d, 4);
    expect(await d.client.pushPending()).toMatchObject({ outcome: 'committed', rowCount: 4 });
    expect(pushRequests(r.sent)).toEqual(['POST /sync/push', 'POST /sync/push']);
    expect(await suite.serverUsers(user)).toHaveLength(4);
    expect(d.db.prepare('SELECT count(*) AS n FROM users').get()).toEqual({ n: 4 });
  });
});
