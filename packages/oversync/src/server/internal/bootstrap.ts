import type { SyncDatabase, SyncQuerier } from '../database.js';
import { SyncServerError, UnsupportedSchemaError } from '../errors.js';
import type { SyncLogger } from '../options.js';
import {
  BACKEND_WRITES_SQL,
  type BackendWriteSettings,
  backendCommitTriggerSql,
} from './backend-writes-sql.js';
import { quoteLiteral } from './db.js';
import { PUSH_BUNDLE_START_FN_SQL } from './push-bundle.js';
import { PUSH_CHUNK_AT_ONCE_FN_SQL } from './push-chunk.js';
import { PUSH_COMMIT_START_FN_SQL } from './push-commit.js';
import {
  BUNDLE_LOG_FINISH_FN_SQL,
  DIRECT_BUNDLE_BEGIN_FN_SQL,
  PUSH_DIRECT_FINISH_FN_SQL,
} from './push-direct-bundle.js';
import { PUSH_CREATE_AT_ONCE_FN_SQL } from './push-session.js';
import { PUSH_STORAGE_SQL } from './push-sql.js';
import {
  BACKEND_TRIGGER_ARG,
  BACKEND_TRUNCATE_TRIGGER,
  CAPTURE_BACKEND_DELETE_TRIGGER,
  CAPTURE_BACKEND_UPDATE_TRIGGER,
  CAPTURE_INSERT_TRIGGER,
  CAPTURE_TRIGGER,
  CREATE_SYNC_SCHEMA_SQL,
  OWNER_GUARD_INSERT_TRIGGER,
  OWNER_GUARD_TRIGGER,
  SYNC_BOOTSTRAP_LOCK_KEY,
  SYNC_LAYOUT_NAME,
  TRIGGER_FUNCTIONS_SQL,
} from './schema-sql.js';
import { SNAPSHOT_STORAGE_SQL } from './snapshot-sql.js';
import { SOURCE_ACTIVATE_FN_SQL } from './state.js';

import {
  applyDependencyOverrides,
  discoverForeignKeys,
  loadTableInfo,
  normalizeRegisteredTables,
  orderTables,
  type RegisteredTableInput,
  SCOPE_COLUMN,
  type TableInfo,
  type Topology,
} from './topology.js';

async function initOrValidateSyncSchema(q: SyncQuerier, tables: readonly TableInfo[]): Promise<void> {
  const exists = await q.query<{ meta: string | null; catalog: string | null; others: number }>(
    `SELECT to_regclass('sync.meta')::text AS meta, to_regclass('sync.table_catalog')::text AS catalog,
            (SELECT count(*)::int FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'sync') AS others`,
  );
  const { meta, catalog, others } = exists.rows[0]!;
  if (meta === null && catalog === null) {
    if (others > 0) {
      throw new UnsupportedSchemaError(
        'existing sync schema uses unsupported layout; drop and recreate the sync schema before bootstrap',
      );
    }
    await q.query(CREATE_SYNC_SCHEMA_SQL);
    for (const t of tables) {
      await q.query(
        `INSERT INTO sync.table_catalog (table_id, schema_name, table_name, sync_key_column, sync_key_kind)
         VALUES ($1, $2, $3, $4, $5)`,
        [t.tableId, t.schema, t.table, t.keyColumn, t.keyKind],
      );
    }
    return;
  }
  if (meta === null || catalog === null) {
    throw new UnsupportedSchemaError(
      'existing sync schema is incomplete (sync.meta or sync.table_catalog missing)',
    );
  }
  const metaRows = await q.query<{ singleton_key: boolean; protocol_label: string; layout_name: string }>(
    'SELECT singleton_key, protocol_label, layout_name FROM sync.meta',
  );
  const m = metaRows.rows[0];
  if (
    metaRows.rows.length !== 1 ||
    !m ||
    m.singleton_key !== true ||
    m.protocol_label !== 'v1' ||
    m.layout_name !== SYNC_LAYOUT_NAME
  ) {
    throw new UnsupportedSchemaError(
      'existing sync schema uses unsupported layout; drop and recreate the sync schema',
    );
  }
  const cat = await q.query<{
    table_id: number;
    schema_name: string;
    table_name: string;
    sync_key_column: string;
    sync_key_kind: number;
  }>(
    'SELECT table_id, schema_name, table_name, sync_key_column, sync_key_kind FROM sync.table_catalog ORDER BY table_id',
  );
  const want = tables
    .map((t) => `${t.tableId}|${t.schema}|${t.table}|${t.keyColumn}|${t.keyKind}`)
    .join('\n');
  const got = cat.rows
    .map((r) => `${r.table_id}|${r.schema_name}|${r.table_name}|${r.sync_key_column}|${r.sync_key_kind}`)
    .join('\n');
  if (want !== got) {
    throw new UnsupportedSchemaError(
      'sync.table_catalog does not match the registered tables; changing the registered set requires dropping the sync schema',
      { details: { expected: want, actual: got } },
    );
  }
}

