#!/usr/bin/env node
/**
 * `oversync-server`: the deployable sync server of @x/oversync. `oversync-server --help` lists every
 * flag and its `OVERSYNC_*` variable. Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT),
 * 2 for a bad flag or configuration (one line on stderr naming it), 1 for any other failure.
 */
import { resolveServerConfig, usage } from './config.js';
import { ServerCommandError } from './errors.js';

const PREFIX = 'oversync-server:';

function fail(e: unknown): never {
  if (e instanceof ServerCommandError) {
    process.stderr.write(`${PREFIX} ${e.code}: ${e.message}\n`);
    process.exit(e.exitCode);
  }
  const err = e as { code?: unknown; message?: unknown };
  const code = typeof err.code === 'string' ? err.code : 'OVERSYNC_SERVER_START_FAILED';
  const exit = code === 'OVERSYNC_INVALID_OPTIONS' ? 2 : 1;
  process.stderr.write(`${PREFIX} ${code}: ${String(err.message ?? e).split('\n')[0]}\n`);
  process.exit(exit);
}

async function loadServer(): Promise<typeof import('./server.js')> {
  try {
    return await import('./server.js');
  } catch (e) {
    const message = String((e as Error).message);
    if ((e as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND' && /'fastify'/.test(message)) {
      process.stderr.write(
        `${PREFIX} OVERSYNC_SERVER_DEPENDENCY_MISSING: the server needs fastify (a peer dependency of @x/oversync): npm install fastify@5\n`,
      );
      process.exit(1);
    }
    throw e;
  }
}

async function main(): Promise<void> {
  const resolved = await resolveServerConfig(process.argv.slice(2), process.env);
  if (resolved.help) {
    process.stdout.write(usage());
    return;
  }
  const config = resolved.config;
  const { startServer } = await loadServer();
  const say = (line: string) => process.stderr.write(`${PREFIX} ${line}\n`);

  // Signals that arrive while starting are honoured once the server is up (or its start failed).
  let signalled: NodeJS.Signals | undefined;
  let onSignal: (signal: NodeJS.Signals) => void = (s) => {
    signalled ??= s;
  };
  for (const s of ['SIGTERM', 'SIGINT'] as const) process.on(s, (sig) => onSignal(sig));

  const server = await startServer(config, { say });
  let shuttingDown = false;
  onSignal = (signal) => {
    if (shuttingDown) {
      say(`${signal} again: exiting without waiting for the drain`);
      process.exit(1);
    }
    shuttingDown = true;
    say(`${signal}: draining (up to ${config.shutdownTimeoutMs} ms)`);
    const timer = setTimeout(() => {
      fail(
        new ServerCommandError(
          'OVERSYNC_SERVER_SHUTDOWN_TIMEOUT',
          `shutdown did not finish within ${config.shutdownTimeoutMs} ms`,
        ),
      );
    }, config.shutdownTimeoutMs);
    server.close().then(
      () => {
        clearTimeout(timer);
        say('stopped');
        process.exit(0);
      },
      (e) => {
        clearTimeout(timer);
        fail(e);
      },
    );
  };
  if (signalled) onSignal(signalled);
}

main().catch(fail);
