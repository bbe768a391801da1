#!/usr/bin/env node
/**
 * x-demo: the whole @x system in one command.
 *
 *   demo                      the scripted tour (embedded PostgreSQL, a server, three devices)
 *   demo server | device | status | token [flags]     see `demo help <command>`
 *
 * Every command's flags are declared in `COMMANDS` and parsed by `./args.js`: a wrong command line
 * gets one `CODE: message` line on stderr and exit code 2; a failure gets its own code and exit 1.
 * Secret for JWTs: env DEMO_JWT_SECRET (development default: see DEFAULT_JWT_SECRET).
 */
import { type CommandSpec, commandHelp, overallHelp, type ParsedFlags, parseFlags } from './args.js';
import { DEFAULT_HOST, DEFAULT_PORT } from './defaults.js';
import { causeLine, DemoError, isDemoError } from './errors.js';
import {
  DEFAULT_JWT_SECRET,
  DEFAULT_TOKEN_TTL_SECONDS,
  jwtSecretFromEnv,
  REFERENCE_DEFAULT_JWT_SECRET,
  signJwt,
} from './jwt.js';
import { log } from './log.js';
import { profileByName } from './profiles.js';

const DEFAULT_SERVER_URL = `http://${DEFAULT_HOST}:${DEFAULT_PORT}`;
/** Longest `--ttl` (ten years) and `--interval` (one hour) accepted. */
const MAX_TTL_SECONDS = 10 * 365 * 24 * 3600;
const MAX_INTERVAL_MS = 3_600_000;

const serverUrlFlag = {
  name: 'server',
  type: { kind: 'http-url' },
  value: 'URL',
  default: DEFAULT_SERVER_URL,
  help: 'the demo server',
} as const;
const profileFlag = {
  name: 'profile',
  type: { kind: 'profile' },
  value: 'NAME',
  default: 'default',
  help: 'server profile (schema, routes, default secret)',
} as const;

