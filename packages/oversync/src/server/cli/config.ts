/**
 * The configuration of `oversync-server`: flags > environment (`OVERSYNC_*`) > config file (JSON,
 * `--config path` or `OVERSYNC_CONFIG`) > defaults, each layer validated with zod (unknown keys,
 * flags and `OVERSYNC_*` variables refused, naming them).
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { DEFAULT_BODY_LIMIT_BYTES, DEFAULT_SNAPSHOT_PIPELINE_MIN_ROWS } from '../options.js';
import { ServerCommandError } from './errors.js';

export const DEFAULT_SERVER_HOST = '127.0.0.1';
export const DEFAULT_SERVER_PORT = 8080;
export const DEFAULT_LOG_LEVEL = 'info';
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 30_000;
/** RFC 7518 §3.2: an HS256 key is at least as long as the hash (256 bits). */
export const MIN_JWT_SECRET_LENGTH = 32;
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export const ENV_PREFIX = 'OVERSYNC_';

const nonEmpty = z.string().trim().min(1, 'must not be empty');
const postgresUrl = nonEmpty.refine(
  (s) => /^postgres(ql)?:\/\//.test(s),
  'must be a postgres:// or postgresql:// URL',
);
const tableSchema = z.strictObject({
  schema: nonEmpty.default('public'),
  table: nonEmpty,
  /** The one sync key column (default `["id"]`). */
  syncKeyColumns: z.array(nonEmpty).min(1).default(['id']),
  /** Ordinary SQL writes to the table sync (the service's `backendWrites`; config file only). */
  backendWrites: z.boolean().default(false),
});
const jwtSchema = z.strictObject({
  /** HS256 shared secret. */
  secret: z
    .string()
    .min(MIN_JWT_SECRET_LENGTH, `must be at least ${MIN_JWT_SECRET_LENGTH} characters (256 bits)`)
    .optional(),
  /** URL of a JSON Web Key Set (RS256, ES256, EdDSA… keys picked by `kid`). */
  jwksUrl: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }).optional(),
  issuer: nonEmpty.optional(),
  audience: z.array(nonEmpty).min(1).optional(),
  /** Allowed clock skew for `exp`/`nbf`/`iat`, in seconds. */
  clockToleranceSec: z.number().int().nonnegative().optional(),
});

/** Every setting, as a config file holds it. */
export const configFileSchema = z.strictObject({
  databaseUrl: postgresUrl.optional(),
  replicaUrls: z.array(postgresUrl).optional(),
  tables: z.array(tableSchema).min(1, 'must list at least one table').optional(),
  jwt: jwtSchema.optional(),
  host: nonEmpty.optional(),
  port: z.number().int().min(0).max(65535).optional(),
  bodyLimit: z.number().int().positive().optional(),
  logLevel: z.enum(LOG_LEVELS).optional(),
  dataDir: nonEmpty.optional(),
  appName: z.string().optional(),
  maxSupportedSchemaVersion: z.number().int().nonnegative().optional(),
  watch: z.boolean().optional(),
  shutdownTimeoutMs: z.number().int().positive().optional(),
  snapshotPipelineMinRows: z.number().int().nonnegative().optional(),
});
type ConfigLayer = z.output<typeof configFileSchema>;

export type RegisteredTableConfig = z.output<typeof tableSchema>;

/** The resolved configuration the server runs with. */
export interface ServerConfig {
  databaseUrl: string | undefined;
  replicaUrls: string[];
  tables: RegisteredTableConfig[];
  jwt: {
    secret: string | undefined;
    jwksUrl: string | undefined;
    issuer: string | undefined;
    audience: string[] | undefined;
    clockToleranceSec: number;
  };
  host: string;
  port: number;
  bodyLimit: number;
  logLevel: (typeof LOG_LEVELS)[number];
  dataDir: string | undefined;
  appName: string;
  maxSupportedSchemaVersion: number;
  watch: boolean;
  shutdownTimeoutMs: number;
  /** The service's `limits.snapshotPipelineMinRows`. */
  snapshotPipelineMinRows: number;
}

