import { randomUUID } from 'node:crypto';
import type { Cluster, Querier } from '@x/dbx';
import { SchemaOpsError } from '../errors.js';
import { MIGRATIONS } from '../migrations.js';
import type {
  Direction,
  ListedOperation,
  Operation,
  OperationStatus,
  OperationSummary,
  StepName,
  StepRecord,
  StepState,
  TenantStepRecord,
} from '../types.js';
import { lockKeys } from './lock.js';
import { quoteIdent, quoteLiteral } from './sql.js';

/**
 * The ledger: one `operations` row per operation and one `steps` row per step (and per tenant for
 * `tenant_ddl`), in a schema the package migrates itself. A tenant's state changes are appended to
 * `tenant_events` (an insert, inside the tenant's own transaction where possible) instead of updating
 * its `steps` row: under a concurrent fan-out an update of the `pending` row cost about three times
 * what an insert does (index lookup, new row version on pages the other tenants are updating, often
 * not HOT while the long DDL transactions hold the xmin horizon back). A tenant's state is its last
 * event, else its `steps` row; `foldTenantEvents` moves the events into `steps` after each fan-out,
 * so a settled operation's `steps` rows are the whole truth and the journal stays small.
 */

/** Each tenant's last journal event, with the attempts its events count, from `source` (a FROM clause). */
const LATEST_EVENT_PER_TENANT = (source: string): string =>
  `select distinct on (tenant) tenant, state, error, at,
     (count(*) filter (where counts_attempt) over (partition by tenant))::int as attempts
   from ${source} order by tenant, seq desc`;

interface OpRow {
  id: string;
  project: string;
  operation_type: string;
  request: unknown;
  request_hash: string;
  idempotency_key: string | null;
  status: OperationStatus;
  direction: Direction;
  skip_base_ddl: boolean;
  physical_ddl_required: boolean;
  attempt_count: number;
  last_error: string | null;
  last_error_code: string | null;
  compensation_error: string | null;
  created_at: Date;
  updated_at: Date;
  finished_at: Date | null;
  next_attempt_at: Date | null;
}

interface StepRow {
  step: StepName;
  tenant: string;
  state: StepState;
  error: string | null;
  attempts: number;
  updated_at: Date;
}

const SUMMARY_COLUMNS = `id, project, operation_type, request_hash, idempotency_key, status, direction, skip_base_ddl,
  physical_ddl_required, attempt_count, last_error, last_error_code, compensation_error, created_at, updated_at,
  finished_at, next_attempt_at`;

function summaryOf(r: OpRow): OperationSummary & { requestHash: string } {
  return {
    id: r.id,
    project: r.project,
    type: r.operation_type,
    requestHash: r.request_hash,
    status: r.status,
    direction: r.direction,
    idempotencyKey: r.idempotency_key,
    skipBaseDdl: r.skip_base_ddl,
    physicalDdlRequired: r.physical_ddl_required,
    attemptCount: r.attempt_count,
    lastError: r.last_error,
    lastErrorCode: r.last_error_code,
    compensationError: r.compensation_error,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    finishedAt: r.finished_at,
    nextAttemptAt: r.next_attempt_at,
  };
}

/** An operation from its row and its step rows (tenant rows in ordinal order). */
function assemble(row: OpRow, steps: readonly StepRow[]): Operation {
  const single = (name: StepName): StepRecord => {
    const r = steps.find((x) => x.step === name);
    if (!r) {
      throw new SchemaOpsError('SCHEMAOPS_LEDGER_FAILED', `ledger row ${row.id} has no ${name} step`, {
        details: { operationId: row.id },
      });
    }
    return Object.freeze({ state: r.state, error: r.error, attempts: r.attempts, updatedAt: r.updated_at });
  };
  const tenants: TenantStepRecord[] = steps
    .filter((x) => x.step === 'tenant_ddl')
    .map((r) =>
      Object.freeze({
        tenant: r.tenant,
        state: r.state,
        error: r.error,
        attempts: r.attempts,
        updatedAt: r.updated_at,
      }),
    );
  const { requestHash: _, ...summary } = summaryOf(row);
  return Object.freeze({
    ...summary,
    request: row.request,
    steps: Object.freeze({
      base_project_ddl: single('base_project_ddl'),
      tenant_ddl: Object.freeze(tenants),
      system_schema: single('system_schema'),
      cache: single('cache'),
    }),
  });
}

