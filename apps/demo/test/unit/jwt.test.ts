import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { isDemoError } from '../../src/errors.js';
import { DEFAULT_JWT_SECRET, jwtSecretFromEnv, signJwt, verifyJwt } from '../../src/jwt.js';

const SECRET = 'unit-secret';
const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
const forge = (header: unknown, claims: unknown, secret = SECRET) => {
  const h = b64(header);
  const p = b64(claims);
  return `${h}.${p}.${createHmac('sha256', secret).update(`${h}.${p}`).digest('base64url')}`;
};
const rejects = async (token: string | Promise<string>, msg: RegExp) => {
  try {
    await verifyJwt(await token, SECRET);
  } catch (e) {
    expect(isDemoError(e) && e.code).toBe('DEMO_UNAUTHORIZED');
    expect((e as Error).message).toMatch(msg);
    return;
  }
  throw new Error('token was accepted');
};

describe('HS256 JWT (jose)', () => {
  it('round-trips sub, did and the time claims', async () => {
    const t = await signJwt(SECRET, { sub: 'alice', did: 'phone', ttlSeconds: 60 });
    const c = await verifyJwt(t, SECRET);
    expect(c.sub).toBe('alice');
    expect(c.did).toBe('phone');
    expect(c.exp - c.iat).toBe(60);
    expect(c.nbf).toBe(c.iat);
    expect(JSON.parse(Buffer.from(t.split('.')[0] ?? '', 'base64url').toString())).toEqual({
      alg: 'HS256',
      typ: 'JWT',
    });
  });

  it('matches an independently computed HS256 signature', async () => {
    const now = Math.floor(Date.now() / 1000);
    const t = forge({ alg: 'HS256', typ: 'JWT' }, { sub: 'bob', iat: now, nbf: now, exp: now + 10 });
    expect((await verifyJwt(t, SECRET)).sub).toBe('bob');
  });

  it('rejects a wrong secret, expiry, future nbf/iat, blank sub, other algorithms and garbage', async () => {
    const now = Math.floor(Date.now() / 1000);
    await rejects(signJwt('other', { sub: 'alice' }), /signature/);
    await rejects(signJwt(SECRET, { sub: 'alice', ttlSeconds: -1 }), /expired/);
    await rejects(forge({ alg: 'HS256' }, { sub: 'a', exp: now + 100, nbf: now + 3600 }), /not valid yet/);
    await rejects(forge({ alg: 'HS256' }, { sub: 'a', exp: now + 100, iat: now + 3600 }), /future/);
    await rejects(forge({ alg: 'HS256' }, { sub: '   ', exp: now + 100 }), /sub/);
    await rejects(forge({ alg: 'HS256' }, { sub: 'a' }), /exp/);
    await rejects(forge({ alg: 'HS512' }, { sub: 'a', exp: now + 100 }), /signing method/);
    await rejects(forge({ alg: 'none' }, { sub: 'a', exp: now + 100 }), /signing method/);
    await rejects(
      `${b64({ alg: 'none' })}.${b64({ sub: 'a', exp: now + 100 })}.`,
      /signing method|signature/,
    );
    await rejects('not-a-token', /malformed/);
  });

  it('trims sub and takes the secret from DEMO_JWT_SECRET, else the documented dev default', async () => {
    const now = Math.floor(Date.now() / 1000);
    expect((await verifyJwt(forge({ alg: 'HS256' }, { sub: '  carol ', exp: now + 5 }), SECRET)).sub).toBe(
      'carol',
    );
    expect(jwtSecretFromEnv({ DEMO_JWT_SECRET: 's3' })).toBe('s3');
    expect(jwtSecretFromEnv({})).toBe(DEFAULT_JWT_SECRET);
  });
});
