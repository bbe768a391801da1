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