export const COMMANDS: readonly CommandSpec[] = [
  {
    name: 'tour',
    summary: 'the scripted tour: embedded PostgreSQL, a server, three devices, offline edits, a failover',
    flags: [],
    notes: ['`demo` with no command runs it too; it exits 0 only when the final verification holds.'],
  },
  {
    name: 'server',
    summary:
      'serve oversync over PostgreSQL (embedded, a primary and a streaming replica, when no --database-url)',
    flags: [
      {
        name: 'database-url',
        type: { kind: 'postgres-url' },
        value: 'URL',
        help: 'an existing primary (else DATABASE_URL, else embedded PostgreSQL)',
      },
      {
        name: 'replica-url',
        type: { kind: 'postgres-url' },
        value: 'URL',
        multiple: true,
        help: 'a streaming replica of it, repeatable (else DATABASE_REPLICA_URLS, comma-separated)',
      },
      {
        name: 'data-dir',
        type: { kind: 'text' },
        value: 'PATH',
        help: 'keep the embedded PostgreSQL here and reuse it on the next start (a primary only)',
      },
      {
        name: 'port',
        type: { kind: 'int', min: 0, max: 65535, unit: 'port' },
        value: 'N',
        default: String(DEFAULT_PORT),
        help: 'HTTP port (0 = any free port)',
      },
      { name: 'host', type: { kind: 'text' }, value: 'HOST', default: DEFAULT_HOST, help: 'HTTP host' },
      profileFlag,
    ],
    notes: [
      'It prints its URLs and the PostgreSQL connection string (with credentials). Ctrl-C stops it;',
      'embedded PostgreSQL is removed then, unless --data-dir keeps it.',
    ],
  },
  {
    name: 'device',
    summary:
      'run a device: one SQLite file shared by a primary and two secondary processes, syncing in the background',
    flags: [
      { name: 'dir', type: { kind: 'text' }, value: 'DIR', required: true, help: 'the device directory' },
      {
        name: 'user',
        type: { kind: 'text' },
        value: 'USER',
        required: true,
        help: 'the user (the directory belongs to the first user who ran it)',
      },
      serverUrlFlag,
      {
        name: 'tenant',
        type: { kind: 'identifier' },
        value: 'SCHEMA',
        default: 'acme',
        help: 'tenant schema on the server',
      },
      {
        name: 'interval',
        type: { kind: 'int', min: 0, max: MAX_INTERVAL_MS, unit: 'milliseconds' },
        value: 'MS',
        default: '2000',
        help: 'each process adds an item this often (0 = idle)',
      },
      { name: 'name', type: { kind: 'text' }, value: 'NAME', help: 'device name (default USER-device)' },
    ],
    notes: [
      'While the server is unreachable it keeps retrying (capped exponential backoff with jitter).',
      'Secret: DEMO_JWT_SECRET (default: the development secret).',
    ],
  },
  {
    name: 'status',
    summary: "a summary of the server (sync, schemaops ledger, cluster) and of a device's processes",
    flags: [
      {
        name: 'server',
        type: { kind: 'http-url' },
        value: 'URL',
        help: `the demo server (default ${DEFAULT_SERVER_URL} when no --dir)`,
      },
      { name: 'dir', type: { kind: 'text' }, value: 'DIR', help: 'a device directory' },
      { name: 'json', type: { kind: 'boolean' }, help: 'print the raw status as JSON, for machines' },
    ],
  },
  {
    name: 'token',
    summary: "mint an HS256 JWT for DEMO_JWT_SECRET (default: the profile's development secret)",
    flags: [
      { name: 'user', type: { kind: 'text' }, value: 'USER', required: true, help: 'the `sub` claim' },
      { name: 'device', type: { kind: 'text' }, value: 'NAME', help: 'the `did` claim' },
      {
        name: 'ttl',
        type: { kind: 'int', min: 1, max: MAX_TTL_SECONDS, unit: 'seconds' },
        value: 'SECONDS',
        default: String(DEFAULT_TOKEN_TTL_SECONDS),
        help: 'lifetime',
      },
      profileFlag,
    ],
  },
  {
    name: '__worker',
    summary: 'one device process (internal: spawned by `demo device` and the tour)',
    hidden: true,
    flags: [
      { name: 'dir', type: { kind: 'text' }, value: 'DIR', required: true, help: 'device directory' },
      { name: 'user', type: { kind: 'text' }, value: 'USER', required: true, help: 'user' },
      serverUrlFlag,
      { name: 'device', type: { kind: 'text' }, value: 'NAME', default: 'device', help: 'device name' },
      { name: 'label', type: { kind: 'text' }, value: 'LABEL', default: 'p', help: 'process label' },
      { name: 'tenant', type: { kind: 'identifier' }, value: 'SCHEMA', default: 'acme', help: 'tenant' },
      { name: 'mode', type: { kind: 'text' }, value: 'MODE', default: 'tour', help: 'tour or auto' },
      {
        name: 'interval',
        type: { kind: 'int', min: 0, max: MAX_INTERVAL_MS, unit: 'milliseconds' },
        value: 'MS',
        default: '0',
        help: 'write interval',
      },
    ],
  },
];

const str = (v: ParsedFlags[string]) => (typeof v === 'string' ? v : undefined);
const num = (v: ParsedFlags[string]) => Number(v);

function spec(name: string): CommandSpec {
  const s = COMMANDS.find((c) => c.name === name);
  if (!s) {
    throw new DemoError(
      'DEMO_UNKNOWN_COMMAND',
      `unknown command ${JSON.stringify(name)}; commands: ${COMMANDS.filter((c) => !c.hidden)
        .map((c) => c.name)
        .join(', ')} (see demo help)`,
      { details: { command: name } },
    );
  }
  return s;
}

