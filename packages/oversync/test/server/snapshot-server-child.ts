/**
 * A sync server of the snapshot pipeline tests in its own process, so a test can SIGKILL it while
 * it writes a snapshot session in the background: `node --import tsx snapshot-server-child.ts
 * <dbUrl>` (the fixture's business schema already bootstrapped there). Every snapshot session is
 * pipelined (limits.snapshotPipelineMinRows 1, ranges of 4 rows). Prints `LISTENING <baseUrl>`;
 * users come from the `x-test-user` header, as in the fixture.
 */
import { createCluster } from '@x/dbx';
// Through node_modules to dist/, as every child process of the tests: rebuild after changing src/.
import { createSyncService, oversyncFastifyPlugin } from '@x/oversync/server';
import Fastify from 'fastify';
import { BUSINESS_TABLES } from './fixture.js';

const [dbUrl = ''] = process.argv.slice(2);
const cluster = createCluster({ primary: { connectionString: dbUrl, options: '-c TimeZone=UTC' } });
const service = createSyncService({
  db: cluster,
  registeredTables: BUSINESS_TABLES,
  limits: { snapshotPipelineMinRows: 1, snapshotBuildRangeRows: 4 },
});
await service.bootstrap();
const app = Fastify({ logger: false });
await app.register(oversyncFastifyPlugin, {
  service,
  userIdFromRequest: (req) => {
    const h = req.headers['x-test-user'];
    return typeof h === 'string' ? h : undefined;
  },
});
const url = await app.listen({ port: 0, host: '127.0.0.1' });
process.stdout.write(`LISTENING ${url}\n`);
