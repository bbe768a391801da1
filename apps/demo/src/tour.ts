/**
 * The scripted tour: embedded PostgreSQL (primary + streaming replica), the oversync server, and
 * three devices (alice's laptop and phone, bob's laptop), each one SQLite file shared by a primary
 * and two secondary processes. Offline edits, conflicts, a SIGKILLed primary, and a final check
 * that alice's devices equal the server and bob sees none of alice's data.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { ItemRow } from './device-schema.js';
import { DemoError } from './errors.js';
import { jwtSecretFromEnv, signJwt } from './jwt.js';
import { log as defaultLog } from './log.js';
import { defaultProfile } from './profiles.js';
import { type DemoServer, startDemoServer } from './server.js';
import { Device, sameRows, TENANT } from './tour-device.js';
import type { WorkerHandle } from './workers.js';

export interface TourOptions {
  /** Items each secondary creates in the first phase (default 20). */
  itemsPerSecondary?: number;
  /** Writes each secondary makes during the failover phase (default 150). */
  burstPerSecondary?: number;
  /** Edited items per device while offline (default 5). */
  offlineEdits?: number;
  databaseUrl?: string;
  replicaUrls?: string[];
  log?: (who: string, line: string) => void;
  /** Keep the device directories (printed) instead of removing them. */
  keepDirs?: boolean;
}

export interface TourSummary {
  ok: boolean;
  failures: string[];
  devices: Array<{ name: string; user: string; lists: number; items: number; equalsServer: boolean | null }>;
  serverBundles: number;
  bundlesPushed: number;
  conflicts: number;
  failoverMs: number;
  failoverWrites: { acked: number; lost: number; duplicates: number };
  writesPerSecond: number;
  replicaReads: number;
  /** The schemaops ledger in one line. */
  ledger: string;
  durationMs: number;
}

export { sameRows };

export async function runTour(opts: TourOptions = {}): Promise<number> {
  const s = await runTourDetailed(opts);
  if (s.ok) return 0;
  const e = new DemoError(
    'DEMO_VERIFICATION_FAILED',
    `${s.failures.length} check(s) failed: ${s.failures.join('; ')}`,
  );
  process.stderr.write(`${e.code}: ${e.message}\n`);
  return 1;
}

