#!/usr/bin/env node
/**
 * x-demo: the whole @x system in one command.
 *
 *   demo                      the scripted tour (embedded PostgreSQL, a server, three devices)
 *   demo server [--database-url URL --replica-url URL... --port N --host H --profile default|reference]
 *   demo device --dir DIR --user USER [--server URL --tenant T --interval MS]
 *   demo status [--server URL] [--dir DEVICE_DIR]
 *   demo token --user USER [--device NAME --ttl SECONDS]
 *
 * Secret for JWTs: env DEMO_JWT_SECRET (development default: see DEFAULT_JWT_SECRET).
 */
import { parseArgs } from 'node:util';
import { isDemoError } from './errors.js';
import {
  DEFAULT_JWT_SECRET,
  DEFAULT_TOKEN_TTL_SECONDS,
  jwtSecretFromEnv,
  REFERENCE_DEFAULT_JWT_SECRET,
  signJwt,
} from './jwt.js';
import { log } from './log.js';
import { PROFILE_NAMES, profileByName } from './profiles.js';
import { DEFAULT_HOST, DEFAULT_PORT } from './server.js';

export const USAGE = `usage:
  demo                         run the scripted tour (no configuration needed)
  demo server [--database-url URL] [--replica-url URL]... [--port ${DEFAULT_PORT}] [--host ${DEFAULT_HOST}]
              [--profile default|reference]
                               serve oversync over PostgreSQL (embedded when no --database-url)
  demo device --dir DIR --user USER [--server URL] [--tenant acme] [--interval 2000]
                               run a device: one SQLite file, a primary and two secondary processes
  demo status [--server URL] [--dir DEVICE_DIR]
                               server status, schemaops ledger, cluster and coordinator metrics
  demo token --user USER [--device NAME] [--ttl SECONDS] [--profile default|reference]
                               mint an HS256 JWT for DEMO_JWT_SECRET (default: the profile's dev secret)
`;

const DEFAULT_SERVER_URL = `http://${DEFAULT_HOST}:${DEFAULT_PORT}`;

async function main(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case undefined:
    case 'tour': {
      const { runTour } = await import('./tour.js');
      return runTour({});
    }
    case 'server':
      return cmdServer(rest);
    case 'device':
      return cmdDevice(rest);
    case 'status':
      return cmdStatus(rest);
    case 'token':
      return cmdToken(rest);
    case '__worker':
      return cmdWorker(rest);
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return 0;
    default:
      process.stderr.write(`unknown command ${JSON.stringify(sub)}\n${USAGE}`);
      return 2;
  }
}

async function cmdServer(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      'database-url': { type: 'string' },
      'replica-url': { type: 'string', multiple: true },
      port: { type: 'string', default: String(DEFAULT_PORT) },
      host: { type: 'string', default: DEFAULT_HOST },
      profile: { type: 'string', default: 'default' },
    },
  });
  if (!PROFILE_NAMES.includes(values.profile as never)) {
    process.stderr.write(`--profile must be one of ${PROFILE_NAMES.join(', ')}\n`);
    return 2;
  }
  const secret = jwtSecretFromEnv(process.env, values.profile);
  if (secret === DEFAULT_JWT_SECRET || secret === REFERENCE_DEFAULT_JWT_SECRET)
    log('server', 'DEMO_JWT_SECRET not set: using the development secret (change it in production)');
  const { startDemoServer } = await import('./server.js');
  const server = await startDemoServer({
    databaseUrl: values['database-url'] ?? process.env['DATABASE_URL'],
    replicaUrls: values['replica-url'] ?? splitUrls(process.env['DATABASE_REPLICA_URLS']),
    port: Number(values.port),
    host: values.host,
    profile: profileByName(values.profile),
    secret,
    log: (l) => log('server', l),
  });
  log('server', `ready: ${server.url}  (try: demo token --user alice; demo status --server ${server.url})`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  log('server', 'shutting down…');
  await server.close();
  return 0;
}

async function cmdDevice(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      dir: { type: 'string' },
      user: { type: 'string' },
      server: { type: 'string', default: DEFAULT_SERVER_URL },
      tenant: { type: 'string', default: 'acme' },
      interval: { type: 'string', default: '2000' },
      name: { type: 'string' },
    },
  });
  if (!values.dir || !values.user) {
    process.stderr.write(`demo device needs --dir and --user\n${USAGE}`);
    return 2;
  }
  const { runDevice } = await import('./device.js');
  return runDevice({
    dir: values.dir,
    user: values.user,
    server: values.server,
    tenant: values.tenant,
    intervalMs: Number(values.interval),
    device: values.name ?? `${values.user}-device`,
    secret: jwtSecretFromEnv(),
  });
}

async function cmdStatus(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { server: { type: 'string' }, dir: { type: 'string' } },
  });
  const { printStatus } = await import('./status.js');
  return printStatus({
    server: values.server ?? (values.dir ? undefined : DEFAULT_SERVER_URL),
    dir: values.dir,
  });
}

async function cmdToken(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      user: { type: 'string' },
      device: { type: 'string' },
      ttl: { type: 'string', default: String(DEFAULT_TOKEN_TTL_SECONDS) },
      profile: { type: 'string', default: 'default' },
    },
  });
  if (!values.user || values.user.trim() === '') {
    process.stderr.write(`demo token needs --user\n${USAGE}`);
    return 2;
  }
  const token = await signJwt(jwtSecretFromEnv(process.env, values.profile), {
    sub: values.user.trim(),
    ...(values.device ? { did: values.device } : {}),
    ttlSeconds: Number(values.ttl),
  });
  process.stdout.write(`${token}\n`);
  return 0;
}

async function cmdWorker(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      dir: { type: 'string' },
      user: { type: 'string' },
      server: { type: 'string' },
      device: { type: 'string' },
      label: { type: 'string' },
      tenant: { type: 'string' },
      mode: { type: 'string', default: 'tour' },
      interval: { type: 'string', default: '0' },
    },
  });
  const { runDeviceWorker } = await import('./device-worker.js');
  await runDeviceWorker({
    dir: values.dir ?? '',
    user: values.user ?? '',
    server: values.server ?? DEFAULT_SERVER_URL,
    device: values.device ?? 'device',
    label: values.label ?? 'p',
    tenant: values.tenant ?? 'acme',
    mode: values.mode === 'auto' ? 'auto' : 'tour',
    intervalMs: Number(values.interval),
    secret: jwtSecretFromEnv(),
  });
  return -1; // keeps running; exits from its own shutdown path
}

function splitUrls(s: string | undefined): string[] | undefined {
  if (!s) return undefined;
  return s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (e: unknown) => {
    if (isDemoError(e)) process.stderr.write(`${e.code}: ${e.message}\n`);
    else process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);
