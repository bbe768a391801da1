/**
 * The one flag parser of every `demo` command: each command declares its flags (kind, value form,
 * default, help text); parsing refuses unknown flags, flags without a value, positional arguments
 * and values of the wrong form with one `DemoError` line naming the flag and the expected form.
 * Help text is generated from the same declarations.
 */
import { DemoError } from './errors.js';
import { PROFILE_NAMES, type ProfileName } from './profiles.js';

/** How a flag's value is read and checked. */
export type FlagKind =
  | { kind: 'boolean' }
  | { kind: 'text' }
  | { kind: 'int'; min: number; max: number; unit: string }
  | { kind: 'http-url' }
  | { kind: 'postgres-url' }
  | { kind: 'profile' }
  | { kind: 'identifier' };

export interface FlagSpec {
  readonly name: string;
  readonly type: FlagKind;
  /** The placeholder in usage lines, e.g. `URL`, `SECONDS`. */
  readonly value?: string;
  readonly default?: string;
  readonly required?: boolean;
  readonly multiple?: boolean;
  readonly help: string;
}

export interface CommandSpec {
  readonly name: string;
  readonly summary: string;
  readonly flags: readonly FlagSpec[];
  /** Extra lines after the flags (environment variables, examples). */
  readonly notes?: readonly string[];
  /** Internal commands are not listed in `demo help`. */
  readonly hidden?: boolean;
}

export type FlagValue = string | number | boolean | string[] | undefined;
export type ParsedFlags = Record<string, FlagValue>;

/** Tenant (PostgreSQL schema) names the demo accepts: lower-case SQL identifiers. */
export const IDENTIFIER_RE = /^[a-z_][a-z0-9_]{0,62}$/;

/** The expected form of a flag's value, in the words of the error lines and the help. */
export function expectedForm(f: FlagSpec): string {
  const t = f.type;
  switch (t.kind) {
    case 'boolean':
      return 'no value';
    case 'text':
      return `a non-empty ${f.value?.toLowerCase() ?? 'value'}`;
    case 'int':
      return t.max === Number.MAX_SAFE_INTEGER
        ? `a whole number of ${t.unit} >= ${t.min}`
        : `a whole number of ${t.unit} from ${t.min} to ${t.max}`;
    case 'http-url':
      return 'an http:// or https:// URL such as http://127.0.0.1:8080';
    case 'postgres-url':
      return 'a postgres:// URL such as postgres://user:password@127.0.0.1:5432/db';
    case 'profile':
      return `one of ${PROFILE_NAMES.join(', ')}`;
    case 'identifier':
      return 'a lower-case SQL identifier such as acme (letters, digits, _; at most 63)';
  }
}

function bad(
  cmd: string,
  f: FlagSpec,
  raw: string,
  code: 'DEMO_BAD_FLAG_VALUE' | 'DEMO_BAD_URL' = 'DEMO_BAD_FLAG_VALUE',
) {
  return new DemoError(
    code,
    `demo ${cmd}: --${f.name} expects ${expectedForm(f)}, got ${JSON.stringify(raw)}`,
    { details: { flag: f.name, value: raw } },
  );
}

