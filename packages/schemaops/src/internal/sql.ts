/** Quotes an SQL identifier (schema / table name) for interpolation into DDL. */
export function quoteIdent(name: string): string {
  if (name.length === 0) throw new TypeError('an identifier must not be empty');
  if (name.includes('\u0000')) throw new TypeError('an identifier must not contain NUL');
  return `"${name.replace(/"/g, '""')}"`;
}

/**
 * Quotes a text literal for SQL sent without parameters (a multi-statement simple query cannot carry
 * any). The `E'…'` form with doubled backslashes reads the same whatever `standard_conforming_strings`
 * says, as node-postgres' `escapeLiteral` does.
 */
export function quoteLiteral(value: string): string {
  if (value.includes('\u0000')) throw new TypeError('a text literal must not contain NUL');
  const quoted = `'${value.replace(/'/g, "''")}'`;
  return value.includes('\\') ? `E${quoted.replace(/\\/g, '\\\\')}` : quoted;
}

/** Statements that would end, open or split the one transaction a target's SQL text runs in. */
const TX_CONTROL = new Set(['begin', 'start', 'commit', 'end', 'rollback', 'abort', 'savepoint', 'release']);

/**
 * The first transaction-control statement of multi-statement SQL text (`BEGIN`, `COMMIT`,
 * `ROLLBACK`, `SAVEPOINT`, `PREPARE TRANSACTION`, …) as `{ index, keyword }` (0-based statement
 * index), or null. A lexer, not a parser: it skips string constants (`'…'`, `E'…'`), quoted
 * identifiers, dollar-quoted bodies and comments, splits on top-level `;` and reads each
 * statement's first word(s), which is all it takes to find such a statement.
 */
export function findTransactionControl(sql: string): { index: number; keyword: string } | null {
  let index = 0;
  let words: string[] = [];
  let i = 0;
  const n = sql.length;
  const check = (): { index: number; keyword: string } | null => {
    const [first, second] = words;
    if (first !== undefined) {
      if (TX_CONTROL.has(first)) return { index, keyword: first.toUpperCase() };
      if ((first === 'prepare' || first === 'commit' || first === 'rollback') && second === 'transaction')
        return { index, keyword: `${first.toUpperCase()} TRANSACTION` };
    }
    return null;
  };
  while (i < n) {
    const c = sql[i]!;
    if (c === ';') {
      const hit = check();
      if (hit) return hit;
      if (words.length > 0) index++;
      words = [];
      i++;
    } else if (c === '-' && sql[i + 1] === '-') {
      while (i < n && sql[i] !== '\n') i++;
    } else if (c === '/' && sql[i + 1] === '*') {
      let depth = 1; // block comments nest in PostgreSQL
      i += 2;
      while (i < n && depth > 0) {
        const open = sql[i] === '/' && sql[i + 1] === '*';
        const close = sql[i] === '*' && sql[i + 1] === '/';
        if (open) depth++;
        if (close) depth--;
        i += open || close ? 2 : 1;
      }
    } else if (c === "'" || c === '"') {
      // 'it''s' and "a""b"; in E'…' a backslash escapes the next character
      const escapes = c === "'" && i > 0 && /[eE]/.test(sql[i - 1]!) && !/[\w$]/.test(sql[i - 2] ?? '');
      if (words.length < 2) words.push('');
      i++;
      while (i < n) {
        if (escapes && sql[i] === '\\') i += 2;
        else if (sql[i] === c && sql[i + 1] === c) i += 2;
        else if (sql[i] === c) {
          i++;
          break;
        } else i++;
      }
    } else if (c === '$') {
      const tag = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(sql.slice(i));
      if (tag) {
        const end = sql.indexOf(tag[0], i + tag[0].length);
        i = end < 0 ? n : end + tag[0].length;
        if (words.length < 2) words.push('');
      } else i++; // $1-style parameter or part of an identifier
    } else if (/[A-Za-z_\u0080-\uffff]/.test(c)) {
      let j = i + 1;
      while (j < n && /[A-Za-z0-9_$\u0080-\uffff]/.test(sql[j]!)) j++;
      if (words.length < 2) words.push(sql.slice(i, j).toLowerCase());
      i = j;
    } else {
      if (!/\s/.test(c) && words.length < 2) words.push(c);
      i++;
    }
  }
  return check();
}
