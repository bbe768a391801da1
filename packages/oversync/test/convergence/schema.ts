/**
 * The convergence harness's schema: lists that nest under lists (a self-reference) and items in
 * lists, both foreign keys `ON DELETE CASCADE`, declared the same way in PostgreSQL and in SQLite.
 * `rev` holds the token of the local edit that last wrote the row (see accounting.ts).
 */
export const CONVERGENCE_SCHEMA = 'business';

export const PG_CONVERGENCE_DDL = `
CREATE SCHEMA IF NOT EXISTS business;
CREATE TABLE business.lists (
  _sync_scope_id text NOT NULL, id uuid NOT NULL, name text NOT NULL, parent_list_id uuid, rev text,
  PRIMARY KEY (_sync_scope_id, id),
  CONSTRAINT lists_parent_list_id_fkey FOREIGN KEY (_sync_scope_id, parent_list_id)
    REFERENCES business.lists(_sync_scope_id, id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE business.items (
  _sync_scope_id text NOT NULL, id uuid NOT NULL, list_id uuid NOT NULL, title text NOT NULL,
  done boolean NOT NULL DEFAULT false, position integer NOT NULL DEFAULT 0, rev text,
  PRIMARY KEY (_sync_scope_id, id),
  CONSTRAINT items_list_id_fkey FOREIGN KEY (_sync_scope_id, list_id)
    REFERENCES business.lists(_sync_scope_id, id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED);
`;

export const SQLITE_CONVERGENCE_DDL = `
CREATE TABLE IF NOT EXISTS lists (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL,
  parent_list_id TEXT REFERENCES lists(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED, rev TEXT);
CREATE TABLE IF NOT EXISTS items (id TEXT PRIMARY KEY NOT NULL,
  list_id TEXT NOT NULL REFERENCES lists(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
  title TEXT NOT NULL, done BOOLEAN NOT NULL DEFAULT 0, position INTEGER NOT NULL DEFAULT 0, rev TEXT);
`;

/** Parents first. */
export const CONVERGENCE_TABLES = [
  { table: 'lists', syncKeyColumns: ['id'] },
  { table: 'items', syncKeyColumns: ['id'] },
] as const;

export type ConvergenceTable = (typeof CONVERGENCE_TABLES)[number]['table'];

/** The columns compared between the server and the devices, in one normalised form. */
export const COMPARED_COLUMNS: Readonly<Record<ConvergenceTable, readonly string[]>> = {
  lists: ['id', 'name', 'parent_list_id', 'rev'],
  items: ['id', 'list_id', 'title', 'done', 'position', 'rev'],
};