export async function runTourDetailed(opts: TourOptions = {}): Promise<TourSummary> {
  const log = opts.log ?? defaultLog;
  const nItems = opts.itemsPerSecondary ?? 20;
  const nBurst = opts.burstPerSecondary ?? 150;
  const nEdits = opts.offlineEdits ?? 5;
  const t0 = Date.now();
  const secret = jwtSecretFromEnv();
  const root = mkdtempSync(join(tmpdir(), 'x-demo-tour-'));
  const failures: string[] = [];
  const check = (cond: boolean, what: string) => {
    log('verify', `${cond ? '✔' : '✘'} ${what}`);
    if (!cond) failures.push(what);
  };
  let server: DemoServer | null = null;
  const devices: Device[] = [];
  const summary: TourSummary = {
    ok: false,
    failures,
    devices: [],
    serverBundles: 0,
    bundlesPushed: 0,
    conflicts: 0,
    failoverMs: Number.NaN,
    failoverWrites: { acked: 0, lost: 0, duplicates: 0 },
    writesPerSecond: 0,
    replicaReads: 0,
    ledger: 'n/a',
    durationMs: 0,
  };
  try {
    log('tour', '━━ 1. PostgreSQL, schemaops, oversync server');
    server = await startDemoServer({
      databaseUrl: opts.databaseUrl,
      replicaUrls: opts.replicaUrls,
      port: 0,
      profile: defaultProfile,
      secret,
      log: (l) => log('server', l),
    });
    const ledger = await server.provisioning.ledger();
    const tenantSteps = ledger.flatMap((op) =>
      Object.entries(op.steps).filter(([k]) => k.startsWith('tenant_ddl')),
    );
    summary.ledger = `${ledger.length} operation(s), ${ledger.filter((o) => o.status === 'committed').length} committed, tenant steps ${tenantSteps.filter(([, v]) => v === 'succeeded').length}/${tenantSteps.length} succeeded`;
    check(
      ledger.some((o) => o.status === 'committed') && tenantSteps.length >= defaultProfile.tenants.length,
      `schemaops ledger shows the tenant tables operation committed (${summary.ledger})`,
    );
    for (const op of ledger) {
      const tenants = Object.entries(op.steps)
        .filter(([k]) => k.startsWith('tenant_ddl'))
        .map(([k, v]) => `${k.slice('tenant_ddl '.length)} ${v}`);
      log(
        'server',
        `schemaops ledger: ${op.type} → ${op.status} (attempt ${op.attempts}; tenants: ${tenants.join(', ')})`,
      );
    }

    log('tour', '━━ 2. Devices: alice/laptop, alice/phone, bob/laptop (each: 1 SQLite file, 3 processes)');
    const mk = (name: string, user: string) => {
      const d = new Device(name, user, join(root, name), server!.url, secret, log);
      devices.push(d);
      return d;
    };
    const laptop = mk('alice-laptop', 'alice');
    const phone = mk('alice-phone', 'alice');
    const bobLaptop = mk('bob-laptop', 'bob');
    await laptop.start();

    const groceries = randomUUID();
    const [ls1, ls2] = laptop.secondaries() as [WorkerHandle, WorkerHandle];
    await laptop.write(ls1, 'list.create', { id: groceries, name: 'Groceries' });
    const seedIds: string[] = [];
    await Promise.all(
      [ls1, ls2].map(async (w) => {
        for (let i = 0; i < nItems; i++) {
          const id = randomUUID();
          seedIds.push(id);
          await laptop.write(w, 'item.put', {
            id,
            list_id: groceries,
            title: `${w.label} item ${i}`,
            updated_by: w.label,
          });
        }
      }),
    );
    log('alice-laptop', `secondaries wrote 1 list + ${2 * nItems} items through dbproxy`);
    let r = await laptop.sync();
    summary.bundlesPushed += r.pushed > 0 ? 1 : 0;
    log('alice-laptop', `sync: pushed ${r.pushed} rows`);

    await Promise.all([phone.start(), bobLaptop.start()]);
    const phoneDump = await phone.dump();
    check(
      phoneDump.items.length === 2 * nItems,
      `alice-phone hydrated from a snapshot: ${phoneDump.items.length} items`,
    );

    const bobList = randomUUID();
    const [bs1] = bobLaptop.secondaries() as [WorkerHandle];
    await bobLaptop.write(bs1, 'list.create', { id: bobList, name: "Bob's errands" });
    for (let i = 0; i < 10; i++)
      await bobLaptop.write(bs1, 'item.put', {
        id: randomUUID(),
        list_id: bobList,
        title: `bob errand ${i}`,
        updated_by: 'bob',
      });
    r = await bobLaptop.sync();
    summary.bundlesPushed += r.pushed > 0 ? 1 : 0;
    log('bob-laptop', `sync: pushed ${r.pushed} rows`);

    log('tour', "━━ 3. Both of alice's devices go offline and edit the same items");
    await laptop.primary().call('offline');
    await phone.primary().call('offline');
    const edited = seedIds.slice(0, nEdits);
    const [ps1] = phone.secondaries() as [WorkerHandle];
    for (const id of edited) {
      await laptop.write(ls1, 'item.edit', { id, title: `laptop: ${id.slice(0, 4)}`, updated_by: 'laptop' });
      await phone.write(ps1, 'item.edit', {
        id,
        title: `phone: ${id.slice(0, 4)}`,
        done: 1,
        updated_by: 'phone',
      });
    }
    const contested = seedIds[nEdits];
    if (contested) {
      await laptop.write(ls2, 'item.delete', { id: contested });
      await phone.write(ps1, 'item.edit', {
        id: contested,
        title: 'phone edits a deleted item',
        updated_by: 'phone',
      });
    }
    for (let i = 0; i < 3; i++) {
      await laptop.write(ls2, 'item.put', {
        id: randomUUID(),
        list_id: groceries,
        title: `offline laptop ${i}`,
        updated_by: 'laptop',
      });
      await phone.write(ps1, 'item.put', {
        id: randomUUID(),
        list_id: groceries,
        title: `offline phone ${i}`,
        updated_by: 'phone',
      });
    }
    const offlineTry = await laptop.sync(1).then(
      () => 'synced?!',
      (e: unknown) => String((e as Error).message).split('\n')[0] ?? '',
    );
    check(offlineTry !== 'synced?!', `offline sync fails cleanly (${offlineTry.slice(0, 80)})`);

    log('tour', '━━ 4. Back online: laptop first, then phone (conflicts resolved by the merge resolver)');
    await laptop.primary().call('online');
    r = await laptop.sync();
    summary.bundlesPushed += r.pushed > 0 ? 1 : 0;
    summary.conflicts += r.conflicts;
    log('alice-laptop', `sync: pushed ${r.pushed}, pulled ${r.pulled}, conflicts ${r.conflicts}`);
    await phone.primary().call('online');
    r = await phone.sync();
    summary.bundlesPushed += r.pushed > 0 ? 1 : 0;
    summary.conflicts += r.conflicts;
    log('alice-phone', `sync: pushed ${r.pushed}, pulled ${r.pulled}, conflicts ${r.conflicts}`);
    check(r.conflicts > 0, `phone's edits of the same items were conflicts (${r.conflicts} resolved)`);
    r = await laptop.sync();
    summary.conflicts += r.conflicts;

    log(
      'tour',
      `━━ 5. Failover: laptop secondaries write ${2 * nBurst} items; the primary is SIGKILLed mid-stream`,
    );
    const oldPrimary = laptop.primary();
    const secs = laptop.secondaries();
    const burstStart = Date.now();
    const bursts = secs.map((w) =>
      w.call<{ acked: string[]; errors: string[]; ms: number }>(
        'burst',
        { count: nBurst, list_id: groceries, concurrency: 4 },
        120_000,
      ),
    );
    await Promise.race([
      secs[0]!.waitFor(
        (e) =>
          e.t >= burstStart && e.ev === 'burst-progress' && Number(e['acked']) >= Math.min(50, nBurst / 3),
        30_000,
        'burst progress',
      ),
      Promise.all(bursts),
    ]);
    const killedAt = Date.now();
    oldPrimary.kill('SIGKILL');
    log('alice-laptop', `SIGKILL primary pid ${oldPrimary.pid}`);
    const promoted = await Promise.any(
      secs.map((w) =>
        w.waitFor((e) => e.ev === 'role' && e['role'] === 'primary' && e.t >= killedAt, 30_000, 'promotion'),
      ),
    );
    summary.failoverMs = promoted.t - killedAt;
    log('alice-laptop', `a secondary took over in ${summary.failoverMs} ms`);
    const results = await Promise.all(bursts);
    const burstMs = Date.now() - burstStart;
    const acked = results.flatMap((x) => x.acked);
    const errors = results.flatMap((x) => x.errors);
    summary.writesPerSecond = Math.round((acked.length / burstMs) * 1000);
    check(
      errors.length === 0,
      `no write failed during failover (${errors.length} errors${errors[0] ? `: ${errors[0]}` : ''})`,
    );
    // A replacement process joins so the device is back to a primary and two secondaries.
    const replacement = laptop.spawn(laptop.nextLabel());
    await replacement.waitFor((e) => e.ev === 'started', 30_000, 'start');
    await laptop.primary().waitFor((e) => e.ev === 'sync-ready', 30_000, 'sync attach after failover');
    const afterKill = await laptop.dump();
    const onDisk = new Map<string, number>();
    for (const i of afterKill.items) onDisk.set(i.id, (onDisk.get(i.id) ?? 0) + 1);
    const lost = acked.filter((id) => !onDisk.has(id)).length;
    const dup = acked.filter((id) => (onDisk.get(id) ?? 0) > 1).length;
    summary.failoverWrites = { acked: acked.length, lost, duplicates: dup };
    check(
      lost === 0 && dup === 0,
      `every acknowledged write is on disk exactly once (${acked.length} acked, ${lost} lost, ${dup} duplicated)`,
    );

    log('tour', '━━ 6. Converge and verify');
    for (let round = 0; round < 3; round++) {
      r = await laptop.sync();
      summary.bundlesPushed += r.pushed > 0 ? 1 : 0;
      summary.conflicts += r.conflicts;
      const r2 = await phone.sync();
      summary.bundlesPushed += r2.pushed > 0 ? 1 : 0;
      summary.conflicts += r2.conflicts;
      if (r.pushed === 0 && r2.pushed === 0 && r.pulled === 0 && r2.pulled === 0 && round > 0) break;
    }
    const [dl, dp, db] = await Promise.all([
      laptop.dump(),
      phone.dump(),
      bobLaptop.sync().then(() => bobLaptop.dump()),
    ]);
    const aliceServer = await server.userRows('alice');
    const bobServer = await server.userRows('bob');
    const srvItems = (aliceServer.tables[`${TENANT}.items`] ?? []) as unknown as ItemRow[];
    const srvLists = (aliceServer.tables[`${TENANT}.lists`] ?? []) as unknown as Array<{
      id: string;
      name: string;
    }>;
    const srv = { lists: srvLists, items: srvItems };
    const eqLaptop = sameRows(dl, srv);
    const eqPhone = sameRows(dp, srv);
    check(
      eqLaptop,
      `alice-laptop equals the server (${dl.items.length} items, server ${srvItems.length}; read from the ${aliceServer.servedBy})`,
    );
    check(eqPhone, `alice-phone equals the server (${dp.items.length} items)`);
    const merged = dp.items.filter((i) => edited.includes(i.id) && i.title.includes('+')).length;
    check(merged === edited.length, `concurrent edits were merged (${merged}/${edited.length})`);
    if (contested)
      check(
        !dp.items.some((i) => i.id === contested),
        'the item deleted on the laptop stays deleted everywhere',
      );
    const aliceIds = new Set([...srvItems.map((i) => i.id), ...srvLists.map((l) => l.id)]);
    const bobLocalIds = [...db.items.map((i) => i.id), ...db.lists.map((l) => l.id)];
    const bobSrv = [
      ...(bobServer.tables[`${TENANT}.items`] ?? []),
      ...(bobServer.tables[`${TENANT}.lists`] ?? []),
    ].map((x) => String(x['id']));
    check(
      !bobLocalIds.some((id) => aliceIds.has(id)),
      `bob-laptop holds none of alice's rows (${db.items.length} items, all his)`,
    );
    const bobHttp = await fetch(`${server.url}/demo/rows`, {
      headers: { authorization: `Bearer ${await signJwt(secret, { sub: 'bob', ttlSeconds: 60 })}` },
    }).then((x) => x.json() as Promise<{ tables: Record<string, Array<{ id: string }>> }>);
    const bobHttpIds = Object.values(bobHttp.tables)
      .flat()
      .map((x) => x.id);
    check(
      !bobSrv.some((id) => aliceIds.has(id)) &&
        !bobHttpIds.some((id) => aliceIds.has(id)) &&
        bobHttpIds.length === 11,
      `bob's server scope (HTTP, his token) has only his 11 rows`,
    );

    log('tour', '━━ 7. An admin UPDATE in plain SQL (a bare pg client, no @x code) reaches the devices');
    const adminTarget = srvItems[0];
    if (adminTarget) {
      const title = `${adminTarget.title} (fixed by admin)`;
      // The URL the tour was given (databaseUrls shows it without its password), else the embedded one.
      const admin = new pg.Client({ connectionString: opts.databaseUrl ?? server.databaseUrls.primary });
      await admin.connect();
      try {
        // acme.items opts in to backend writes: COMMIT makes this one bundle for alice's scope.
        await admin.query(
          `UPDATE ${TENANT}.items SET title = $1 WHERE _sync_scope_id = 'alice' AND id = $2`,
          [title, adminTarget.id],
        );
      } finally {
        await admin.end();
      }
      log('admin', `UPDATE ${TENANT}.items SET title = '${title}' (one row of alice's)`);
      await laptop.sync();
      await phone.sync();
      const [al, ap] = await Promise.all([laptop.dump(), phone.dump()]);
      const seen = [al, ap].filter(
        (d) => d.items.find((i) => i.id === adminTarget.id)?.title === title,
      ).length;
      check(seen === 2, `the admin's UPDATE reached both of alice's devices (${seen}/2)`);
    } else {
      check(false, 'the admin UPDATE found an item of alice to change');
    }

    const st = await server.status();
    const sync = st.sync as { committed_bundle_count?: number };
    summary.serverBundles = Number(sync.committed_bundle_count ?? 0);
    summary.replicaReads = st.reads.replica;
    summary.devices = [
      {
        name: laptop.name,
        user: 'alice',
        lists: dl.lists.length,
        items: dl.items.length,
        equalsServer: eqLaptop,
      },
      {
        name: phone.name,
        user: 'alice',
        lists: dp.lists.length,
        items: dp.items.length,
        equalsServer: eqPhone,
      },
      {
        name: bobLaptop.name,
        user: 'bob',
        lists: db.lists.length,
        items: db.items.length,
        equalsServer: null,
      },
    ];
  } catch (e) {
    failures.push(`tour aborted: ${e instanceof Error ? e.message : String(e)}`);
    log('tour', `✘ aborted: ${e instanceof Error ? e.message : String(e)}`);
  } finally {
    await Promise.all(devices.map((d) => d.stop().catch(() => {})));
    await server?.close().catch(() => {});
    if (opts.keepDirs) log('tour', `device directories kept in ${root}`);
    else rmSync(root, { recursive: true, force: true });
  }
  summary.durationMs = Date.now() - t0;
  summary.ok = failures.length === 0;
  printSummary(summary, log);
  return summary;
}

