/** Quotes an SQL identifier (schema / table name) for interpolation into DDL. */
export function quoteIdent(name: string): string {
  if (name.length === 0) throw new TypeError('an identifier must not be empty');
  if (name.includes('\u0000')) throw new TypeError('an identifier must not contain NUL');
  return `"${name.replace(/"/g, '""')}"`;
}