type Kind = 'string' | 'int' | 'list' | 'tables' | 'bool';
interface Field {
  /** Path in the config file (`jwt.secret`). */
  key: string;
  flag: string;
  env: string;
  kind: Kind;
  help: string;
}

/** Flags and variables, one per setting. A list flag may repeat; its variable is comma-separated. */
export const FIELDS: readonly Field[] = [
  {
    key: 'databaseUrl',
    flag: 'database-url',
    env: 'DATABASE_URL',
    kind: 'string',
    help: 'primary PostgreSQL URL (none: embedded PostgreSQL)',
  },
  {
    key: 'replicaUrls',
    flag: 'replica-url',
    env: 'REPLICA_URLS',
    kind: 'list',
    help: 'read replica URL (repeat the flag; comma-separated in the variable)',
  },
  {
    key: 'tables',
    flag: 'table',
    env: 'TABLES',
    kind: 'tables',
    help: 'registered table schema.table[:sync_key] (repeat; comma-separated)',
  },
  {
    key: 'jwt.secret',
    flag: 'jwt-secret',
    env: 'JWT_SECRET',
    kind: 'string',
    help: `HS256 secret (at least ${MIN_JWT_SECRET_LENGTH} characters)`,
  },
  {
    key: 'jwt.jwksUrl',
    flag: 'jwt-jwks-url',
    env: 'JWT_JWKS_URL',
    kind: 'string',
    help: 'JWKS URL of the identity provider (instead of a secret)',
  },
  { key: 'jwt.issuer', flag: 'jwt-issuer', env: 'JWT_ISSUER', kind: 'string', help: 'required `iss` claim' },
  {
    key: 'jwt.audience',
    flag: 'jwt-audience',
    env: 'JWT_AUDIENCE',
    kind: 'list',
    help: 'accepted `aud` claim (repeat; comma-separated)',
  },
  {
    key: 'jwt.clockToleranceSec',
    flag: 'jwt-clock-tolerance-sec',
    env: 'JWT_CLOCK_TOLERANCE_SEC',
    kind: 'int',
    help: 'clock skew allowed for exp/nbf (default 0)',
  },
  {
    key: 'host',
    flag: 'host',
    env: 'HOST',
    kind: 'string',
    help: `listen address (default ${DEFAULT_SERVER_HOST})`,
  },
  {
    key: 'port',
    flag: 'port',
    env: 'PORT',
    kind: 'int',
    help: `listen port, 0 = any free port (default ${DEFAULT_SERVER_PORT})`,
  },
  {
    key: 'bodyLimit',
    flag: 'body-limit',
    env: 'BODY_LIMIT',
    kind: 'int',
    help: `largest request body in bytes (default ${DEFAULT_BODY_LIMIT_BYTES})`,
  },
  {
    key: 'logLevel',
    flag: 'log-level',
    env: 'LOG_LEVEL',
    kind: 'string',
    help: `${LOG_LEVELS.join('|')} (default ${DEFAULT_LOG_LEVEL})`,
  },
  {
    key: 'dataDir',
    flag: 'data-dir',
    env: 'DATA_DIR',
    kind: 'string',
    help: 'embedded PostgreSQL: keep the data here (default: a temp dir removed at exit)',
  },
  { key: 'appName', flag: 'app-name', env: 'APP_NAME', kind: 'string', help: 'app_name of the capabilities' },
  {
    key: 'maxSupportedSchemaVersion',
    flag: 'max-schema-version',
    env: 'MAX_SCHEMA_VERSION',
    kind: 'int',
    help: 'highest client schema version accepted (default 1)',
  },
  {
    key: 'watch',
    flag: 'watch',
    env: 'WATCH',
    kind: 'bool',
    help: 'serve GET /sync/watch (default true; --watch=false or OVERSYNC_WATCH=false)',
  },
  {
    key: 'shutdownTimeoutMs',
    flag: 'shutdown-timeout-ms',
    env: 'SHUTDOWN_TIMEOUT_MS',
    kind: 'int',
    help: `how long SIGTERM may drain (default ${DEFAULT_SHUTDOWN_TIMEOUT_MS})`,
  },
  {
    key: 'snapshotPipelineMinRows',
    flag: 'snapshot-pipeline-min-rows',
    env: 'SNAPSHOT_PIPELINE_MIN_ROWS',
    kind: 'int',
    help: `snapshots of at least this many rows are built while the client pages (default ${DEFAULT_SNAPSHOT_PIPELINE_MIN_ROWS}: off)`,
  },
];
const CONFIG_ENV = `${ENV_PREFIX}CONFIG`;

