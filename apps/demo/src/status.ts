/**
 * `demo status`: the server's status (sync, schemaops ledger, dbx cluster) and a device's processes,
 * as a short summary for people, or (`--json`) as one JSON document for machines.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { causeLine, DemoError } from './errors.js';

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj => (typeof v === 'object' && v !== null ? (v as Obj) : {});
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const n = (v: unknown) => (typeof v === 'number' ? v : 0);

function bytes(b: number): string {
  if (b < 1024) return `${b} B`;
  if (b < 1024 * 1024) return `${(b / 1024).toFixed(1)} KiB`;
  return `${(b / 1024 / 1024).toFixed(1)} MiB`;
}

/** Rows padded to aligned columns. */
function table(rows: string[][]): string[] {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => `  ${r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ')}`.trimEnd());
}

/** The server part of `demo status`, for people. */
export function renderServerStatus(url: string, s: Obj): string[] {
  const sync = obj(s['sync']);
  const cluster = obj(s['cluster']);
  const reads = obj(s['reads']);
  const lines = [
    `server ${url}: ${String(sync['status'] ?? '?')}, ${String(sync['lifecycle'] ?? '?')}, profile ${String(s['profile'])}, tenants ${arr(s['tenants']).join(', ')}`,
    `  sync     ${arr(sync['registered_tables']).length} registered tables; ${n(sync['committed_bundle_count'])} bundles committed (${bytes(n(sync['committed_bundle_bytes']))}), latest ${n(sync['latest_bundle_seq_max'])}; ${n(sync['inflight_operations'])} in flight`,
  ];
  const ledger = arr(s['ledger']).map(obj);
  const committed = ledger.filter((e) => e['status'] === 'committed').length;
  lines.push(`  ledger   ${ledger.length} operation(s), ${committed} committed`);
  for (const e of ledger.slice(0, 3)) {
    const steps = Object.entries(obj(e['steps']))
      .map(([k, v]) => `${k} ${String(v)}`)
      .join(', ');
    lines.push(`           ${String(e['type'])} ${String(e['status'])}${steps ? ` (${steps})` : ''}`);
  }
  lines.push(
    `  cluster  writer ${String(cluster['writer'] ?? 'none')}; ${n(cluster['retries'])} retries, ${n(cluster['primaryFallbacks'])} primary fallbacks; reads of user rows: ${n(reads['replica'])} on a replica, ${n(reads['primary'])} on the primary`,
  );
  const nodes = arr(cluster['nodes']).map(obj);
  lines.push(
    ...table([
      ['node', 'role', 'health', 'lag', 'queries', 'errors', 'last error'],
      ...nodes.map((x) => [
        String(x['name']),
        String(x['role']),
        x['healthy'] ? 'up' : 'DOWN',
        x['role'] === 'replica'
          ? `${x['lagBytes'] === null ? '?' : bytes(n(x['lagBytes']))} / ${x['lagMs'] === null ? '?' : `${n(x['lagMs'])} ms`}`
          : '-',
        String(n(x['queries'])),
        String(n(x['errors'])),
        x['lastError'] ? String(x['lastError']).slice(0, 60) : '-',
      ]),
    ]),
  );
  return lines;
}

/**
 * One device process's status file (written every second by `demo device`): its role, the sync
 * client's state (connected, ↑ uploading, ↓ downloading, pending changes, last push and pull), its
 * progress and its last error.
 */
export function renderDeviceStatus(dir: string, files: Obj[], now = Date.now()): string[] {
  const ago = (iso: unknown) => {
    const at = typeof iso === 'string' ? Date.parse(iso) : Number.NaN;
    return Number.isNaN(at) ? '-' : `${Math.max(0, Math.round((now - at) / 1000))} s ago`;
  };
  const rows = files.map((f) => {
    const sync = f['sync'] === null ? null : obj(f['sync']);
    // the client's live status (client.status), when the file has it: what it is doing right now
    const live = f['live'] === null || f['live'] === undefined ? null : obj(f['live']);
    const connected = live === null ? sync?.['connected'] : live['connected'];
    const doing = live === null ? '' : `${live['uploading'] ? ' ↑' : ''}${live['downloading'] ? ' ↓' : ''}`;
    const progress = obj(f['progress']);
    return [
      String(f['label']),
      String(f['role']),
      String(f['epoch']),
      String(f['pid']),
      sync === null ? '-' : `${connected ? 'connected' : 'not connected'}${doing}`,
      sync === null ? '-' : String(n(obj(sync['pending'])['total'])),
      progress['pushed'] === undefined ? '-' : String(n(progress['pushed'])),
      progress['pulled'] === undefined ? '-' : String(n(progress['pulled'])),
      sync === null ? '-' : String(n(sync['lastBundleSeqSeen'])),
      live === null ? '-' : ago(live['lastPushAt']),
      live === null ? '-' : ago(live['lastPullAt']),
      String(n(f['conflicts'])),
      f['lastError'] ? String(f['lastError']).slice(0, 50) : '-',
      `${Math.max(0, Math.round((now - n(f['t'])) / 1000))} s ago`,
    ];
  });
  return [
    `device ${dir}: ${files.length} process(es)`,
    ...table([
      [
        'proc',
        'role',
        'epoch',
        'pid',
        'sync',
        'pending',
        'pushed',
        'pulled',
        'bundle',
        'last push',
        'last pull',
        'conflicts',
        'last error',
        'updated',
      ],
      ...rows,
    ]),
  ];
}

function readDeviceFiles(dir: string): Obj[] {
  const names = existsSync(dir) ? readdirSync(dir).filter((f) => /^status-.*\.json$/.test(f)) : [];
  const files: Obj[] = [];
  for (const f of names.sort()) {
    try {
      files.push(obj(JSON.parse(readFileSync(join(dir, f), 'utf8'))));
    } catch {
      // being rewritten right now: the next status call reads it
    }
  }
  return files;
}

export async function printStatus(o: {
  server?: string | undefined;
  dir?: string | undefined;
  json?: boolean;
}): Promise<number> {
  const doc: Obj = {};
  const text: string[] = [];
  if (o.server) {
    let s: Obj;
    try {
      const r = await fetch(`${o.server}/demo/status`);
      if (!r.ok) throw new Error(`HTTP ${r.status} from ${o.server}/demo/status`);
      s = obj(await r.json());
    } catch (e) {
      throw new DemoError(
        'DEMO_SERVER_UNREACHABLE',
        `demo status: the server at ${o.server} did not answer: ${causeLine(e)} (is \`demo server\` running there?)`,
        { cause: e },
      );
    }
    doc['server'] = { url: o.server, ...s };
    text.push(...renderServerStatus(o.server, s));
  }
  if (o.dir) {
    const files = readDeviceFiles(o.dir);
    if (files.length === 0) {
      throw new DemoError(
        'DEMO_NO_DEVICE_STATUS',
        `demo status: no status files in ${o.dir} (is \`demo device --dir ${o.dir}\` running?)`,
      );
    }
    doc['device'] = { dir: o.dir, processes: files };
    text.push(...renderDeviceStatus(o.dir, files));
  }
  process.stdout.write(o.json ? `${JSON.stringify(doc, null, 2)}\n` : `${text.join('\n')}\n`);
  return 0;
}
