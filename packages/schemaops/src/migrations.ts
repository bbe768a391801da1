/** One step of the ledger schema: `sql` gets the quoted ledger schema name. */
export interface Migration {
  version: number;
  name: string;
  sql: (s: string) => string;
}

const STATUS_LIST = `'applying','committed','compensating','compensated','failed','needs_repair'`;
/** Step states, in `steps` and in the `tenant_events` journal alike. */
const STEP_STATE_CHECK = `state text not null check (state in ('pending', 'succeeded', 'failed', 'compensated'))`;

/**
 * The ledger schema's migrations, applied in order by `migrate()` (public: a deployment may apply them
 * with its own tool). Each `sql` takes the quoted ledger schema name.
 */
export const MIGRATIONS: readonly Migration[] = Object.freeze([
  {
    version: 1,
    name: 'operations and steps',
    sql: (s: string) => `
      create table ${s}.operations (
        id uuid primary key,
        project text not null,
        operation_type text not null,
        request jsonb not null,
        request_hash text not null,
        idempotency_key text,
        status text not null check (status in (${STATUS_LIST})),
        direction text not null default 'forward' check (direction in ('forward', 'backward')),
        skip_base_ddl boolean not null default false,
        physical_ddl_required boolean not null default false,
        attempt_count integer not null default 1,
        last_error text,
        last_error_code text,
        compensation_error text,
        owner text,
        created_at timestamptz not null default now(),
        updated_at timestamptz not null default now(),
        finished_at timestamptz,
        next_attempt_at timestamptz,
        constraint operations_idempotency_key unique (project, idempotency_key)
      );
      create index operations_project_status_updated on ${s}.operations (project, status, updated_at);
      create index operations_open on ${s}.operations (updated_at)
        where status in ('applying', 'compensating', 'failed', 'needs_repair');
      create table ${s}.steps (
        operation_id uuid not null references ${s}.operations (id) on delete cascade,
        step text not null check (step in ('base_project_ddl', 'tenant_ddl', 'system_schema', 'cache')),
        tenant text not null default '',
        ordinal integer not null default 0,
        ${STEP_STATE_CHECK},
        error text,
        attempts integer not null default 0,
        updated_at timestamptz not null default now(),
        primary key (operation_id, step, tenant)
      );`,
  },
  {
    version: 2,
    name: 'room on steps pages for HOT updates',
    // A tenant's step row is updated once or twice after a bulk insert that packs its pages; free
    // space lets those updates stay on the page (HOT) without touching the primary key index.
    sql: (s: string) => `alter table ${s}.steps set (fillfactor = 70)`,
  },
  {
    version: 3,
    name: 'tenant state journal',
    // No foreign key: its check would lock the operation row from every tenant transaction at once
    // (KEY SHARE, a multixact when several hold it). Folded into steps after each fan-out.
    sql: (s: string) => `
      create table ${s}.tenant_events (
        operation_id uuid not null,
        tenant text not null,
        seq bigint generated always as identity,
        ${STEP_STATE_CHECK},
        error text,
        counts_attempt boolean not null,
        at timestamptz not null default now(),
        primary key (operation_id, tenant, seq)
      )`,
  },
]);
