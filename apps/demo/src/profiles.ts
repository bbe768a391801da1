/**
 * The two server profiles. `default`: a small to-do schema (`lists`, `items`) created in one
 * PostgreSQL schema per tenant. `reference`: exactly the go-oversync example server's `business`
 * schema (eight tables, scope-prefixed composite keys, a self-reference and the team <-> member cycle).
 */

export type ProfileName = 'default' | 'reference';
export const PROFILE_NAMES: readonly ProfileName[] = ['default', 'reference'];

export interface Profile {
  readonly name: ProfileName;
  /** Tenants = PostgreSQL schemas that receive the business tables (through @x/schemaops). */
  readonly tenants: readonly string[];
  /** Idempotent DDL creating the business tables in one tenant schema. */
  tenantDdl(schema: string): string;
  /** Undo of `tenantDdl` (compensation): must tolerate missing objects. */
  tenantDropDdl(schema: string): string;
  /**
   * Tables registered with the sync service, in every tenant schema. `backendWrites`: ordinary SQL
   * on the table (an admin's UPDATE from any client) syncs to the devices at COMMIT.
   */
  readonly tables: readonly { table: string; syncKeyColumns: readonly string[]; backendWrites?: boolean }[];
  /** The reference example's `POST /dummy-signin`. */
  readonly signInRoute: boolean;
  /** The reference example's test-only routes (`POST /test/reset`, `POST /test/retention-floor`). */
  readonly testRoutes: boolean;
  readonly appName: string;
}

/** A profile's tables as a sync client registers them (the server-only `backendWrites` left out). */
export function clientTables(profile: Profile): Array<{ table: string; syncKeyColumns: string[] }> {
  return profile.tables.map((t) => ({ table: t.table, syncKeyColumns: [...t.syncKeyColumns] }));
}

const q = (s: string) => `"${s.replace(/"/g, '""')}"`;

/** The default profile: tenants are org schemas; every user's rows are scoped by `_sync_scope_id`. */
export const DEFAULT_TENANTS: readonly string[] = ['acme', 'globex'];

export const defaultProfile: Profile = {
  name: 'default',
  tenants: DEFAULT_TENANTS,
  appName: 'x-demo',
  signInRoute: true,
  testRoutes: false,
  tables: [
    { table: 'lists', syncKeyColumns: ['id'], backendWrites: true },
    { table: 'items', syncKeyColumns: ['id'], backendWrites: true },
  ],
  tenantDdl: (schema) => `
CREATE SCHEMA IF NOT EXISTS ${q(schema)};
CREATE TABLE IF NOT EXISTS ${q(schema)}.lists (
  _sync_scope_id text NOT NULL,
  id uuid NOT NULL,
  name text NOT NULL,
  PRIMARY KEY (_sync_scope_id, id));
CREATE TABLE IF NOT EXISTS ${q(schema)}.items (
  _sync_scope_id text NOT NULL,
  id uuid NOT NULL,
  list_id uuid NOT NULL,
  title text NOT NULL,
  done bigint NOT NULL DEFAULT 0,
  note text NOT NULL DEFAULT '',
  updated_by text NOT NULL DEFAULT '',
  PRIMARY KEY (_sync_scope_id, id),
  CONSTRAINT items_list_id_fkey FOREIGN KEY (_sync_scope_id, list_id)
    REFERENCES ${q(schema)}.lists (_sync_scope_id, id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED);
`,
  tenantDropDdl: (schema) => `DROP SCHEMA IF EXISTS ${q(schema)} CASCADE;`,
};

/** Device-side (SQLite) shape of the default profile's tables. */
export const DEFAULT_SQLITE_DDL = `
CREATE TABLE IF NOT EXISTS lists (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
  id TEXT PRIMARY KEY NOT NULL,
  list_id TEXT NOT NULL REFERENCES lists(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
  title TEXT NOT NULL,
  done INTEGER NOT NULL DEFAULT 0,
  note TEXT NOT NULL DEFAULT '',
  updated_by TEXT NOT NULL DEFAULT '');
`;

export const REFERENCE_SCHEMA = 'business';

