/**
 * The device's hydrate progress bar (issue #21), fed by the sync client's `progress` events of a
 * snapshot (`hydrate` or `recover`: stages `download` and `apply`, each with done/total rows; a
 * stage-free hydrate alternates them page by page, a staged one downloads first).
 * On a terminal it is one line redrawn in place; elsewhere (a pipe, a log file) each update is a
 * plain line of its own.
 */

/** One hydrate progress report, as the device worker sends it. */
export interface HydrateProgress {
  phase: string;
  stage: string;
  done: number;
  total: number;
}

const WIDTH = 24;

/** `hydrate download [#######.................] 30% 3,000/10,000 rows` */
export function formatHydrateProgress(p: HydrateProgress): string {
  const ratio = p.total > 0 ? Math.min(1, Math.max(0, p.done / p.total)) : 1;
  const filled = Math.round(ratio * WIDTH);
  const bar = `${'#'.repeat(filled)}${'.'.repeat(WIDTH - filled)}`;
  const pct = `${Math.floor(ratio * 100)}%`.padStart(4);
  const n = (x: number) => x.toLocaleString('en-US');
  return `${p.phase} ${p.stage.padEnd(8)} [${bar}] ${pct} ${n(p.done)}/${n(p.total)} rows`;
}

/** Draws the bar on `stream`: in place on a TTY, one line per update otherwise. */
export class HydrateBar {
  readonly #write: (s: string) => void;
  readonly #tty: boolean;
  #open = false;

  constructor(stream: { write(s: string): unknown; isTTY?: boolean }) {
    this.#write = (s) => void stream.write(s);
    this.#tty = stream.isTTY === true;
  }

  /** Shows `p` (prefixed like the demo's log lines by `prefix`). */
  update(prefix: string, p: HydrateProgress): void {
    const line = `${prefix}${formatHydrateProgress(p)}`;
    if (!this.#tty) {
      this.#write(`${line}\n`);
      return;
    }
    // carriage return, the line, then clear what a longer previous line left
    this.#write(`\r${line}\x1b[K`);
    this.#open = true;
  }

  /** Ends the in-place line (before any other output, and when the hydrate ends). */
  end(): void {
    if (!this.#open) return;
    this.#open = false;
    this.#write('\n');
  }
}
