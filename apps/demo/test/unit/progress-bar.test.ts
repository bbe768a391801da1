import { describe, expect, it } from 'vitest';
import { formatHydrateProgress, HydrateBar } from '../../src/progress-bar.js';

function sink(isTTY: boolean) {
  const chunks: string[] = [];
  return { chunks, stream: { isTTY, write: (s: string) => chunks.push(s) } };
}

describe('hydrate progress bar', () => {
  it('formats stage, bar, percent and rows', () => {
    expect(formatHydrateProgress({ phase: 'hydrate', stage: 'download', done: 3000, total: 10000 })).toBe(
      'hydrate download [#######.................]  30% 3,000/10,000 rows',
    );
    expect(formatHydrateProgress({ phase: 'hydrate', stage: 'apply', done: 0, total: 0 })).toContain(
      `[${'#'.repeat(24)}] 100% 0/0 rows`,
    );
  });

  it('redraws one line in place on a TTY and ends it before other output', () => {
    const { chunks, stream } = sink(true);
    const bar = new HydrateBar(stream);
    bar.update('p ', { phase: 'hydrate', stage: 'download', done: 1, total: 2 });
    bar.update('p ', { phase: 'hydrate', stage: 'apply', done: 2, total: 2 });
    bar.end();
    bar.end();
    expect(chunks).toHaveLength(3);
    expect(chunks[0]).toMatch(/^\rp hydrate download .* 50% 1\/2 rows\x1b\[K$/);
    expect(chunks[1]).toMatch(/^\rp hydrate apply .* 100% 2\/2 rows\x1b\[K$/);
    expect(chunks[2]).toBe('\n');
  });

  it('writes plain lines when not a TTY', () => {
    const { chunks, stream } = sink(false);
    const bar = new HydrateBar(stream);
    bar.update('', { phase: 'recover', stage: 'download', done: 5, total: 10 });
    bar.end();
    expect(chunks).toEqual(['recover download [############............]  50% 5/10 rows\n']);
  });
});
