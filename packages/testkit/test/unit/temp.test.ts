import { existsSync } from 'node:fs';
import { readdir, writeFile } from 'node:fs/promises';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { tempDir, tempSqlite } from '../../src/index.js';

describe('tempSqlite', () => {
  it('gives a path in a fresh dir; cleanup removes the database with its -wal/-shm files', async () => {
    const tmp = await tempSqlite('app.db');
    expect(tmp.path.startsWith(tmp.dir)).toBe(true);
    expect(existsSync(tmp.path)).toBe(false);
    const db = new Database(tmp.path);
    db.pragma('journal_mode = WAL');
    db.exec('CREATE TABLE t (x int); INSERT INTO t VALUES (1)');
    expect((await readdir(tmp.dir)).sort()).toEqual(['app.db', 'app.db-shm', 'app.db-wal']);
    db.close();
    await Promise.all([tmp.cleanup(), tmp.cleanup()]);
    expect(existsSync(tmp.dir)).toBe(false);
  });

  it('two temp databases never share a directory; await using cleans up', async () => {
    let dir: string;
    {
      await using a = await tempSqlite();
      await using b = await tempSqlite();
      expect(a.dir).not.toBe(b.dir);
      dir = a.dir;
      expect(existsSync(dir)).toBe(true);
    }
    expect(existsSync(dir)).toBe(false);
  });

  it('rejects a name with a path separator', async () => {
    await expect(tempSqlite('../escape.db')).rejects.toMatchObject({ code: 'TESTKIT_INVALID_OPTIONS' });
  });
});

describe('tempDir', () => {
  it('creates and removes a directory with contents', async () => {
    const dir = await tempDir('unit');
    await writeFile(`${dir.path}/f.txt`, 'x');
    await dir.cleanup();
    expect(existsSync(dir.path)).toBe(false);
  });
});
