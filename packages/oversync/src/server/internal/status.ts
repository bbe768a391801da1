import { sortKeysByCodePoint } from '../../shared/canonical-json.js';
import {
  type CapabilitiesResponse,
  type Lifecycle,
  type StatusResponse,
  SYNC_PROTOCOL_VERSION,
} from '../../shared/wire.js';
import type { SyncQuerier } from '../database.js';
import { MAX_BUNDLES_PER_PULL, type ResolvedSyncServiceOptions } from '../options.js';
import { normalizeRegisteredTables } from './topology.js';

export function registeredTableNames(options: ResolvedSyncServiceOptions): string[] {
  return sortKeysByCodePoint(normalizeRegisteredTables(options.registeredTables).map((t) => t.name));
}

export function features(
  options: ResolvedSyncServiceOptions,
  watchAllowed: boolean,
): Record<string, boolean> {
  return {
    bundle_pull: true,
    push_session_chunking: true,
    single_request_push: true,
    committed_bundle_row_fetch: true,
    snapshot_chunking: true,
    status_endpoint: true,
    graceful_shutdown: true,
    capabilities_endpoint: true,
    server_checkpoint_tracking: false,
    history_pruned_errors: true,
    bundle_push: true,
    structured_sync_keys: true,
    registered_write_rejection_enforced: true,
    accepted_push_replay_visibility: true,
    committed_bundle_visibility: true,
    retained_floor_visibility: true,
    retained_window_visibility: true,
    history_pruned_visibility: true,
    connect_lifecycle: true,
    scope_initialization_leases: true,
    bundle_change_watch: options.bundleChangeWatch.enabled && watchAllowed,
  };
}

const seconds = (ms: number) => Math.floor(ms / 1000);

export function capabilities(
  options: ResolvedSyncServiceOptions,
  watchAllowed: boolean,
): CapabilitiesResponse {
  const l = options.limits;
  const tables = normalizeRegisteredTables(options.registeredTables);
  const limits: Record<string, number> = {
    max_rows_per_bundle: l.maxRowsPerBundle,
    max_bytes_per_bundle: l.maxBytesPerBundle,
    max_bundles_per_pull: MAX_BUNDLES_PER_PULL,
    default_rows_per_push_chunk: l.defaultRowsPerPushChunk,
    max_rows_per_push_chunk: l.maxRowsPerPushChunk,
    push_session_ttl_seconds: seconds(l.pushSessionTtlMs),
    default_rows_per_committed_bundle_chunk: l.defaultRowsPerCommittedBundleChunk,
    max_rows_per_committed_bundle_chunk: l.maxRowsPerCommittedBundleChunk,
    default_rows_per_snapshot_chunk: l.defaultRowsPerSnapshotChunk,
    max_rows_per_snapshot_chunk: l.maxRowsPerSnapshotChunk,
    snapshot_session_ttl_seconds: seconds(l.snapshotSessionTtlMs),
    max_rows_per_snapshot_session: l.maxRowsPerSnapshotSession,
    max_bytes_per_snapshot_session: l.maxBytesPerSnapshotSession,
    initialization_lease_ttl_seconds: seconds(l.initializationLeaseTtlMs),
  };
  for (const k of Object.keys(limits)) if (limits[k] === 0) delete limits[k]; // omitempty
  const res: CapabilitiesResponse = {
    protocol_version: SYNC_PROTOCOL_VERSION,
    schema_version: options.maxSupportedSchemaVersion,
    features: features(options, watchAllowed),
  };
  if (options.appName) res.app_name = options.appName;
  res.registered_tables = tables.map((t) => t.name);
  res.registered_table_specs = tables.map((t) => ({
    schema: t.schema,
    table: t.table,
    sync_key_columns: [t.keyColumn],
  }));
  res.bundle_limits = limits;
  return res;
}

export async function status(
  q: SyncQuerier,
  options: ResolvedSyncServiceOptions,
  lifecycle: Lifecycle,
  inflight: number,
  signal: AbortSignal | undefined,
): Promise<StatusResponse> {
  const qo = signal ? { signal } : undefined;
  const reg = await q.query<{
    us: string | null;
    bl: string | null;
    hp: string | null;
    ap: string | null;
    rr: string | null;
  }>(
    `SELECT to_regclass('sync.user_state')::text AS us, to_regclass('sync.bundle_log')::text AS bl,
            to_regclass('sync.history_pruned_error_seq')::text AS hp, to_regclass('sync.accepted_push_replay_seq')::text AS ap,
            to_regclass('sync.rejected_registered_write_seq')::text AS rr`,
    [],
    qo,
  );
  const g = reg.rows[0]!;
  const n = (v: string | null | undefined) => (v == null ? 0 : Number(v));
  let us = { ahead: 0, latest: 0, fmin: 0, fmax: 0, wmin: 0, wmax: 0 };
  if (g.us) {
    const r = await q.query<Record<string, string | null>>(
      `SELECT count(*) FILTER (WHERE retained_bundle_floor > next_bundle_seq - 1)::text AS ahead,
              max(next_bundle_seq - 1)::text AS latest, min(retained_bundle_floor)::text AS fmin,
              max(retained_bundle_floor)::text AS fmax,
              min(greatest(0, next_bundle_seq - 1 - retained_bundle_floor))::text AS wmin,
              max(greatest(0, next_bundle_seq - 1 - retained_bundle_floor))::text AS wmax
         FROM sync.user_state`,
      [],
      qo,
    );
    const x = r.rows[0]!;
    us = {
      ahead: n(x['ahead']),
      latest: n(x['latest']),
      fmin: n(x['fmin']),
      fmax: n(x['fmax']),
      wmin: n(x['wmin']),
      wmax: n(x['wmax']),
    };
  }
  const seq = async (name: string | null) => {
    if (!name) return 0;
    const r = await q.query<{ v: string }>(
      `SELECT (CASE WHEN is_called THEN last_value ELSE 0 END)::text AS v FROM ${name}`,
      [],
      qo,
    );
    return n(r.rows[0]?.v);
  };
  let bundles = { count: 0, bytes: 0 };
  if (g.bl) {
    const r = await q.query<{ c: string; b: string | null }>(
      'SELECT count(*)::text AS c, sum(byte_count)::text AS b FROM sync.bundle_log',
      [],
      qo,
    );
    bundles = { count: n(r.rows[0]!.c), bytes: n(r.rows[0]!.b) };
  }
  const healthy = lifecycle === 'running' && us.ahead === 0;
  return {
    status: healthy ? 'healthy' : 'unhealthy',
    version: SYNC_PROTOCOL_VERSION,
    app_name: options.appName,
    lifecycle,
    accepting_operations: lifecycle === 'running',
    inflight_operations: inflight,
    registered_tables: registeredTableNames(options),
    features: features(options, true),
    user_state_retention_floor_ahead_count: us.ahead,
    latest_bundle_seq_max: us.latest,
    retained_bundle_floor_min: us.fmin,
    retained_bundle_floor_max: us.fmax,
    retained_bundle_window_min: us.wmin,
    retained_bundle_window_max: us.wmax,
    history_pruned_error_count: await seq(g.hp),
    accepted_push_replay_count: await seq(g.ap),
    rejected_registered_write_count: await seq(g.rr),
    committed_bundle_count: bundles.count,
    committed_bundle_bytes: bundles.bytes,
  };
}
