// Which tables a watched statement reads, as SQLite's compiled program says (no SQL parsing).
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tablesRead } from '../../../src/client/internal/live-query.js';
import type { SqliteDb } from '../../../src/client/writer-types.js';

let db: Database.Database;
beforeAll(() => {
  db = new Database(':memory:');
  db.exec(`
    CREATE TABLE users (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL);
    CREATE INDEX users_name ON users(name);
    CREATE TABLE posts (id TEXT PRIMARY KEY NOT NULL, author_id TEXT, title TEXT) WITHOUT ROWID;
    CREATE TABLE tags (post_id TEXT, tag TEXT);
    CREATE VIEW post_authors AS SELECT p.title, u.name FROM posts p JOIN users u ON u.id = p.author_id;
    CREATE VIEW tagged AS SELECT * FROM post_authors, tags;
    CREATE TEMP TABLE scratch (x);
    ATTACH ':memory:' AS aux;
    CREATE TABLE aux.Remote (id TEXT PRIMARY KEY);
    CREATE VIRTUAL TABLE docs USING fts5(body);`);
});
afterAll(() => db.close());

const read = (sql: string, params?: unknown[] | Record<string, unknown>) => {
  const t = tablesRead(db as unknown as SqliteDb, sql, params);
  return t === undefined ? undefined : [...t].sort();
};

describe('tablesRead', () => {
  it('finds the tables of plain reads, index-only reads and parameters', () => {
    expect(read('SELECT * FROM users')).toEqual(['users']);
    expect(read('SELECT name FROM users WHERE name = ?', ['x'])).toEqual(['users']);
    expect(read('SELECT count(*) FROM users')).toEqual(['users']);
    expect(read('SELECT title FROM posts WHERE id = @id', { id: 'p' })).toEqual(['posts']);
  });

  it('resolves views (nested too), joins, subqueries and CTEs to their base tables', () => {
    expect(read('SELECT * FROM post_authors')).toEqual(['posts', 'users']);
    expect(read('SELECT * FROM tagged')).toEqual(['posts', 'tags', 'users']);
    expect(read('SELECT (SELECT count(*) FROM tags) AS n, title FROM posts')).toEqual(['posts', 'tags']);
    expect(
      read('WITH t AS (SELECT post_id FROM tags) SELECT * FROM t JOIN users ON users.id = t.post_id'),
    ).toEqual(['tags', 'users']);
  });

  it('names tables outside main by schema, and knows none for a statement that reads none', () => {
    expect(read('SELECT * FROM aux.remote')).toEqual(['aux.remote']);
    expect(read('SELECT * FROM scratch')).toEqual(['temp.scratch']);
    expect(read('SELECT 1')).toEqual([]);
  });

  it('cannot tell for a virtual table: the query re-runs on every change', () => {
    expect(read(`SELECT * FROM docs WHERE docs MATCH 'x'`)).toBeUndefined();
  });
});
