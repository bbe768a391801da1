/**
 * Creates the business tables in every tenant schema. The fan-out goes through @x/schemaops (a
 * ledger row per operation, a state per tenant, compensation on failure) when that package exposes
 * its runtime; otherwise each tenant's DDL runs in its own transaction and the ledger is reported
 * as unavailable.
 */
import type { Cluster } from '@x/dbx';
import * as schemaops from '@x/schemaops';
import type { Profile } from './profiles.js';

export interface LedgerEntry {
  id: string;
  operationType: string;
  status: string;
  attempts: number;
  steps: unknown;
  error: string | null;
  updatedAt: string;
}

export interface TenantProvisioning {
  /** 'schemaops' when the ledger was used, 'direct' for the fallback. */
  readonly via: 'schemaops' | 'direct';
  readonly operationId: string | null;
  readonly status: string;
  /** The schemaops ledger for the demo project (newest first), or [] when unavailable. */
  ledger(): Promise<LedgerEntry[]>;
  close(): Promise<void>;
}

export const DEMO_PROJECT = 'x-demo';

type AnyFn = (...args: unknown[]) => unknown;
const lib = schemaops as unknown as Record<string, unknown>;

export async function provisionTenants(
  cluster: Cluster,
  profile: Profile,
  log: (line: string) => void,
): Promise<TenantProvisioning> {
  const create = lib['createSchemaOps'];
  if (typeof create === 'function') return provisionWithSchemaOps(create as AnyFn, cluster, profile, log);
  log(`schemaops runtime not available yet: creating ${profile.tenants.length} tenant schema(s) directly`);
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

/** Shapes used from @x/schemaops (typed loosely until its API is final). */
interface SchemaOpsLike {
  migrate?(opts?: unknown): Promise<void>;
  run(input: Record<string, unknown>): Promise<Record<string, unknown>>;
  listOperations?(project: string, opts?: unknown): Promise<Array<Record<string, unknown>>>;
  listRepairable?(project: string, limit?: number): Promise<Array<Record<string, unknown>>>;
  close?(): Promise<void>;
}

async function provisionWithSchemaOps(
  create: AnyFn,
  cluster: Cluster,
  profile: Profile,
  log: (line: string) => void,
): Promise<TenantProvisioning> {
  const ops = create({
    db: cluster,
    tenants: { kind: 'schema', list: async () => [...profile.tenants] },
  }) as SchemaOpsLike;
  await ops.migrate?.();
  const op = await ops.run({
    project: DEMO_PROJECT,
    operationType: `create_business_tables_${profile.name}`,
    request: { profile: profile.name, tenants: profile.tenants },
    idempotencyKey: `${DEMO_PROJECT}:${profile.name}:v1`,
    skipBaseDdl: true,
    applyTenantDdl: async (tx: { exec(sql: string): Promise<unknown> }, tenant: string) => {
      await tx.exec(profile.tenantDdl(tenant));
      log(`tenant ${tenant}: business tables ready`);
    },
    compensateTenant: async (tx: { exec(sql: string): Promise<unknown> }, tenant: string) => {
      await tx.exec(profile.tenantDropDdl(tenant));
    },
    persistSystem: async () => {},
    refreshCache: async () => {},
  });
  const status = String(op['status'] ?? 'unknown');
  const id = String(op['id'] ?? '');
  log(`schemaops operation ${id} → ${status}`);
  return {
    via: 'schemaops',
    operationId: id,
    status,
    ledger: async () => {
      const list = (await ops.listOperations?.(DEMO_PROJECT)) ?? [];
      return list.map(toLedgerEntry);
    },
    close: async () => {
      await ops.close?.();
    },
  };
}

function toLedgerEntry(r: Record<string, unknown>): LedgerEntry {
  return {
    id: String(r['id'] ?? ''),
    operationType: String(r['operationType'] ?? r['operation_type'] ?? ''),
    status: String(r['status'] ?? ''),
    attempts: Number(r['attemptCount'] ?? r['attempt_count'] ?? 0),
    steps: r['steps'] ?? r['steps_json'] ?? null,
    error: (r['error'] as string | null | undefined) ?? null,
    updatedAt: String(r['updatedAt'] ?? r['updated_at'] ?? ''),
  };
}