async function installTriggers(
  q: SyncQuerier,
  tables: readonly TableInfo[],
  backend: BackendWriteSettings,
): Promise<void> {
  await q.query(BACKEND_WRITES_SQL);
  await q.query(backendCommitTriggerSql(backend, quoteLiteral));
  await q.query(TRIGGER_FUNCTIONS_SQL);
  for (const t of tables) {
    await q.query(`DROP TRIGGER IF EXISTS ${CAPTURE_TRIGGER} ON ${t.qualified}`);
    await q.query(`DROP TRIGGER IF EXISTS ${CAPTURE_INSERT_TRIGGER} ON ${t.qualified}`);
    await q.query(`DROP TRIGGER IF EXISTS ${OWNER_GUARD_TRIGGER} ON ${t.qualified}`);
    await q.query(`DROP TRIGGER IF EXISTS ${OWNER_GUARD_INSERT_TRIGGER} ON ${t.qualified}`);
    await q.query(`DROP TRIGGER IF EXISTS ${CAPTURE_BACKEND_UPDATE_TRIGGER} ON ${t.qualified}`);
    await q.query(`DROP TRIGGER IF EXISTS ${CAPTURE_BACKEND_DELETE_TRIGGER} ON ${t.qualified}`);
    await q.query(`DROP TRIGGER IF EXISTS ${BACKEND_TRUNCATE_TRIGGER} ON ${t.qualified}`);
    // Tables opted in to backend writes pass BACKEND_TRIGGER_ARG to the guard and the captures.
    const guardArgs = t.backendWrites ? quoteLiteral(BACKEND_TRIGGER_ARG) : '';
    await q.query(
      `CREATE TRIGGER ${OWNER_GUARD_TRIGGER} BEFORE UPDATE OR DELETE ON ${t.qualified}
       FOR EACH ROW EXECUTE FUNCTION sync.enforce_registered_row_owner(${guardArgs})`,
    );
    await q.query(
      `CREATE TRIGGER ${OWNER_GUARD_INSERT_TRIGGER} BEFORE INSERT ON ${t.qualified} FOR EACH ROW
       WHEN (coalesce(NEW.${SCOPE_COLUMN}, '') = ''
             OR NEW.${SCOPE_COLUMN} IS DISTINCT FROM current_setting('oversync.bundle_user_id', true))
       EXECUTE FUNCTION sync.enforce_registered_row_owner(${guardArgs})`,
    );
    const args = [
      t.keyColumn,
      String(t.keyKind),
      String(t.tableId),
      t.backendWrites ? BACKEND_TRIGGER_ARG : '',
    ]
      .map(quoteLiteral)
      .join(', ');
    await q.query(
      `CREATE TRIGGER ${CAPTURE_TRIGGER} AFTER UPDATE OR DELETE ON ${t.qualified} FOR EACH ROW
       ${t.backendWrites ? "WHEN (coalesce(current_setting('oversync.bundle_user_id', true), '') <> '')" : ''}
       EXECUTE FUNCTION sync.capture_registered_row_change(${args})`,
    );
    if (t.backendWrites) {
      await q.query(
        `CREATE TRIGGER ${CAPTURE_BACKEND_UPDATE_TRIGGER} AFTER UPDATE ON ${t.qualified}
         REFERENCING OLD TABLE AS oversync_old_rows NEW TABLE AS oversync_new_rows
         FOR EACH STATEMENT EXECUTE FUNCTION sync.capture_backend_change(${args})`,
      );
      await q.query(
        `CREATE TRIGGER ${CAPTURE_BACKEND_DELETE_TRIGGER} AFTER DELETE ON ${t.qualified}
         REFERENCING OLD TABLE AS oversync_old_rows
         FOR EACH STATEMENT EXECUTE FUNCTION sync.capture_backend_change(${args})`,
      );
      await q.query(
        `CREATE TRIGGER ${BACKEND_TRUNCATE_TRIGGER} BEFORE TRUNCATE ON ${t.qualified}
         FOR EACH STATEMENT EXECUTE FUNCTION sync.refuse_backend_truncate()`,
      );
    }
    await q.query(
      `CREATE TRIGGER ${CAPTURE_INSERT_TRIGGER} AFTER INSERT ON ${t.qualified}
       REFERENCING NEW TABLE AS oversync_new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION sync.capture_registered_insert(${args})`,
    );
  }
}