/** Checks a postgres URL's form (not its reachability); `what` names the flag or variable in the error. */
export function checkPostgresUrl(raw: string, what: string): string {
  let u: URL | null = null;
  try {
    u = new URL(raw);
  } catch {}
  if (u === null || (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') || u.hostname === '') {
    throw new DemoError(
      'DEMO_BAD_URL',
      `${what} expects a postgres:// URL such as postgres://user:password@127.0.0.1:5432/db, got ${JSON.stringify(redactUrl(raw))}`,
      { details: { what } },
    );
  }
  return raw;
}

/** The URL with its password replaced by `***` (for error lines about URLs that may carry one). */
export function redactUrl(raw: string): string {
  try {
    const u = new URL(raw);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return raw;
  }
}

function convert(cmd: string, f: FlagSpec, raw: string): string | number {
  const t = f.type;
  switch (t.kind) {
    case 'boolean':
      return raw;
    case 'text':
      if (raw.trim() === '') throw bad(cmd, f, raw);
      return raw.trim();
    case 'int': {
      if (!/^-?\d+$/.test(raw.trim())) throw bad(cmd, f, raw);
      const n = Number(raw.trim());
      if (!Number.isSafeInteger(n) || n < t.min || n > t.max) throw bad(cmd, f, raw);
      return n;
    }
    case 'http-url': {
      let u: URL | null = null;
      try {
        u = new URL(raw);
      } catch {}
      if (u === null || (u.protocol !== 'http:' && u.protocol !== 'https:') || u.hostname === '')
        throw bad(cmd, f, raw, 'DEMO_BAD_URL');
      return raw.replace(/\/+$/, '');
    }
    case 'postgres-url':
      return checkPostgresUrl(raw, `demo ${cmd}: --${f.name}`);
    case 'profile':
      if (!PROFILE_NAMES.includes(raw as ProfileName)) throw bad(cmd, f, raw);
      return raw;
    case 'identifier':
      if (!IDENTIFIER_RE.test(raw)) throw bad(cmd, f, raw);
      return raw;
  }
}

/**
 * Parses `args` for `spec`: `--name value`, `--name=value`, boolean `--name`. Returns the values
 * (defaults applied, numbers as numbers) or `{ help: true }` for `--help`/`-h`.
 */
export function parseFlags(
  spec: CommandSpec,
  args: readonly string[],
): { help: true } | { help: false; values: ParsedFlags } {
  const byName = new Map(spec.flags.map((f) => [f.name, f]));
  const values: ParsedFlags = {};
  const see = `(see demo ${spec.name} --help)`;
  if (args.includes('--help') || args.includes('-h')) return { help: true };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? '';
    if (!arg.startsWith('--') || arg === '--') {
      throw new DemoError(
        arg.startsWith('-') ? 'DEMO_UNKNOWN_FLAG' : 'DEMO_UNEXPECTED_ARGUMENT',
        arg.startsWith('-')
          ? `demo ${spec.name}: unknown flag ${arg} ${see}`
          : `demo ${spec.name}: unexpected argument ${JSON.stringify(arg)}; every value follows its --flag ${see}`,
        { details: { argument: arg } },
      );
    }
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq === -1 ? undefined : eq);
    const f = byName.get(name);
    if (!f) {
      const known = spec.flags.map((x) => `--${x.name}`).join(', ');
      throw new DemoError(
        'DEMO_UNKNOWN_FLAG',
        `demo ${spec.name}: unknown flag --${name}; ${known ? `it takes ${known}` : 'it takes no flags'} ${see}`,
        { details: { flag: name } },
      );
    }
    let raw: string;
    if (f.type.kind === 'boolean') {
      if (eq !== -1)
        throw new DemoError('DEMO_BAD_FLAG_VALUE', `demo ${spec.name}: --${name} takes no value ${see}`, {
          details: { flag: name },
        });
      values[name] = true;
      continue;
    }
    if (eq !== -1) raw = arg.slice(eq + 1);
    else {
      const next = args[i + 1];
      if (next === undefined || next.startsWith('--')) {
        throw new DemoError(
          'DEMO_MISSING_VALUE',
          `demo ${spec.name}: --${name} needs a value: ${expectedForm(f)}`,
          { details: { flag: name } },
        );
      }
      raw = next;
      i++;
    }
    const v = convert(spec.name, f, raw);
    if (f.multiple) values[name] = [...((values[name] as string[] | undefined) ?? []), String(v)];
    else if (values[name] !== undefined)
      throw new DemoError('DEMO_BAD_FLAG_VALUE', `demo ${spec.name}: --${name} given twice ${see}`, {
        details: { flag: name },
      });
    else values[name] = v;
  }
  for (const f of spec.flags) {
    if (values[f.name] !== undefined) continue;
    if (f.required)
      throw new DemoError(
        'DEMO_MISSING_FLAG',
        `demo ${spec.name} needs --${f.name} ${f.value ?? ''}: ${expectedForm(f)} ${see}`.replace(
          / {2,}/g,
          ' ',
        ),
        { details: { flag: f.name } },
      );
    if (f.default !== undefined) values[f.name] = convert(spec.name, f, f.default);
    else if (f.type.kind === 'boolean') values[f.name] = false;
  }
  return { help: false, values };
}

function flagUsage(f: FlagSpec): string {
  const v = f.type.kind === 'boolean' ? '' : ` ${f.value ?? 'VALUE'}`;
  const s = `--${f.name}${v}${f.multiple ? '...' : ''}`;
  return f.required ? s : `[${s}]`;
}

/** `demo <cmd> --help`: the usage line, each flag with its form and default, and the notes. */
export function commandHelp(spec: CommandSpec): string {
  const lines = [
    `usage: demo ${spec.name} ${spec.flags.map(flagUsage).join(' ')}`.trimEnd(),
    '',
    spec.summary,
    '',
  ];
  if (spec.flags.length > 0) {
    lines.push('flags:');
    const width = Math.max(...spec.flags.map((f) => flagUsage(f).replace(/^\[|\]$/g, '').length));
    for (const f of spec.flags) {
      const head = flagUsage(f).replace(/^\[|\]$/g, '');
      const extra = [
        f.required ? 'required' : null,
        f.default !== undefined ? `default ${f.default}` : null,
        f.type.kind === 'boolean' ? null : expectedForm(f),
      ]
        .filter(Boolean)
        .join('; ');
      lines.push(`  ${head.padEnd(width)}  ${f.help} (${extra})`);
    }
    lines.push('  --help, -h'.padEnd(width + 4) + 'this help');
  } else {
    lines.push('flags: none (--help, -h: this help)');
  }
  if (spec.notes?.length) lines.push('', ...spec.notes);
  return `${lines.join('\n')}\n`;
}

/** `demo help`: one line per command. */
export function overallHelp(specs: readonly CommandSpec[]): string {
  const shown = specs.filter((s) => !s.hidden);
  const width = Math.max(...shown.map((s) => s.name.length));
  return [
    'usage: demo [command] [flags]     (no command: the tour)',
    '',
    'commands:',
    ...shown.map((s) => `  ${s.name.padEnd(width)}  ${s.summary}`),
    `  ${'help'.padEnd(width)}  this list; demo help <command> or demo <command> --help for its flags`,
    '',
  ].join('\n');
}