function printSummary(s: TourSummary, log: (who: string, line: string) => void): void {
  const rows: Array<[string, string]> = [
    ...s.devices.map((d): [string, string] => [
      `rows on ${d.name}`,
      `${d.lists} lists, ${d.items} items${d.equalsServer === null ? '' : d.equalsServer ? ' (= server)' : ' (≠ server!)'}`,
    ]),
    ['schemaops ledger', s.ledger],
    ['bundles committed (server)', String(s.serverBundles)],
    ['pushes with rows (devices)', String(s.bundlesPushed)],
    ['conflicts resolved', String(s.conflicts)],
    ['failover time', Number.isNaN(s.failoverMs) ? 'n/a' : `${s.failoverMs} ms`],
    [
      'writes during failover',
      `${s.failoverWrites.acked} acked, ${s.failoverWrites.lost} lost, ${s.failoverWrites.duplicates} dup`,
    ],
    ['forwarded write throughput', `${s.writesPerSecond} writes/s (2 secondaries, across the failover)`],
    ['verification reads on replica', String(s.replicaReads)],
    ['tour duration', `${(s.durationMs / 1000).toFixed(1)} s`],
    ['result', s.ok ? 'PASS' : `FAIL (${s.failures.length}: ${s.failures.join('; ')})`],
  ];
  const w = Math.max(...rows.map((r) => r[0].length));
  log('summary', `┌${'─'.repeat(w + 2)}┬${'─'.repeat(60)}`);
  for (const [k, v] of rows) log('summary', `│ ${k.padEnd(w)} │ ${v}`);
  log('summary', `└${'─'.repeat(w + 2)}┴${'─'.repeat(60)}`);
}