export function usage(): string {
  const rows = [
    ['--config <file>', `${CONFIG_ENV}`, 'JSON config file (keys: the camelCase names below)'],
    ...FIELDS.map((f) => [
      `--${f.flag}${f.kind === 'bool' ? '[=false]' : ' <value>'}`,
      ENV_PREFIX + f.env,
      `${f.key}: ${f.help}`,
    ]),
    ['--help', '', 'print this help'],
  ];
  const w0 = Math.max(...rows.map((r) => r[0]!.length));
  const w1 = Math.max(...rows.map((r) => r[1]!.length));
  return [
    'Usage: oversync-server [flags]',
    'A go-oversync protocol v1 sync server. Precedence: flags > environment > config file > defaults.',
    '',
    ...rows.map(([a, b, c]) => `  ${a!.padEnd(w0)}  ${b!.padEnd(w1)}  ${c}`),
    '',
  ].join('\n');
}

function issueText(error: z.ZodError): { path: string; message: string } {
  const issue = error.issues[0]!;
  if (issue.code === 'unrecognized_keys') {
    const prefix = issue.path.length > 0 ? `${issue.path.join('.')}.` : '';
    return { path: `${prefix}${issue.keys[0]}`, message: 'unknown key' };
  }
  return { path: issue.path.join('.'), message: issue.message };
}

/** `schema.table[:key]` (or `table`, in `public`). */
function parseTableSpec(spec: string): unknown {
  const [name = '', key] = spec.trim().split(':');
  const dot = name.indexOf('.');
  const base = dot < 0 ? { table: name } : { schema: name.slice(0, dot), table: name.slice(dot + 1) };
  return key === undefined ? base : { ...base, syncKeyColumns: [key] };
}

function convert(kind: Kind, values: string[]): unknown {
  const last = values[values.length - 1] ?? '';
  const split = values
    .flatMap((v) => v.split(','))
    .map((v) => v.trim())
    .filter((v) => v !== '');
  switch (kind) {
    case 'string':
      return last;
    case 'int':
      return Number(last);
    case 'bool':
      return last !== 'false';
    case 'list':
      return split;
    case 'tables':
      return split.map(parseTableSpec);
  }
}

/** The zod schema of one setting (`jwt.secret` ⇒ the schema of `secret` in `jwt`). */
function fieldSchema(key: string): z.ZodType {
  const [a, b] = key.split('.') as [string, string | undefined];
  const outer = configFileSchema.shape[a as keyof ConfigLayer] as z.ZodType;
  if (b === undefined) return outer;
  return jwtSchema.shape[b as keyof z.output<typeof jwtSchema>] as z.ZodType;
}

function setPath(target: Record<string, unknown>, key: string, value: unknown): void {
  const [a, b] = key.split('.') as [string, string | undefined];
  if (b === undefined) target[a] = value;
  else target[a] = { ...(target[a] as Record<string, unknown> | undefined), [b]: value };
}