/**
 * Validates the registered tables, creates or validates the `sync` schema, discovers FKs and the
 * table order, and installs the triggers: all in one transaction under the bootstrap advisory lock,
 * so concurrent bootstraps of several server processes serialise and a failure changes nothing.
 */
export async function bootstrapTopology(
  db: SyncDatabase,
  registered: readonly RegisteredTableInput[],
  overrides: Readonly<Record<string, readonly string[]>>,
  logger: SyncLogger,
  signal: AbortSignal | undefined,
  backend: BackendWriteSettings,
): Promise<Topology> {
  const normalized = normalizeRegisteredTables(registered);
  const run = () =>
    db.runTx(
      async (tx) => {
        await tx.query('SELECT pg_advisory_xact_lock($1::bigint)', [SYNC_BOOTSTRAP_LOCK_KEY]);
        const tables: TableInfo[] = [];
        for (let i = 0; i < normalized.length; i++)
          tables.push(await loadTableInfo(tx, normalized[i]!, i + 1));
        const byName = new Map(tables.map((t) => [t.name, t]));
        const deps = await discoverForeignKeys(tx, byName);
        applyDependencyOverrides(deps, overrides);
        const discovered = orderTables(deps);
        await initOrValidateSyncSchema(tx, tables);
        await tx.query(SNAPSHOT_STORAGE_SQL);
        await tx.query(PUSH_STORAGE_SQL);
        await tx.query(PUSH_BUNDLE_START_FN_SQL);
        await tx.query(DIRECT_BUNDLE_BEGIN_FN_SQL);
        await tx.query(PUSH_CREATE_AT_ONCE_FN_SQL);
        await tx.query(PUSH_CHUNK_AT_ONCE_FN_SQL);
        await tx.query(PUSH_COMMIT_START_FN_SQL);
        await tx.query(BUNDLE_LOG_FINISH_FN_SQL);
        await tx.query(SOURCE_ACTIVATE_FN_SQL);
        await tx.query(PUSH_DIRECT_FINISH_FN_SQL);
        await installTriggers(tx, tables, backend);
        return { tables, byName, byId: new Map(tables.map((t) => [t.tableId, t])), discovered };
      },
      signal ? { signal, maxAttempts: 3 } : { maxAttempts: 3 },
    );
  const topology = await run();
  logger.info(
    { tableOrder: topology.discovered.tableOrder, cycles: [...topology.discovered.cycles.values()] },
    'oversync bootstrap complete',
  );
  return topology;
}

export function assertBootstrapped(t: Topology | undefined): Topology {
  if (!t)
    throw new SyncServerError(
      'OVERSYNC_NOT_BOOTSTRAPPED',
      'sync service is not bootstrapped; call bootstrap()',
    );
  return t;
}
