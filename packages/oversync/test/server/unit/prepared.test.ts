import { describe, expect, it } from 'vitest';
import { MAX_PREPARED_STATEMENTS, prepared } from '../../../src/server/internal/db.js';

/** The names of the push's prepared statements (db.ts#prepared): one per text, bounded in number. */
describe('prepared statement names', () => {
  it('one text, one name, every time; another text, another name', () => {
    const a = prepared('SELECT $1::int AS a');
    expect(a?.name).toMatch(/^oversync_[0-9a-f]{24}$/);
    expect(prepared('SELECT $1::int AS a')).toEqual(a);
    expect(prepared('SELECT $1::int AS b')?.name).not.toBe(a?.name);
  });

  it('no name once MAX_PREPARED_STATEMENTS texts have one (the statement is planned per call then)', () => {
    const named: string[] = [];
    for (let i = 0; named.length < MAX_PREPARED_STATEMENTS + 10; i++) {
      const p = prepared(`SELECT ${i} AS n`);
      if (!p) break;
      named.push(p.name);
    }
    expect(named.length).toBeLessThanOrEqual(MAX_PREPARED_STATEMENTS);
    expect(prepared('SELECT $1::int AS never_named_before')).toBeUndefined();
    // texts named before keep their names
    expect(prepared('SELECT $1::int AS a')?.name).toMatch(/^oversync_/);
    expect(new Set(named).size).toBe(named.length);
  });
});
