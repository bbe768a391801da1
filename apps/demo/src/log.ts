/** The demo's readable log: `hh:mm:ss.mmm who      message`. */
export function log(who: string, line: string): void {
  const ts = new Date().toISOString().slice(11, 23);
  process.stdout.write(`${ts} ${who.padEnd(12)} ${line}\n`);
}
