import { describe, expect, it } from 'vitest';
import { defaultProfile } from '../../src/profiles.js';
import { startDemoServer } from '../../src/server.js';

describe('startDemoServer options', () => {
  it('rejects bad options with DEMO_INVALID_OPTIONS before starting anything', async () => {
    await expect(startDemoServer({ profile: defaultProfile, secret: '' })).rejects.toMatchObject({
      code: 'DEMO_INVALID_OPTIONS',
    });
    await expect(
      startDemoServer({ profile: defaultProfile, secret: 's', port: 70_000 }),
    ).rejects.toMatchObject({
      code: 'DEMO_INVALID_OPTIONS',
    });
  });
});
