/**
 * Creates the business tables in every tenant schema through @x/schemaops: one ledger row per
 * operation, one step per tenant (each in its own transaction, recorded as it finishes),
 * compensation on failure, and an idempotency key, so a server restarted on the same database finds
 * its first operation instead of redoing it.
 */
import type { Cluster } from '@x/dbx';
import {
  createSchemaOps,
  type DdlContext,
  type Operation,
  type OperationHandler,
  type SchemaOps,
  schemaPerTenant,
} from '@x/schemaops';
import type { Profile } from './profiles.js';

export interface LedgerEntry {
  id: string;
  type: string;
  status: string;
  attempts: number;
  /** `step: state`, one entry per tenant for the tenant step. */
  steps: Record<string, string>;
  error: string | null;
  updatedAt: string;
}

export interface TenantProvisioning {
  readonly operationId: string;
  readonly status: string;
  /** The schemaops ledger of the demo project, newest first, with each operation's step states. */
  ledger(): Promise<LedgerEntry[]>;
  /** Runs the operation again as a new ledger row (after the tables were dropped, e.g. `/test/reset`). */
  reapply(reason: string): Promise<LedgerEntry>;
  close(): Promise<void>;
}

/** The schemaops project the demo's operations are recorded under. */
export const DEMO_PROJECT = 'x_demo';
/** How many ledger operations `demo status` shows. */
export const LEDGER_LIMIT = 20;

export async function provisionTenants(
  cluster: Cluster,
  profile: Profile,
  log: (line: string) => void,
): Promise<TenantProvisioning> {
  const ops: SchemaOps = createSchemaOps({
    cluster,
    tenants: schemaPerTenant({
      cluster,
      listTenants: async () => [...profile.tenants],
      baseSchema: () => null,
    }),
  });
  try {
    await ops.migrate();
    const tenantOf = (ctx: DdlContext) => (ctx.target.kind === 'tenant' ? ctx.target.tenant : '');
    const handler: OperationHandler = {
      applyDdl: async (ctx) => {
        await ctx.tx.exec(profile.tenantDdl(tenantOf(ctx)));
        log(`tenant ${tenantOf(ctx)}: business tables ready`);
      },
      compensate: async (ctx) => {
        await ctx.tx.exec(profile.tenantDropDdl(tenantOf(ctx)));
      },
    };
    const apply = async (idempotencyKey: string) => {
      const op = await ops.run({
        project: DEMO_PROJECT,
        type: `create_business_tables_${profile.name}`,
        request: { profile: profile.name, tenants: profile.tenants },
        idempotencyKey,
        skipBaseDdl: true,
        handler,
      });
      const entry = toLedgerEntry(op);
      log(
        `schemaops operation ${op.id}: ${op.status} (${Object.entries(entry.steps)
          .map(([k, v]) => `${k} ${v}`)
          .join(', ')})`,
      );
      if (op.status !== 'committed') {
        throw new Error(`schemaops operation ${op.id} ended ${op.status}: ${op.lastError ?? ''}`);
      }
      return op;
    };
    const op = await apply(`${profile.name}:business-tables:v1:${profile.tenants.join(',')}`);
    return {
      operationId: op.id,
      status: op.status,
      ledger: async () => {
        const list = await ops.list({ project: DEMO_PROJECT, limit: LEDGER_LIMIT });
        return Promise.all(list.map(async (s) => toLedgerEntry(await ops.get(s.id))));
      },
      reapply: async (reason) => toLedgerEntry(await apply(`${profile.name}:business-tables:${reason}`)),
      close: () => ops.close(),
    };
  } catch (e) {
    await ops.close().catch(() => {});
    throw e;
  }
}

function toLedgerEntry(op: Operation): LedgerEntry {
  const steps: Record<string, string> = { base_project_ddl: op.steps.base_project_ddl.state };
  for (const t of op.steps.tenant_ddl) steps[`tenant_ddl ${t.tenant}`] = t.state;
  steps['system_schema'] = op.steps.system_schema.state;
  steps['cache'] = op.steps.cache.state;
  return {
    id: op.id,
    type: op.type,
    status: op.status,
    attempts: op.attemptCount,
    steps,
    error: op.lastError,
    updatedAt: op.updatedAt.toISOString(),
  };
}
