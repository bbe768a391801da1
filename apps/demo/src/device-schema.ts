/** The device side of the default profile: SQLite DDL and the named writes every process registers. */
import { defineWrite, type WriteMethod } from '@x/dbproxy';
import type { SqliteDatabase } from '@x/writecoordinator';
import { z } from 'zod';

export { DEFAULT_SQLITE_DDL } from './profiles.js';

const uuid = z.string().uuid();

/** A typed write definition, widened for the registry (dbproxy validates params before the handler). */
export const write = <P>(def: WriteMethod<P>): WriteMethod => defineWrite(def) as unknown as WriteMethod;

export interface ItemRow {
  id: string;
  list_id: string;
  title: string;
  done: number;
  note: string;
  updated_by: string;
}
export interface ListRow {
  id: string;
  name: string;
}

export const itemSchema = z.object({
  id: uuid,
  list_id: uuid,
  title: z.string().min(1).max(500),
  done: z.number().int().min(0).max(1).default(0),
  note: z.string().max(2000).default(''),
  updated_by: z.string().max(200).default(''),
});

/** The application's writes. Every process of a device passes the same registry to dbproxy. */
export function businessWrites(): Record<string, WriteMethod> {
  return {
    'list.create': write({
      params: z.object({ id: uuid, name: z.string().min(1).max(200) }),
      handler: (db: SqliteDatabase, p) => {
        db.prepare(
          'INSERT INTO lists (id, name) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET name = excluded.name',
        ).run(p.id, p.name);
        return { id: p.id };
      },
    }),
    'item.put': write({
      params: itemSchema,
      handler: (db: SqliteDatabase, p) => {
        db.prepare(
          `INSERT INTO items (id, list_id, title, done, note, updated_by) VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT(id) DO UPDATE SET list_id = excluded.list_id, title = excluded.title, done = excluded.done,
             note = excluded.note, updated_by = excluded.updated_by`,
        ).run(p.id, p.list_id, p.title, p.done, p.note, p.updated_by);
        return { id: p.id };
      },
    }),
    'item.edit': write({
      params: z.object({
        id: uuid,
        title: z.string().min(1).max(500).optional(),
        note: z.string().max(2000).optional(),
        done: z.number().int().min(0).max(1).optional(),
        updated_by: z.string().max(200),
      }),
      handler: (db: SqliteDatabase, p) => {
        const r = db
          .prepare(
            `UPDATE items SET title = coalesce(?, title), note = coalesce(?, note), done = coalesce(?, done),
               updated_by = ? WHERE id = ?`,
          )
          .run(p.title ?? null, p.note ?? null, p.done ?? null, p.updated_by, p.id);
        return { changes: Number(r.changes) };
      },
    }),
    'item.delete': write({
      params: z.object({ id: uuid }),
      handler: (db: SqliteDatabase, p) => {
        const r = db.prepare('DELETE FROM items WHERE id = ?').run(p.id);
        return { changes: Number(r.changes) };
      },
    }),
  };
}

export function readAll(db: SqliteDatabase): { lists: ListRow[]; items: ItemRow[] } {
  return {
    lists: db.prepare('SELECT id, name FROM lists ORDER BY id').all() as ListRow[],
    items: db
      .prepare('SELECT id, list_id, title, done, note, updated_by FROM items ORDER BY id')
      .all() as ItemRow[],
  };
}
