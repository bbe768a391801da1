import { join } from 'node:path';
import { tempDir } from '@x/testkit';
import { afterAll, beforeAll } from 'vitest';
import { type Device, type DeviceOptions, openDevice } from './device.js';
import { startTestServer, type TestServer, type TestServerOptions } from './server.js';

/** What a client integration test file shares: one server, one directory, devices closed at the end. */
export interface DeviceSuite {
  readonly server: TestServer;
  /** A fresh database path in the suite's directory (`<tag>-<n>.db`). */
  path(tag?: string): string;
  /** A device of `user` (not opened), talking to the suite's server or to `baseUrl`. */
  device(user: string, opts?: DeviceOptions, path?: string, baseUrl?: string): Device;
  /** A device of `user`, opened and attached. */
  attached(user: string, opts?: DeviceOptions, path?: string, baseUrl?: string): Promise<Device>;
  /** The user's rows of `business.users` on the server, by id. */
  serverUsers(user: string): Promise<Array<{ id: string; name: string }>>;
}

/** Registers the file's beforeAll/afterAll; call at module level. */
export function deviceSuite(prefix: string, serverOpts: TestServerOptions = {}): DeviceSuite {
  let server: TestServer | undefined;
  let dir: { path: string; cleanup(): Promise<void> } | undefined;
  const devices: Device[] = [];
  let n = 0;
  beforeAll(async () => {
    server = await startTestServer(serverOpts);
    dir = await tempDir(`oversync-client-${prefix}`);
  });
  afterAll(async () => {
    for (const d of devices) await d.close().catch(() => undefined);
    await server?.close();
    await dir?.cleanup();
  });
  const suite: DeviceSuite = {
    get server() {
      if (!server) throw new Error('deviceSuite: the server starts in beforeAll');
      return server;
    },
    path(tag = prefix) {
      if (!dir) throw new Error('deviceSuite: the directory is made in beforeAll');
      return join(dir.path, `${tag}-${++n}.db`);
    },
    device(user, opts = {}, path, baseUrl) {
      const file = path ?? suite.path();
      const d = openDevice(
        `${prefix}${++n}`,
        file,
        baseUrl ?? suite.server.baseUrl,
        user,
        opts,
        serverOpts.schema,
      );
      devices.push(d);
      return d;
    },
    async attached(user, opts = {}, path, baseUrl) {
      const d = suite.device(user, opts, path, baseUrl);
      await d.client.open();
      await d.client.attach(user);
      return d;
    },
    serverUsers(user) {
      return suite.server.query(
        `SELECT id::text AS id, name FROM business.users WHERE _sync_scope_id = $1 ORDER BY id`,
        [user],
      );
    },
  };
  return suite;
}
