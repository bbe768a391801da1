/**
 * The CLI as a newcomer meets it, one child process per command line: help for every command,
 * and every wrong command line refused with one `CODE: message` line naming the flag and the
 * expected form, exit code 2, no stack trace.
 */
import { execFile } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { CLI_PATH } from '../../src/workers.js';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function demo(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', CLI_PATH, ...args],
      { env: { ...process.env, DATABASE_URL: '', DATABASE_REPLICA_URLS: '', ...env }, timeout: 60_000 },
      (err, stdout, stderr) => {
        const code = err ? Number((err as { code?: unknown }).code ?? 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** Exactly one line on stderr, starting with the code, with no stack frames. */
function expectOneLine(r: Run, code: string, ...parts: RegExp[]): void {
  const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(new RegExp(`^${code}: `));
  for (const p of parts) expect(lines[0]).toMatch(p);
  expect(r.stderr).not.toMatch(/\n\s+at |TypeError|ERR_PARSE_ARGS/);
}

// [args, code, what the line must name]
const USAGE_CASES: Array<[string[], string, RegExp[]]> = [
  [
    ['token', '--user', 'a', '--ttl', 'abc'],
    'DEMO_BAD_FLAG_VALUE',
    [/--ttl/, /whole number of seconds/, /"abc"/],
  ],
  [['token', '--user', 'a', '--ttl', '-5'], 'DEMO_BAD_FLAG_VALUE', [/--ttl/, /"-5"/]],
  [['token', '--user', 'a', '--ttl', '0'], 'DEMO_BAD_FLAG_VALUE', [/--ttl/]],
  [['token', '--user'], 'DEMO_MISSING_VALUE', [/--user needs a value/]],
  [['token'], 'DEMO_MISSING_FLAG', [/needs --user/]],
  [
    ['token', '--user', 'a', '--profile', 'bogus'],
    'DEMO_BAD_FLAG_VALUE',
    [/--profile/, /default, reference/],
  ],
  [['server', '--profile', 'bogus'], 'DEMO_BAD_FLAG_VALUE', [/--profile/, /default, reference/]],
  [['token', '--user', 'a', '--bogus'], 'DEMO_UNKNOWN_FLAG', [/--bogus/]],
  [['token', 'alice'], 'DEMO_UNEXPECTED_ARGUMENT', [/"alice"/]],
  [['tour', '--foo'], 'DEMO_UNKNOWN_FLAG', [/demo tour/, /--foo/]],
  [['--foo'], 'DEMO_UNKNOWN_FLAG', [/demo tour/, /--foo/]],
  [['bogus'], 'DEMO_UNKNOWN_COMMAND', [/"bogus"/]],
  [['help', 'bogus'], 'DEMO_UNKNOWN_COMMAND', [/"bogus"/]],
  [['server', '--port', '70000'], 'DEMO_BAD_FLAG_VALUE', [/--port/, /0 to 65535/]],
  [['server', '--port'], 'DEMO_MISSING_VALUE', [/--port/]],
  [['server', '--database-url', 'notaurl'], 'DEMO_BAD_URL', [/--database-url/, /postgres:\/\//]],
  [['server', '--replica-url', 'postgres://u@127.0.0.1/db'], 'DEMO_CONFLICTING_FLAGS', [/--database-url/]],
  [
    ['server', '--data-dir', '/tmp/x', '--database-url', 'postgres://u@127.0.0.1/db'],
    'DEMO_CONFLICTING_FLAGS',
    [/--data-dir/],
  ],
  [['device', '--user', 'u'], 'DEMO_MISSING_FLAG', [/--dir/]],
  [
    ['device', '--dir', '/tmp/d', '--user', 'u', '--server', 'not-a-url'],
    'DEMO_BAD_URL',
    [/--server/, /http/],
  ],
  [['device', '--dir', '/tmp/d', '--user', 'u', '--tenant', 'Bogus-1'], 'DEMO_BAD_FLAG_VALUE', [/--tenant/]],
  [['device', '--dir', '/tmp/d', '--user', 'u', '--interval', '-1'], 'DEMO_BAD_FLAG_VALUE', [/--interval/]],
  [['device', '--dir', '/tmp/d', '--user', 'u', '--interval', 'NaN'], 'DEMO_BAD_FLAG_VALUE', [/--interval/]],
  [['status', '--server', 'nope'], 'DEMO_BAD_URL', [/--server/]],
  [['status', '--json=1'], 'DEMO_BAD_FLAG_VALUE', [/--json takes no value/]],
];

describe('demo CLI usage', () => {
  it.concurrent.each(USAGE_CASES)(
    'demo %j is refused with one line and exit code 2',
    async (args, code, parts) => {
      const r = await demo(args);
      expect(r.code, r.stderr).toBe(2);
      expectOneLine(r, code, ...parts);
    },
  );

  it('DATABASE_URL is checked like --database-url', async () => {
    const r = await demo(['server', '--port', '0'], { DATABASE_URL: 'notaurl' });
    expect(r.code).toBe(2);
    expectOneLine(r, 'DEMO_BAD_URL', /DATABASE_URL/);
  });

  it.each(['tour', 'server', 'device', 'status', 'token'])(
    'demo %s --help and demo help <command> print its flags',
    async (cmd) => {
      const [a, b] = await Promise.all([demo([cmd, '--help']), demo(['help', cmd])]);
      for (const r of [a, b]) {
        expect(r.code, r.stderr).toBe(0);
        expect(r.stdout).toContain(`usage: demo ${cmd}`);
        expect(r.stderr).toBe('');
      }
      expect(a.stdout).toBe(b.stdout);
    },
  );

  it('demo help lists every command', async () => {
    const r = await demo(['help']);
    expect(r.code).toBe(0);
    for (const c of ['tour', 'server', 'device', 'status', 'token'])
      expect(r.stdout).toMatch(new RegExp(`\\n  ${c} `));
    expect(r.stdout).not.toContain('__worker');
  });

  it('demo token --ttl sets exp (a valid number is taken as is)', async () => {
    const r = await demo(['token', '--user', 'ann', '--ttl', '60']);
    expect(r.code).toBe(0);
    const claims = JSON.parse(Buffer.from(r.stdout.trim().split('.')[1] ?? '', 'base64url').toString()) as {
      exp: number;
      iat: number;
    };
    expect(claims.exp - claims.iat).toBe(60);
  });
});
