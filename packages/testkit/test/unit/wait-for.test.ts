import { describe, expect, it } from 'vitest';
import { waitFor } from '../../src/index.js';

describe('waitFor', () => {
  it('resolves once the condition holds, sync or async', async () => {
    let n = 0;
    await waitFor(() => ++n >= 3, { intervalMs: 1 });
    expect(n).toBe(3);
    await expect(waitFor(async () => true)).resolves.toBeUndefined();
  });

  it('fails with TESTKIT_TIMEOUT naming what it waited for', async () => {
    await expect(waitFor(() => false, { timeoutMs: 0, what: 'the moon' })).rejects.toMatchObject({
      code: 'TESTKIT_TIMEOUT',
      message: 'timed out waiting for the moon',
    });
  });

  it('rejects with signal.reason on abort', async () => {
    const reason = new Error('stop');
    await expect(waitFor(() => false, { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
  });
});
