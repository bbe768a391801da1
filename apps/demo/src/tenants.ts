/**
 * Creates the business tables in every tenant schema through @x/schemaops: one ledger row per
 * operation, one step per tenant (each in its own transaction), compensation on failure, and an
 * idempotency key so a restarted server finds its first operation instead of redoing it.
 *
 * The schemaops runtime is looked up at run time: while that package does not export it yet, the
 * tenants' DDL runs directly (one transaction each) and the ledger is reported as unavailable.
 */
import type { Cluster, Tx } from '@x/dbx';
import * as schemaops from '@x/schemaops';
import type { Profile } from './profiles.js';

export interface LedgerEntry {
  id: string;
  operationType: string;
  status: string;
  attempts: number;
  error: string | null;
  updatedAt: string;
}

export interface TenantProvisioning {
  /** 'schemaops' when the ledger was used, 'direct' for the fallback. */
  readonly via: 'schemaops' | 'direct';
  readonly operationId: string | null;
  readonly status: string;
  /** The schemaops ledger of the demo project (newest first), or [] when unavailable. */
  ledger(): Promise<LedgerEntry[]>;
  close(): Promise<void>;
}

/** The schemaops project name the demo's operations are recorded under. */
export const DEMO_PROJECT = 'x_demo';

/** The parts of @x/schemaops the demo uses (its API per issue 6). */
interface DdlContextLike {
  readonly tx: Tx;
  readonly target: { kind: 'base' } | { kind: 'tenant'; tenant: string };
}
interface SchemaOpsLike {
  migrate(opts?: { signal?: AbortSignal }): Promise<void>;
  run(input: {
    project: string;
    type: string;
    request: unknown;
    skipBaseDdl?: boolean;
    idempotencyKey?: string;
    handler?: {
      applyDdl(ctx: DdlContextLike): Promise<void>;
      compensate?(ctx: DdlContextLike): Promise<void>;
    };
  }): Promise<{ id: string; status: string; lastError?: string | null }>;
  list(filter?: { project?: string; limit?: number }): Promise<Array<Record<string, unknown>>>;
  close(): Promise<void>;
}
type CreateSchemaOps = (o: { cluster: Cluster; tenants: unknown }) => SchemaOpsLike;
type SchemaPerTenant = (o: {
  cluster: Cluster;
  listTenants: (project: string) => Promise<readonly string[]>;
  baseSchema: (project: string) => string | null;
}) => unknown;

const lib = schemaops as unknown as Record<string, unknown>;

export async function provisionTenants(
  cluster: Cluster,
  profile: Profile,
  log: (line: string) => void,
): Promise<TenantProvisioning> {
  const create = lib['createSchemaOps'];
  const perTenant = lib['schemaPerTenant'];
  if (typeof create === 'function' && typeof perTenant === 'function') {
    return provisionWithSchemaOps(
      create as CreateSchemaOps,
      perTenant as SchemaPerTenant,
      cluster,
      profile,
      log,
    );
  }
  log(`@x/schemaops runtime not exported yet: creating ${profile.tenants.length} tenant schema(s) directly`);
  for (const tenant of profile.tenants) {
    await cluster.runTx(async (tx) => {
      await tx.exec(profile.tenantDdl(tenant));
    });
    log(`tenant ${tenant}: business tables ready`);
  }
  return {
    via: 'direct',
    operationId: null,
    status: 'committed',
    ledger: async () => [],
    close: async () => {},
  };
}

async function provisionWithSchemaOps(
  create: CreateSchemaOps,
  perTenant: SchemaPerTenant,
  cluster: Cluster,
  profile: Profile,
  log: (line: string) => void,
): Promise<TenantProvisioning> {
  const ops = create({
    cluster,
    tenants: perTenant({ cluster, listTenants: async () => [...profile.tenants], baseSchema: () => null }),
  });
  try {
    await ops.migrate();
    const tenantOf = (ctx: DdlContextLike) => (ctx.target.kind === 'tenant' ? ctx.target.tenant : '');
    const op = await ops.run({
      project: DEMO_PROJECT,
      type: `create_business_tables_${profile.name}`,
      request: { profile: profile.name, tenants: profile.tenants },
      idempotencyKey: `${profile.name}:business-tables:v1:${profile.tenants.join(',')}`,
      skipBaseDdl: true,
      handler: {
        applyDdl: async (ctx) => {
          await ctx.tx.exec(profile.tenantDdl(tenantOf(ctx)));
          log(`tenant ${tenantOf(ctx)}: business tables ready`);
        },
        compensate: async (ctx) => {
          await ctx.tx.exec(profile.tenantDropDdl(tenantOf(ctx)));
        },
      },
    });
    log(`schemaops operation ${op.id}: ${op.status}`);
    if (op.status !== 'committed') {
      throw new Error(`schemaops operation ${op.id} ended ${op.status}: ${op.lastError ?? ''}`);
    }
    return {
      via: 'schemaops',
      operationId: op.id,
      status: op.status,
      ledger: async () => (await ops.list({ project: DEMO_PROJECT, limit: 20 })).map(toLedgerEntry),
      close: () => ops.close(),
    };
  } catch (e) {
    await ops.close().catch(() => {});
    throw e;
  }
}

function toLedgerEntry(r: Record<string, unknown>): LedgerEntry {
  const d = r['updatedAt'];
  return {
    id: String(r['id'] ?? ''),
    operationType: String(r['type'] ?? ''),
    status: String(r['status'] ?? ''),
    attempts: Number(r['attemptCount'] ?? 0),
    error: (r['lastError'] as string | null | undefined) ?? null,
    updatedAt: d instanceof Date ? d.toISOString() : String(d ?? ''),
  };
}
