import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTcpProxy, type TcpProxy } from '../../src/index.js';

describe('createTcpProxy in front of an HTTP server', () => {
  let server: Server;
  let proxy: TcpProxy;
  let base: string;
  let received = 0;
  beforeAll(async () => {
    server = createServer((req, res) => {
      received++;
      const delay = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('delay') ?? 0);
      setTimeout(() => res.end('pong'), delay);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const address = server.address();
    if (!address || typeof address === 'string') throw new Error('no address');
    proxy = await createTcpProxy({ host: '127.0.0.1', port: address.port });
    base = `http://${proxy.host}:${proxy.port}`;
  });
  afterAll(async () => {
    await proxy?.close();
    server?.closeAllConnections();
    await new Promise((r) => server?.close(r));
  });

  it('serves requests through the proxy', async () => {
    const res = await fetch(`${base}/ping`);
    expect(await res.text()).toBe('pong');
  });

  it('cutAll() fails a request in flight', async () => {
    const before = received;
    const arrived = once(server, 'request');
    const pending = fetch(`${base}/ping?delay=2000`);
    await arrived;
    expect(received).toBe(before + 1); // the server has the request: it is in flight
    proxy.cutAll();
    await expect(pending).rejects.toThrow();
  });
});
