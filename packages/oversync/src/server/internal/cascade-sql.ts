/**
 * Statement-level delete cascades of the sync layout. Per-row tables (session rows, row_state,
 * bundle_rows) carry no FK to their parent, because a per-row RI check costs about as much as the
 * row's own insert; one AFTER DELETE … FOR EACH STATEMENT trigger on the parent deletes the children
 * of every deleted parent row instead, through the statement's transition table.
 */

export interface CascadeChild {
  /** Qualified child table, e.g. `sync.push_session_chunks`. */
  readonly table: string;
  /** Columns that the child shares with the parent's key (same names on both sides). */
  readonly key: readonly string[];
}

export interface Cascade {
  /** Trigger function, `sync.<fn>()`. */
  readonly fn: string;
  readonly trigger: string;
  /** Qualified parent table. */
  readonly parent: string;
  /** Name of the transition table of deleted parent rows. */
  readonly oldRows: string;
  readonly children: readonly CascadeChild[];
}

/**
 * DDL of one cascade. `replace`: idempotent form for every bootstrap (CREATE OR REPLACE the
 * function, drop and re-create the trigger); otherwise plain CREATEs for a fresh schema.
 */
export function cascadeSql(c: Cascade, replace = false): string {
  const deletes = c.children.map(
    (child) =>
      `  DELETE FROM ${child.table} c USING ${c.oldRows} o WHERE ${child.key.map((k) => `c.${k} = o.${k}`).join(' AND ')};`,
  );
  return `CREATE ${replace ? 'OR REPLACE ' : ''}FUNCTION sync.${c.fn}() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
${deletes.join('\n')}
  RETURN NULL;
END
$fn$;
${replace ? `DROP TRIGGER IF EXISTS ${c.trigger} ON ${c.parent};\n` : ''}CREATE TRIGGER ${c.trigger} AFTER DELETE ON ${c.parent}
  REFERENCING OLD TABLE AS ${c.oldRows} FOR EACH STATEMENT EXECUTE FUNCTION sync.${c.fn}();
`;
}