async function main(argv: string[]): Promise<number> {
  const first = argv[0];
  // `demo`, `demo --flag…`: the tour (which takes no flags but --help).
  const [name, rest] =
    first === undefined || (first.startsWith('-') && first !== '--help' && first !== '-h')
      ? ['tour', argv]
      : [first, argv.slice(1)];
  if (name === 'help' || name === '--help' || name === '-h') {
    const topic = rest[0];
    process.stdout.write(topic === undefined ? overallHelp(COMMANDS) : commandHelp(spec(topic)));
    return 0;
  }
  const s = spec(name);
  const parsed = parseFlags(s, rest);
  if (parsed.help) {
    process.stdout.write(commandHelp(s));
    return 0;
  }
  const v = parsed.values;
  switch (name) {
    case 'tour': {
      const { runTour } = await import('./tour.js');
      return runTour({});
    }
    case 'server':
      return cmdServer(v);
    case 'device':
      return cmdDevice(v);
    case 'status': {
      const { printStatus } = await import('./status.js');
      return printStatus({
        server: str(v['server']) ?? (v['dir'] ? undefined : DEFAULT_SERVER_URL),
        dir: str(v['dir']),
        json: v['json'] === true,
      });
    }
    case 'token':
      return cmdToken(v);
    default:
      return cmdWorker(v);
  }
}

async function cmdServer(v: ParsedFlags): Promise<number> {
  const profile = str(v['profile']) ?? 'default';
  const { resolveServerStart, startDemoServer } = await import('./server.js');
  const start = resolveServerStart({
    databaseUrl: str(v['database-url']),
    replicaUrls: v['replica-url'] as string[] | undefined,
    dataDir: str(v['data-dir']),
    env: process.env,
  });
  const secret = jwtSecretFromEnv(process.env, profile);
  if (secret === DEFAULT_JWT_SECRET || secret === REFERENCE_DEFAULT_JWT_SECRET)
    log('server', 'DEMO_JWT_SECRET not set: using the development secret (change it in production)');
  const server = await startDemoServer({
    ...start,
    port: num(v['port']),
    host: str(v['host']),
    profile: profileByName(profile),
    secret,
    log: (l) => log('server', l),
  });
  for (const line of server.describe()) log('server', line);
  log('server', `ready: ${server.url}  (try: demo token --user alice; demo status --server ${server.url})`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  log('server', 'shutting down…');
  await server.close();
  return 0;
}

async function cmdDevice(v: ParsedFlags): Promise<number> {
  const user = String(v['user']);
  const { runDevice } = await import('./device.js');
  return runDevice({
    dir: String(v['dir']),
    user,
    server: String(v['server']),
    tenant: String(v['tenant']),
    intervalMs: num(v['interval']),
    device: str(v['name']) ?? `${user}-device`,
    secret: jwtSecretFromEnv(),
  });
}

async function cmdToken(v: ParsedFlags): Promise<number> {
  const token = await signJwt(jwtSecretFromEnv(process.env, str(v['profile'])), {
    sub: String(v['user']),
    ...(v['device'] ? { did: String(v['device']) } : {}),
    ttlSeconds: num(v['ttl']),
  });
  process.stdout.write(`${token}\n`);
  return 0;
}

async function cmdWorker(v: ParsedFlags): Promise<number> {
  const { runDeviceWorker } = await import('./device-worker.js');
  await runDeviceWorker({
    dir: String(v['dir']),
    user: String(v['user']),
    server: String(v['server']),
    device: String(v['device']),
    label: String(v['label']),
    tenant: String(v['tenant']),
    mode: v['mode'] === 'auto' ? 'auto' : 'tour',
    intervalMs: num(v['interval']),
    secret: jwtSecretFromEnv(),
  });
  return -1; // keeps running; exits from its own shutdown path
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (e: unknown) => {
    // One line, no stack: a stable code and what failed (DEMO_DEBUG=1 adds the stack).
    if (isDemoError(e)) process.stderr.write(`${e.code}: ${e.message}\n`);
    else process.stderr.write(`DEMO_UNEXPECTED: ${causeLine(e)}\n`);
    if (process.env['DEMO_DEBUG'] === '1' && e instanceof Error) process.stderr.write(`${e.stack}\n`);
    process.exit(isDemoError(e) ? e.exitCode : 1);
  },
);