function layerFrom(
  raw: Map<Field, string[]>,
  fail: (f: Field, message: string) => ServerCommandError,
): ConfigLayer {
  const layer: Record<string, unknown> = {};
  for (const [f, values] of raw) {
    const last = values[values.length - 1] ?? '';
    if (f.kind === 'int' && !/^\s*-?\d+\s*$/.test(last))
      throw fail(f, `expected an integer, got ${JSON.stringify(last)}`);
    if (f.kind === 'bool' && !['', 'true', 'false'].includes(last))
      throw fail(f, `expected true or false, got ${JSON.stringify(last)}`);
    const parsed = fieldSchema(f.key).safeParse(convert(f.kind, values));
    if (!parsed.success) {
      const { path, message } = issueText(parsed.error);
      throw fail(f, path ? `${path}: ${message}` : message);
    }
    setPath(layer, f.key, parsed.data);
  }
  return layer as ConfigLayer;
}

export interface ParsedCommandLine {
  help: boolean;
  configPath: string | undefined;
  flags: ConfigLayer;
}

/** argv (without node and the script) ⇒ the flag layer. OVERSYNC_SERVER_BAD_FLAG naming the flag. */
export function parseCommandLine(argv: readonly string[]): ParsedCommandLine {
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = {
    config: { type: 'string' },
    help: { type: 'boolean' },
  };
  for (const f of FIELDS) options[f.flag] = { type: 'string', multiple: true };
  // `--watch` alone means true: a bare boolean-ish flag is given the value ''.
  const args = argv.map((a) => (a === '--watch' ? '--watch=' : a));
  let values: Record<string, unknown>;
  try {
    ({ values } = parseArgs({ args, options, strict: true, allowPositionals: false }));
  } catch (cause) {
    const msg = (cause as Error).message.split('\n')[0]!.replace(/\. To specify a positional.*$/, '');
    throw new ServerCommandError('OVERSYNC_SERVER_BAD_FLAG', `${msg} (see --help)`, { cause });
  }
  const raw = new Map<Field, string[]>();
  for (const f of FIELDS) {
    const v = values[f.flag] as string[] | undefined;
    if (v !== undefined) raw.set(f, v);
  }
  const flags = layerFrom(
    raw,
    (f, message) => new ServerCommandError('OVERSYNC_SERVER_BAD_FLAG', `--${f.flag}: ${message}`),
  );
  return {
    help: values['help'] === true,
    configPath: values['config'] as string | undefined,
    flags,
  };
}

/** The `OVERSYNC_*` variables ⇒ the environment layer; an unknown `OVERSYNC_*` name is refused. */
export function environmentLayer(env: NodeJS.ProcessEnv): ConfigLayer {
  const byName = new Map(FIELDS.map((f) => [ENV_PREFIX + f.env, f]));
  const raw = new Map<Field, string[]>();
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith(ENV_PREFIX) || value === undefined) continue;
    if (name === CONFIG_ENV) continue;
    const f = byName.get(name);
    if (!f) {
      throw new ServerCommandError(
        'OVERSYNC_SERVER_INVALID_CONFIG',
        `environment variable ${name}: unknown (see --help for the OVERSYNC_* names)`,
      );
    }
    if (value === '') continue;
    raw.set(f, [value]);
  }
  return layerFrom(
    raw,
    (f, message) =>
      new ServerCommandError(
        'OVERSYNC_SERVER_INVALID_CONFIG',
        `environment variable ${ENV_PREFIX}${f.env}: ${message}`,
      ),
  );
}

/** The config file layer (JSON object, strict). */
export async function fileLayer(path: string): Promise<ConfigLayer> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    throw new ServerCommandError(
      'OVERSYNC_SERVER_CONFIG_UNREADABLE',
      `config file ${path}: cannot be read (${(cause as NodeJS.ErrnoException).code ?? String(cause)})`,
      { cause },
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw new ServerCommandError(
      'OVERSYNC_SERVER_CONFIG_UNREADABLE',
      `config file ${path}: not JSON (${(cause as Error).message})`,
      { cause },
    );
  }
  const parsed = configFileSchema.safeParse(json);
  if (!parsed.success) {
    const { path: key, message } = issueText(parsed.error);
    throw new ServerCommandError(
      'OVERSYNC_SERVER_INVALID_CONFIG',
      `config file ${path}: ${key ? `${key}: ` : ''}${message}`,
      { details: { issues: parsed.error.issues } },
    );
  }
  return parsed.data;
}