export interface NewOperation {
  project: string;
  type: string;
  request: unknown;
  requestHash: string;
  idempotencyKey: string | null;
  skipBaseDdl: boolean;
  physicalDdlRequired: boolean;
  tenants: readonly string[];
  owner: string;
}

export interface StatusUpdate {
  status: OperationStatus;
  direction?: Direction;
  lastError?: string | null;
  lastErrorCode?: string | null;
  compensationError?: string | null;
  /** Sets finished_at (terminal) or clears it. */
  finished?: boolean;
  /** Increments attempt_count. */
  newAttempt?: boolean;
  owner?: string;
}

export class Ledger {
  readonly schema: string;
  readonly #s: string;
  readonly #cluster: Cluster;
  #migrated: Promise<void> | null = null;
  /** Ledger statements issued (for metrics). */
  writes = 0;

  constructor(cluster: Cluster, schema: string) {
    this.#cluster = cluster;
    this.schema = schema;
    this.#s = quoteIdent(schema);
  }

  /**
   * Memoised; reset on failure so a later call retries. One caller's abort stops its own wait, never
   * the shared migration.
   */
  migrate(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    this.#migrated ??= this.#migrate().catch((e: unknown) => {
      this.#migrated = null;
      throw e;
    });
    const shared = this.#migrated;
    if (!signal) return shared;
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => reject(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      shared.then(
        () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        },
        (e: unknown) => {
          signal.removeEventListener('abort', onAbort);
          reject(e);
        },
      );
    });
  }

  async #migrate(): Promise<void> {
    const s = this.#s;
    await this.#cluster.runTx(async (tx) => {
      // Serialises concurrent starts (every process, every instance) on this ledger schema.
      await tx.exec('select pg_advisory_xact_lock(hashtext($1))', [`schemaops:migrate:${this.schema}`]);
      await tx.exec(`create schema if not exists ${s}`);
      await tx.exec(
        `create table if not exists ${s}.migrations (
             version integer primary key, name text not null, applied_at timestamptz not null default now())`,
      );
      const done = new Set(
        (await tx.query<{ version: number }>(`select version from ${s}.migrations`)).rows.map(
          (r) => r.version,
        ),
      );
      for (const m of MIGRATIONS) {
        if (done.has(m.version)) continue;
        await tx.exec(m.sql(s));
        await tx.exec(`insert into ${s}.migrations (version, name) values ($1, $2)`, [m.version, m.name]);
      }
    });
  }

  /** The migration versions applied, ascending. */
  async versions(): Promise<number[]> {
    const r = await this.#cluster.query<{ version: number }>(
      `select version from ${this.#s}.migrations order by version`,
    );
    return r.rows.map((x) => x.version);
  }

  async findByKey(
    project: string,
    key: string,
  ): Promise<(OperationSummary & { requestHash: string }) | undefined> {
    const r = await this.#cluster.queryRow<OpRow>(
      `select ${SUMMARY_COLUMNS} from ${this.#s}.operations where project = $1 and idempotency_key = $2`,
      [project, key],
    );
    return r && summaryOf(r);
  }

  async summary(
    id: string,
    signal?: AbortSignal,
  ): Promise<(OperationSummary & { requestHash: string }) | undefined> {
    const r = await this.#cluster.queryRow<OpRow>(
      `select ${SUMMARY_COLUMNS} from ${this.#s}.operations where id = $1`,
      [id],
      signal ? { signal } : {},
    );
    return r && summaryOf(r);
  }

  /**
   * Inserts the operation (status `applying`) and all of its steps, `pending`, in one statement (one
   * round trip, atomic), and returns it as `load` would read it.
   */
  async insert(n: NewOperation): Promise<Operation> {
    const id = randomUUID();
    const s = this.#s;
    this.writes++;
    // A skipped base step has nothing to do: it is recorded as succeeded, as the ancestor did.
    const baseState: StepState = n.skipBaseDdl ? 'succeeded' : 'pending';
    const row = await this.#cluster.queryRow<OpRow>(
      `with op as (
         insert into ${s}.operations (id, project, operation_type, request, request_hash, idempotency_key, status,
           skip_base_ddl, physical_ddl_required, owner)
         values ($1, $2, $3, $4::jsonb, $5, $6, 'applying', $7, $8, $9)
         returning ${SUMMARY_COLUMNS}, request
       ), steps as (
         insert into ${s}.steps (operation_id, step, tenant, ordinal, state)
         select $1, 'base_project_ddl', '', 0, $10
         union all select $1, 'system_schema', '', 0, 'pending'
         union all select $1, 'cache', '', 0, 'pending'
         union all select $1, 'tenant_ddl', t.tenant, t.ordinal::int, 'pending'
           from unnest($11::text[]) with ordinality as t(tenant, ordinal)
       )
       select * from op`,
      [
        id,
        n.project,
        n.type,
        JSON.stringify(n.request ?? null),
        n.requestHash,
        n.idempotencyKey,
        n.skipBaseDdl,
        n.physicalDdlRequired,
        n.owner,
        baseState,
        n.tenants,
      ],
    );
    if (!row) throw new SchemaOpsError('SCHEMAOPS_LEDGER_FAILED', 'the operation insert returned no row');
    const at = row.created_at;
    const step = (name: StepName, tenant: string, state: StepState): StepRow => ({
      step: name,
      tenant,
      state,
      error: null,
      attempts: 0,
      updated_at: at,
    });
    return assemble(row, [
      step('base_project_ddl', '', baseState),
      step('system_schema', '', 'pending'),
      step('cache', '', 'pending'),
      ...n.tenants.map((t) => step('tenant_ddl', t, 'pending')),
    ]);
  }

  /**
   * `markStep` as one parameterless statement, for a tenant source to run inside the target's own
   * transaction, batched with its setup (and with SQL-text DDL) in one simple query: values are quoted
   * literals, because a multi-statement query carries no parameters. A tenant's state is an insert
   * into the journal; the other steps update their row.
   */
  markStepStatement(
    id: string,
    step: StepName,
    tenant: string | null,
    state: StepState,
    error: string | null,
    countAttempt: boolean,
  ): { sql: string; params: unknown[] } {
    this.writes++;
    const err = error === null ? 'null' : quoteLiteral(error.replaceAll('\u0000', ''));
    if (step === 'tenant_ddl') {
      return {
        sql: `insert into ${this.#s}.tenant_events (operation_id, tenant, state, error, counts_attempt)
          values (${quoteLiteral(id)}, ${quoteLiteral(tenant ?? '')}, ${quoteLiteral(state)}, ${err}, ${countAttempt})`,
        params: [],
      };
    }
    return {
      sql: `update ${this.#s}.steps set state = ${quoteLiteral(state)}, error = ${err}, updated_at = now(),
          attempts = attempts + ${countAttempt ? 1 : 0}
        where operation_id = ${quoteLiteral(id)} and step = ${quoteLiteral(step)} and tenant = ''`,
      params: [],
    };
  }

  /** Records a step's state. `q` may be the tenant's own transaction (DDL and ledger commit together). */
  async markStep(
    q: Querier,
    id: string,
    step: StepName,
    tenant: string | null,
    state: StepState,
    error: string | null,
    countAttempt: boolean,
  ): Promise<void> {
    const { sql, params } = this.markStepStatement(id, step, tenant, state, error, countAttempt);
    await q.exec(sql, params);
  }

  /**
   * Moves an operation's journalled tenant states into its `steps` rows, in one statement (one
   * snapshot: an event committed meanwhile stays in the journal and still counts on reads).
   */
  async foldTenantEvents(id: string): Promise<void> {
    const s = this.#s;
    this.writes++;
    await this.#cluster.exec(
      `with ev as (
         delete from ${s}.tenant_events where operation_id = $1
         returning tenant, seq, state, error, counts_attempt, at
       ), latest as (${LATEST_EVENT_PER_TENANT('ev')})
       update ${s}.steps st set state = l.state, error = l.error, updated_at = l.at,
         attempts = st.attempts + l.attempts
       from latest l
       where st.operation_id = $1 and st.step = 'tenant_ddl' and st.tenant = l.tenant`,
      [id],
    );
  }

  async setStatus(id: string, u: StatusUpdate): Promise<void> {
    const sets = ['status = $2', 'updated_at = now()'];
    const params: unknown[] = [id, u.status];
    const add = (col: string, v: unknown) => {
      params.push(v);
      sets.push(`${col} = $${params.length}`);
    };
    if (u.direction !== undefined) add('direction', u.direction);
    if (u.lastError !== undefined) add('last_error', u.lastError);
    if (u.lastErrorCode !== undefined) add('last_error_code', u.lastErrorCode);
    if (u.compensationError !== undefined) add('compensation_error', u.compensationError);
    if (u.owner !== undefined) add('owner', u.owner);
    if (u.finished !== undefined) sets.push(u.finished ? 'finished_at = now()' : 'finished_at = null');
    if (u.newAttempt) sets.push('attempt_count = attempt_count + 1');
    this.writes++;
    await this.#cluster.exec(`update ${this.#s}.operations set ${sets.join(', ')} where id = $1`, params);
  }

  async setNextAttempt(id: string, at: Date | null): Promise<void> {
    this.writes++;
    await this.#cluster.exec(`update ${this.#s}.operations set next_attempt_at = $2 where id = $1`, [id, at]);
  }

  async load(id: string, signal?: AbortSignal): Promise<Operation | undefined> {
    const opts = signal ? { signal } : {};
    const row = await this.#cluster.queryRow<OpRow>(
      `select ${SUMMARY_COLUMNS}, request from ${this.#s}.operations where id = $1`,
      [id],
      opts,
    );
    if (!row) return undefined;
    // A tenant's state: its last journal event (not yet folded), else its steps row.
    const steps = await this.#cluster.query<StepRow>(
      `select st.step, st.tenant, coalesce(e.state, st.state) as state,
         case when e.state is null then st.error else e.error end as error,
         st.attempts + coalesce(e.attempts, 0) as attempts, coalesce(e.at, st.updated_at) as updated_at
       from ${this.#s}.steps st
       left join (
         ${LATEST_EVENT_PER_TENANT(`${this.#s}.tenant_events where operation_id = $1`)}
       ) e on st.step = 'tenant_ddl' and e.tenant = st.tenant
       where st.operation_id = $1 order by st.step, st.ordinal`,
      [id],
      opts,
    );
    return assemble(row, steps.rows);
  }

  async list(
    filter: { project?: string | null; statuses?: readonly OperationStatus[] | null; limit: number },
    order: 'recent' | 'oldest',
    signal?: AbortSignal,
  ): Promise<ListedOperation[]> {
    // project_locked: some process holds the project's advisory lock, i.e. an operation of the
    // project is in flight (what the ancestor could not tell apart from an abandoned `applying` row).
    const r = await this.#cluster.query<OpRow & { project_locked: boolean }>(
      `select ${SUMMARY_COLUMNS}, exists (
         select 1 from pg_locks l
         where l.locktype = 'advisory' and l.granted and l.objsubid = 2
           and l.database = (select oid from pg_database where datname = current_database())
           and l.classid = hashtext($4)::oid and l.objid = hashtext(project)::oid
       ) as project_locked
       from ${this.#s}.operations
       where ($1::text is null or project = $1) and ($2::text[] is null or status = any($2))
       order by updated_at ${order === 'recent' ? 'desc' : 'asc'}, id limit $3`,
      [filter.project ?? null, filter.statuses ?? null, filter.limit, lockKeys(this.schema, '')[0]],
      signal ? { signal } : {},
    );
    return r.rows.map((row) => {
      const { requestHash: _, ...s } = summaryOf(row);
      return Object.freeze({ ...s, projectLocked: row.project_locked });
    });
  }

  /** Operations the background reconciler should look at now. */
  async due(
    project: string | null,
    maxAttempts: number,
    limit: number,
    signal?: AbortSignal,
  ): Promise<Array<{ id: string; project: string; attemptCount: number }>> {
    const r = await this.#cluster.query<{ id: string; project: string; attempt_count: number }>(
      `select id, project, attempt_count from ${this.#s}.operations
       where status in ('applying', 'compensating', 'needs_repair')
         and ($1::text is null or project = $1) and attempt_count < $2
         and (next_attempt_at is null or next_attempt_at <= now())
       order by updated_at, id limit $3`,
      [project, maxAttempts, limit],
      signal ? { signal } : {},
    );
    return r.rows.map((x) => ({ id: x.id, project: x.project, attemptCount: x.attempt_count }));
  }
}
