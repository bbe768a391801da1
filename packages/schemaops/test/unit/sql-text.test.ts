import { describe, expect, it } from 'vitest';
import { findTransactionControl } from '../../src/internal/sql.js';

describe('findTransactionControl', () => {
  it('finds transaction control at the start of any statement, in any case', () => {
    expect(findTransactionControl('alter table t add column c int; COMMIT; create index i on t (c)')).toEqual(
      {
        index: 1,
        keyword: 'COMMIT',
      },
    );
    expect(findTransactionControl('begin')).toEqual({ index: 0, keyword: 'BEGIN' });
    expect(findTransactionControl('select 1;\n  Start Transaction isolation level serializable')).toEqual({
      index: 1,
      keyword: 'START',
    });
    expect(findTransactionControl('select 1; /* c */ rollback to savepoint a')).toEqual({
      index: 1,
      keyword: 'ROLLBACK',
    });
    expect(findTransactionControl('select 1; -- note\nsavepoint a')).toEqual({
      index: 1,
      keyword: 'SAVEPOINT',
    });
    expect(findTransactionControl("prepare transaction 'x'")).toEqual({
      index: 0,
      keyword: 'PREPARE TRANSACTION',
    });
    expect(findTransactionControl('end;')?.keyword).toBe('END');
    expect(findTransactionControl(';;  abort')).toEqual({ index: 0, keyword: 'ABORT' });
  });

  it('ignores the words inside strings, identifiers, dollar quotes, comments and other statements', () => {
    const ok = [
      'alter table t add column c int; create index i on t (c)',
      "insert into log values ('x; commit; y'); select E'it\\'s; begin'",
      'create table "begin" (id int); alter table "commit;x" add column a int',
      `create function f() returns int language plpgsql as $$ begin return 1; end $$;
       do $body$ begin perform 1; commit; end $body$`,
      '/* begin; /* nested; commit */ still comment; rollback */ select 1',
      '-- commit;\nselect 1',
      'select case when true then 1 end; prepare q as select 1',
      "comment on table t is 'begin; commit'",
      '',
    ];
    for (const sql of ok) expect(findTransactionControl(sql), sql).toBeNull();
  });
});
