import { chmodSync, mkdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '@x/testkit';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  databaseKey,
  ensureRuntimeDir,
  readPrimaryInfo,
  resolveDatabasePath,
  writeFileAtomic,
} from '../../src/internal/runtime-dir.js';
import { uuidv7 } from '../../src/internal/uuidv7.js';

describe('runtime directory, info file, database key', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeEach(async () => {
    dir = await tempDir('dbproxy-rt');
  });
  afterEach(() => dir.cleanup());

  it('creates the runtime dir 0700 and tightens a loose existing one', () => {
    const rt = ensureRuntimeDir(join(dir.path, 'a', 'b'));
    expect(statSync(rt).mode & 0o777).toBe(0o700);
    const loose = join(dir.path, 'loose');
    mkdirSync(loose, { mode: 0o755 });
    chmodSync(loose, 0o755);
    ensureRuntimeDir(loose);
    expect(statSync(loose).mode & 0o777).toBe(0o700);
  });

  it('refuses a runtime dir too long for ipc:// socket paths', () => {
    expect(() => ensureRuntimeDir(join(dir.path, 'x'.repeat(80)))).toThrowError(
      expect.objectContaining({ code: 'DBPROXY_RUNTIME_DIR' }),
    );
  });

  it('writes files atomically with mode 0600 and treats unreadable info as absent', () => {
    const p = join(dir.path, 'info.json');
    writeFileAtomic(p, '{"a":1}');
    expect(statSync(p).mode & 0o777).toBe(0o600);
    expect(readPrimaryInfo(p)).toBeNull(); // wrong shape
    writeFileSync(p, '');
    expect(readPrimaryInfo(p)).toBeNull(); // empty (the ancestor's race became a second primary here)
    expect(readPrimaryInfo(join(dir.path, 'missing.json'))).toBeNull();
  });

  it('keys the election by the real path: two spellings of one file give one key', () => {
    const real = join(dir.path, 'data');
    mkdirSync(real);
    const link = join(dir.path, 'alias');
    symlinkSync(real, link);
    const a = resolveDatabasePath(join(real, 'x.db'));
    const b = resolveDatabasePath(join(link, '..', 'alias', 'x.db'));
    expect(b).toBe(a);
    expect(databaseKey(a)).toBe(databaseKey(b));
    expect(databaseKey(a)).not.toBe(databaseKey(join(real, 'y.db')));
  });

  it('makes time-ordered UUIDv7 request ids', () => {
    const ids = Array.from({ length: 50 }, () => uuidv7());
    for (const id of ids)
      expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(new Set(ids).size).toBe(50);
    const ms = (id: string) => Number.parseInt(id.replace(/-/g, '').slice(0, 12), 16);
    expect(Math.abs(ms(ids[0]!) - Date.now())).toBeLessThan(60_000);
    for (let i = 1; i < ids.length; i++) expect(ms(ids[i]!)).toBeGreaterThanOrEqual(ms(ids[i - 1]!));
  });
});