/** The go-oversync example server's business schema (see shared/design/reference-example-server.md). */
export const referenceProfile: Profile = {
  name: 'reference',
  tenants: [REFERENCE_SCHEMA],
  appName: 'nethttp-server-example',
  signInRoute: true,
  testRoutes: true,
  tables: [
    { table: 'users', syncKeyColumns: ['id'] },
    { table: 'posts', syncKeyColumns: ['id'] },
    { table: 'categories', syncKeyColumns: ['id'] },
    { table: 'teams', syncKeyColumns: ['id'] },
    { table: 'team_members', syncKeyColumns: ['id'] },
    { table: 'files', syncKeyColumns: ['id'] },
    { table: 'file_reviews', syncKeyColumns: ['id'] },
    { table: 'typed_rows', syncKeyColumns: ['id'] },
  ],
  tenantDdl: (schema) => {
    const s = q(schema);
    return `
CREATE SCHEMA IF NOT EXISTS ${s};
CREATE TABLE IF NOT EXISTS ${s}.users (
  _sync_scope_id TEXT NOT NULL, id UUID NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL,
  created_at TIMESTAMPTZ DEFAULT now(), updated_at TIMESTAMPTZ DEFAULT now(),
  PRIMARY KEY (_sync_scope_id, id));
CREATE TABLE IF NOT EXISTS ${s}.posts (
  _sync_scope_id TEXT NOT NULL, id UUID NOT NULL, title TEXT NOT NULL, content TEXT NOT NULL, author_id UUID,
  created_at TIMESTAMPTZ DEFAULT now(), updated_at TIMESTAMPTZ DEFAULT now(),
  PRIMARY KEY (_sync_scope_id, id),
  CONSTRAINT posts_author_id_fkey FOREIGN KEY (_sync_scope_id, author_id)
    REFERENCES ${s}.users (_sync_scope_id, id) DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE IF NOT EXISTS ${s}.categories (
  _sync_scope_id TEXT NOT NULL, id UUID NOT NULL, name TEXT NOT NULL, parent_id UUID,
  PRIMARY KEY (_sync_scope_id, id),
  CONSTRAINT categories_parent_id_fkey FOREIGN KEY (_sync_scope_id, parent_id)
    REFERENCES ${s}.categories (_sync_scope_id, id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE IF NOT EXISTS ${s}.teams (
  _sync_scope_id TEXT NOT NULL, id UUID NOT NULL, name TEXT NOT NULL, captain_member_id UUID,
  PRIMARY KEY (_sync_scope_id, id));
CREATE TABLE IF NOT EXISTS ${s}.team_members (
  _sync_scope_id TEXT NOT NULL, id UUID NOT NULL, name TEXT NOT NULL, team_id UUID NOT NULL,
  PRIMARY KEY (_sync_scope_id, id),
  CONSTRAINT team_members_team_id_fkey FOREIGN KEY (_sync_scope_id, team_id)
    REFERENCES ${s}.teams (_sync_scope_id, id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED);
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
                 JOIN pg_namespace n ON n.oid = t.relnamespace
                 WHERE c.conname = 'teams_captain_member_id_fkey' AND n.nspname = ${`'${schema.replace(/'/g, "''")}'`}
                   AND t.relname = 'teams') THEN
    ALTER TABLE ${s}.teams ADD CONSTRAINT teams_captain_member_id_fkey
      FOREIGN KEY (_sync_scope_id, captain_member_id) REFERENCES ${s}.team_members (_sync_scope_id, id)
      DEFERRABLE INITIALLY DEFERRED;
  END IF;
END $$;
CREATE TABLE IF NOT EXISTS ${s}.files (
  _sync_scope_id TEXT NOT NULL, id UUID NOT NULL, name TEXT NOT NULL, data BYTEA NOT NULL,
  PRIMARY KEY (_sync_scope_id, id));
CREATE TABLE IF NOT EXISTS ${s}.file_reviews (
  _sync_scope_id TEXT NOT NULL, id UUID NOT NULL, review TEXT NOT NULL, file_id UUID NOT NULL,
  PRIMARY KEY (_sync_scope_id, id),
  CONSTRAINT file_reviews_file_id_fkey FOREIGN KEY (_sync_scope_id, file_id)
    REFERENCES ${s}.files (_sync_scope_id, id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE IF NOT EXISTS ${s}.typed_rows (
  _sync_scope_id TEXT NOT NULL, id UUID NOT NULL, name TEXT NOT NULL, note TEXT NULL, count_value BIGINT NULL,
  enabled_flag BIGINT NOT NULL, rating DOUBLE PRECISION NULL, data BYTEA NULL, created_at TIMESTAMPTZ NULL,
  PRIMARY KEY (_sync_scope_id, id));
`;
  },
  tenantDropDdl: (schema) => `DROP SCHEMA IF EXISTS ${q(schema)} CASCADE;`,
};

export function profileByName(name: string): Profile {
  if (name === 'reference') return referenceProfile;
  return defaultProfile;
}