function merge(...layers: ConfigLayer[]): ConfigLayer {
  const out: ConfigLayer = {};
  for (const layer of layers) {
    for (const [k, v] of Object.entries(layer)) {
      if (v === undefined) continue;
      if (k === 'jwt') out.jwt = { ...out.jwt, ...(v as ConfigLayer['jwt']) };
      else (out as Record<string, unknown>)[k] = v;
    }
  }
  return out;
}

function missing(key: string): ServerCommandError {
  const f = FIELDS.find((x) => x.key === key);
  const where = f ? `--${f.flag}, ${ENV_PREFIX}${f.env} or "${key}" in the config file` : `"${key}"`;
  return new ServerCommandError('OVERSYNC_SERVER_INVALID_CONFIG', `${key}: missing (give ${where})`);
}

/** Resolves argv + environment (+ the config file they name) into the server configuration. */
export async function resolveServerConfig(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<{ help: true } | { help: false; config: ServerConfig }> {
  const cli = parseCommandLine(argv);
  if (cli.help) return { help: true };
  const envLayer = environmentLayer(env);
  const configPath = cli.configPath ?? (env[CONFIG_ENV] || undefined);
  const file = configPath === undefined ? {} : await fileLayer(configPath);
  const c = merge(file, envLayer, cli.flags);
  if (!c.tables) throw missing('tables');
  const jwt = c.jwt ?? {};
  if (jwt.secret === undefined && jwt.jwksUrl === undefined) {
    throw new ServerCommandError(
      'OVERSYNC_SERVER_INVALID_CONFIG',
      `jwt: missing (give jwt.secret: --jwt-secret, ${ENV_PREFIX}JWT_SECRET or "jwt": {"secret"} in the config file; or jwt.jwksUrl: --jwt-jwks-url, ${ENV_PREFIX}JWT_JWKS_URL or "jwt": {"jwksUrl"})`,
    );
  }
  if (jwt.secret !== undefined && jwt.jwksUrl !== undefined) {
    throw new ServerCommandError(
      'OVERSYNC_SERVER_INVALID_CONFIG',
      'jwt: give either jwt.secret (HS256) or jwt.jwksUrl, not both',
    );
  }
  if (c.replicaUrls !== undefined && c.replicaUrls.length > 0 && c.databaseUrl === undefined) {
    throw new ServerCommandError(
      'OVERSYNC_SERVER_INVALID_CONFIG',
      'replicaUrls: given without databaseUrl (replicas need their primary; without a URL the server starts an embedded PostgreSQL)',
    );
  }
  return {
    help: false,
    config: {
      databaseUrl: c.databaseUrl,
      replicaUrls: c.replicaUrls ?? [],
      tables: c.tables,
      jwt: {
        secret: jwt.secret,
        jwksUrl: jwt.jwksUrl,
        issuer: jwt.issuer,
        audience: jwt.audience,
        clockToleranceSec: jwt.clockToleranceSec ?? 0,
      },
      host: c.host ?? DEFAULT_SERVER_HOST,
      port: c.port ?? DEFAULT_SERVER_PORT,
      bodyLimit: c.bodyLimit ?? DEFAULT_BODY_LIMIT_BYTES,
      logLevel: c.logLevel ?? DEFAULT_LOG_LEVEL,
      dataDir: c.dataDir,
      appName: c.appName ?? '',
      maxSupportedSchemaVersion: c.maxSupportedSchemaVersion ?? 1,
      watch: c.watch ?? true,
      shutdownTimeoutMs: c.shutdownTimeoutMs ?? DEFAULT_SHUTDOWN_TIMEOUT_MS,
      snapshotPipelineMinRows: c.snapshotPipelineMinRows ?? DEFAULT_SNAPSHOT_PIPELINE_MIN_ROWS,
    },
  };
}
