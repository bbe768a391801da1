import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { z } from 'zod';
import { parseOptions } from './internal/options.js';

export interface TcpProxy {
  readonly host: string;
  readonly port: number;
  /** Added latency per chunk, in both directions (order kept). */
  setDelay(ms: number): void;
  /** Silently drop traffic in both directions while on (connections hang, nothing is closed). */
  setDropping(on: boolean): void;
  /** Destroy every live connection now, with a TCP reset on both sides. */
  cutAll(): void;
  /** Number of live proxied connections. */
  readonly connections: number;
  /** Chunks forwarded after being held back by `setDelay`, since the proxy started (both directions). */
  readonly delayedChunks: number;
  /** Chunks discarded by `setDropping(true)`, since the proxy started (both directions). */
  readonly droppedChunks: number;
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

function hardClose(socket: Socket): void {
  if (typeof socket.resetAndDestroy === 'function' && !socket.destroyed && socket.readyState !== 'opening') {
    socket.resetAndDestroy();
  } else {
    socket.destroy();
  }
}

/** A TCP proxy on 127.0.0.1 (a free port) in front of `target`, for latency, black-hole and cut faults. */
export async function createTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  parseOptions(
    z.strictObject({ host: z.string().min(1), port: z.number().int().min(1).max(65535) }),
    target,
    'createTcpProxy target',
  );
  let delayMs = 0;
  let dropping = false;
  let delayedChunks = 0;
  let droppedChunks = 0;
  const pairs = new Set<[Socket, Socket]>();

  const forward = (from: Socket, to: Socket) => {
    let chain = Promise.resolve();
    from.on('data', (chunk: Buffer) => {
      if (dropping) {
        droppedChunks++;
        return;
      }
      if (delayMs <= 0) {
        chain = chain.then(() => {
          if (!to.destroyed) to.write(chunk);
        });
        return;
      }
      const due = Date.now() + delayMs;
      chain = chain.then(async () => {
        const wait = due - Date.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        if (dropping) droppedChunks++;
        else if (!to.destroyed) {
          delayedChunks++;
          to.write(chunk);
        }
      });
    });
    from.on('end', () => {
      void chain.then(() => to.end());
    });
  };

  const server: Server = createServer((client) => {
    const upstream = createConnection({ host: target.host, port: target.port });
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    const teardown = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', teardown);
    upstream.on('error', teardown);
    client.on('close', teardown);
    upstream.on('close', teardown);
    forward(client, upstream);
    forward(upstream, client);
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  let closing: Promise<void> | undefined;

  const proxy: TcpProxy = {
    host: '127.0.0.1',
    port,
    setDelay(ms) {
      delayMs = Math.max(0, ms);
    },
    setDropping(on) {
      dropping = on;
    },
    cutAll() {
      for (const pair of [...pairs]) {
        pairs.delete(pair);
        hardClose(pair[0]);
        hardClose(pair[1]);
      }
    },
    get connections() {
      return pairs.size;
    },
    get delayedChunks() {
      return delayedChunks;
    },
    get droppedChunks() {
      return droppedChunks;
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        proxy.cutAll();
      });
      return closing;
    },
    [Symbol.asyncDispose]() {
      return proxy.close();
    },
  };
  return proxy;
}
