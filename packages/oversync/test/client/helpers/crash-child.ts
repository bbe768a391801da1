/**
 * A device process for crash tests: `node --import tsx crash-child.ts <mode> <dbPath> <baseUrl> <user> [n]`.
 * It reaches a named point of a push, pull or hydrate, prints a line, and then waits forever (its
 * HTTP request never completes) so the parent can SIGKILL it exactly there.
 */
import { randomUUID } from 'node:crypto';
import Database from 'better-sqlite3';
import { childClient } from './child-client.js';
import { SQLITE_BUSINESS_DDL } from './schema.js';

const [mode = '', dbPath = '', baseUrl = '', user = '', nArg = '10'] = process.argv.slice(2);
const n = Number(nArg);
const hang = (line: string) =>
  new Promise<Response>(() => {
    process.stdout.write(`${line}\n`);
  });

let snapshotGets = 0;
let pullGets = 0;
// 'apply-stall' / 'pull-stall': freeze the process inside the client's apply transaction, after
// `n` rows were written: a temp trigger calls a function that reports and then spins until the
// parent's SIGKILL. Installed on every connection the client opens (it opens a second one to the
// same file for a long apply), so the trigger fires wherever the apply runs.
let applied = 0;
class StallDb extends Database {
  constructor(file: string, opts?: Database.Options) {
    super(file, opts);
    this.installStall();
  }
  installStall(): void {
    if (mode !== 'apply-stall' && mode !== 'pull-stall') return;
    if (!this.prepare(`SELECT 1 FROM sqlite_master WHERE name = 'users'`).get()) return;
    this.function('x_stall', () => {
      applied++;
      if (applied === n) {
        process.stdout.write('MID_APPLY\n'); // pipes are synchronous on Linux
        for (;;) {
          // spin inside the open transaction
        }
      }
      return 0;
    });
    this.exec(`CREATE TEMP TRIGGER IF NOT EXISTS x_stall_users AFTER INSERT ON main.users
      WHEN (SELECT apply_mode FROM _sync_apply_state) = 1 BEGIN SELECT x_stall(); END`);
  }
}
const db = new StallDb(dbPath);
db.exec(SQLITE_BUSINESS_DDL);
db.installStall();
const client = childClient(db, baseUrl, user, {
  snapshotChunkRows: 10,
  downloadLimit: 1,
  fetch: async (url, init) => {
    const u = new URL(url);
    // the request that commits: a push session's commit, or the one-request push
    if (mode === 'push-before-commit' && (u.pathname.endsWith('/commit') || u.pathname === '/sync/push'))
      return hang('AT_COMMIT');
    if (mode === 'push-after-commit' && u.pathname.startsWith('/sync/committed-bundles/'))
      return hang('COMMITTED');
    if (
      mode === 'hydrate-staging' &&
      u.pathname.startsWith('/sync/snapshot-sessions/') &&
      init.method === 'GET'
    ) {
      if (++snapshotGets === 3) return hang('STAGING');
    }
    if (mode === 'pull-between-bundles' && u.pathname === '/sync/pull') {
      if (++pullGets === 2) return hang('PULLING');
    }
    return fetch(url, init);
  },
});

if (mode === 'apply-slices' || mode === 'rebuild-slices') {
  // Killed between two slices of the snapshot apply: rows are applied in the open transaction,
  // the event loop had turns, the app's connection still sees the previous state.
  client.on('progress', (e) => {
    if (e.stage !== 'apply' || e.done === 0 || e.done >= e.total) return;
    const seen = db.prepare(`SELECT COUNT(*) FROM users`).pluck().get();
    process.stdout.write(`BETWEEN_SLICES ${e.done}/${e.total} app sees ${seen}\n`);
    for (;;) {
      // spin until the parent's SIGKILL
    }
  });
}
await client.open();
process.stdout.write('OPENED\n');
if (mode.startsWith('push-')) {
  await client.attach(user);
  db.transaction(() => {
    for (let i = 0; i < n; i++)
      db.prepare(`INSERT INTO users(id, name) VALUES (?, ?)`).run(randomUUID(), `child ${i}`);
  })();
  await client.pushPending();
} else if (mode === 'hydrate-staging' || mode === 'apply-stall' || mode === 'apply-slices') {
  await client.attach(user);
} else if (mode === 'rebuild-slices') {
  // a device with a previous state rebuilds (the parent attached it at this path before)
  await client.attach(user);
  await client.rebuild();
} else if (mode === 'pull-stall') {
  await client.attach(user);
  process.stdout.write('ATTACHED\n');
  await new Promise<void>((resolve) => process.stdin.once('data', () => resolve()));
  await client.pullToStable();
} else if (mode === 'pull-between-bundles') {
  await client.attach(user);
  process.stdout.write('ATTACHED\n');
  await new Promise<void>((resolve) => process.stdin.once('data', () => resolve()));
  await client.pullToStable();
}
process.stdout.write('DONE\n');
await client.close();
db.close();
