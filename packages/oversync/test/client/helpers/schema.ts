/** The server side of the test business schema (a subset of go-oversync's example schema). */
export const PG_BUSINESS_DDL = `
CREATE SCHEMA business;
CREATE TABLE business.users (
  _sync_scope_id text NOT NULL, id uuid NOT NULL, name text NOT NULL, email text NOT NULL DEFAULT '',
  PRIMARY KEY (_sync_scope_id, id));
CREATE TABLE business.posts (
  _sync_scope_id text NOT NULL, id uuid NOT NULL, title text NOT NULL, content text NOT NULL DEFAULT '',
  author_id uuid,
  PRIMARY KEY (_sync_scope_id, id),
  CONSTRAINT posts_author_id_fkey FOREIGN KEY (_sync_scope_id, author_id)
    REFERENCES business.users(_sync_scope_id, id) DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE business.files (
  _sync_scope_id text NOT NULL, id uuid NOT NULL, name text NOT NULL, data bytea,
  PRIMARY KEY (_sync_scope_id, id));
CREATE TABLE business.typed_rows (
  _sync_scope_id text NOT NULL, id uuid NOT NULL, name text NOT NULL, note text, count_value bigint,
  enabled_flag boolean NOT NULL DEFAULT false, rating double precision, data bytea, created_at timestamptz,
  doc jsonb,
  PRIMARY KEY (_sync_scope_id, id));
`;

/** The device side of the same schema. */
export const SQLITE_BUSINESS_DDL = `
CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS posts (id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL, content TEXT NOT NULL DEFAULT '',
  author_id TEXT REFERENCES users(id) DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE IF NOT EXISTS files (id BLOB PRIMARY KEY NOT NULL, name TEXT NOT NULL, data BLOB);
CREATE TABLE IF NOT EXISTS typed_rows (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, note TEXT, count_value INTEGER,
  enabled_flag BOOLEAN NOT NULL DEFAULT 0, rating REAL, data BLOB, created_at TEXT, doc JSON);
`;

export const CLIENT_TABLES = [
  { table: 'users', syncKeyColumns: ['id'] },
  { table: 'posts', syncKeyColumns: ['id'] },
  { table: 'files', syncKeyColumns: ['id'] },
  { table: 'typed_rows', syncKeyColumns: ['id'] },
];

/** A business schema as a test needs it: Postgres DDL, SQLite DDL and the synced tables. */
export interface TestSchema {
  readonly pg: string;
  readonly sqlite: string;
  readonly tables: ReadonlyArray<{ readonly table: string; readonly syncKeyColumns: readonly string[] }>;
}

export const BUSINESS_SCHEMA: TestSchema = {
  pg: PG_BUSINESS_DDL,
  sqlite: SQLITE_BUSINESS_DDL,
  tables: CLIENT_TABLES,
};
