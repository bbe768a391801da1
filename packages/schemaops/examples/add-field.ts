import { createCluster } from '@x/dbx';
import { createSchemaOps, schemaPerTenant } from '@x/schemaops';
import { z } from 'zod';

const db = createCluster({ primary: process.env.DATABASE_URL ?? 'postgres://localhost/postgres' });

// The project `acme`: a base schema, three tenant schemas with the same `items` table, and a
// system table recording which fields each project has.
await db.exec(`
  create schema if not exists acme;
  create table if not exists acme.items (id int primary key);
  create schema if not exists acme_tenant_1; create table if not exists acme_tenant_1.items (id int primary key);
  create schema if not exists acme_tenant_2; create table if not exists acme_tenant_2.items (id int primary key);
  create schema if not exists acme_tenant_3; create table if not exists acme_tenant_3.items (id int primary key);
  create table if not exists model_fields (project text, field text, primary key (project, field));
`);
const cache = new Map<string, string[]>(); // stands for your application's cache of project metadata

const tenants = schemaPerTenant({ cluster: db }); // base schema `<project>`, tenants `<project>_tenant_*`
const Field = z.object({ table: z.string(), column: z.string() });

const ops = createSchemaOps({
  cluster: db,
  tenants,
  operations: {
    add_field: {
      request: Field,
      // Runs in its own transaction on the base schema and on each tenant schema (search_path set).
      async applyDdl({ tx, request }) {
        await tx.exec(`alter table ${request.table} add column if not exists ${request.column} text`);
      },
      async compensate({ tx, request }) {
        await tx.exec(`alter table ${request.table} drop column if exists ${request.column}`);
      },
      // In a transaction on the ledger's cluster; the step is recorded in the same transaction.
      async persistSystem({ tx, project, request }) {
        await tx.exec('insert into model_fields (project, field) values ($1, $2) on conflict do nothing', [
          project,
          request.column,
        ]);
      },
      async refreshCache({ project }) {
        const { rows } = await db.query<{ field: string }>(
          'select field from model_fields where project = $1 order by field',
          [project],
        );
        cache.set(
          project,
          rows.map((r) => r.field),
        );
      },
    },
    // The same as plain SQL text: each tenant's whole transaction goes as one query (see below).
    add_indexed_field: {
      request: Field,
      applySql: ({ request }) =>
        `alter table ${request.table} add column if not exists ${request.column} text;
         create index if not exists ${request.column}_idx on ${request.table} (${request.column})`,
      compensateSql: ({ request }) =>
        `drop index if exists ${request.column}_idx;
         alter table ${request.table} drop column if exists ${request.column}`,
    },
  },
});

const op = await ops.run({
  project: 'acme',
  type: 'add_field',
  request: { table: 'items', column: 'color' },
  idempotencyKey: 'add-color', // e.g. the request's Idempotency-Key header: a repeat returns this operation
});
console.log(
  op.status,
  op.steps.tenant_ddl.map((t) => `${t.tenant}: ${t.state}`),
);
console.log('cache', cache.get('acme'));

const indexed = await ops.run({
  project: 'acme',
  type: 'add_indexed_field',
  request: { table: 'items', column: 'size' },
});
console.log(indexed.type, indexed.status);

const repairer = ops.startReconciler(); // repairs operations left behind by crashes
console.log('reconciler running:', repairer.running);
// ... on shutdown:
await ops.close(); // stops the reconciler, waits for operations in flight
await tenants.close();
await db.close();
