/**
 * HS256 JSON Web Tokens with node:crypto only (no dependency): what the reference example server
 * uses for its bearer auth. `sub` is the user id; `exp`, `iat` and `nbf` are checked.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { DemoError } from './errors.js';

/** The development secret used when `DEMO_JWT_SECRET` is not set. Never use it in production. */
export const DEFAULT_JWT_SECRET = 'x-demo-dev-secret-change-me';
export const DEFAULT_TOKEN_TTL_SECONDS = 24 * 3600;
/** Clock skew tolerated on `iat` and `nbf`. */
export const DEFAULT_CLOCK_SKEW_SECONDS = 30;

/**
 * The reference example server's default secret (its device simulator defaults to it too), used
 * by the reference profile when no secret is configured, so those clients work unchanged.
 */
export const REFERENCE_DEFAULT_JWT_SECRET = 'your-secret-key-change-in-production';

/**
 * `DEMO_JWT_SECRET`, else (reference profile only) the reference's `JWT_SECRET`, else the
 * profile's development default.
 */
export function jwtSecretFromEnv(env: NodeJS.ProcessEnv = process.env, profile = 'default'): string {
  const s = env['DEMO_JWT_SECRET'];
  if (s !== undefined && s !== '') return s;
  if (profile === 'reference') {
    const r = env['JWT_SECRET'];
    return r !== undefined && r !== '' ? r : REFERENCE_DEFAULT_JWT_SECRET;
  }
  return DEFAULT_JWT_SECRET;
}

export interface JwtClaims {
  sub: string;
  exp: number;
  iat: number;
  nbf: number;
  /** Device id (the reference example's `did` claim); informational only. */
  did?: string;
  iss?: string;
  [k: string]: unknown;
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

export function signJwt(
  secret: string,
  claims: { sub: string; did?: string; iss?: string; ttlSeconds?: number; now?: number },
): string {
  const now = Math.floor((claims.now ?? Date.now()) / 1000);
  const body: JwtClaims = {
    sub: claims.sub,
    iat: now,
    nbf: now,
    exp: now + (claims.ttlSeconds ?? DEFAULT_TOKEN_TTL_SECONDS),
  };
  if (claims.did !== undefined) body.did = claims.did;
  if (claims.iss !== undefined) body.iss = claims.iss;
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const payload = b64url(JSON.stringify(body));
  const sig = createHmac('sha256', secret).update(`${head}.${payload}`).digest('base64url');
  return `${head}.${payload}.${sig}`;
}

function fail(message: string): never {
  throw new DemoError('DEMO_UNAUTHORIZED', message);
}

/** Verifies signature (HS256 only), `exp`, `nbf`, `iat` and a non-blank `sub`; returns the claims. */
export function verifyJwt(token: string, secret: string, nowMs = Date.now()): JwtClaims {
  const parts = token.split('.');
  if (parts.length !== 3) fail('malformed token');
  const [head, payload, sig] = parts as [string, string, string];
  let header: unknown;
  let claims: unknown;
  try {
    header = JSON.parse(Buffer.from(head, 'base64url').toString('utf8'));
    claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  } catch {
    fail('malformed token');
  }
  if (typeof header !== 'object' || header === null || (header as { alg?: unknown }).alg !== 'HS256')
    fail('unexpected signing method');
  const expected = createHmac('sha256', secret).update(`${head}.${payload}`).digest();
  const given = Buffer.from(sig, 'base64url');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) fail('bad signature');
  if (typeof claims !== 'object' || claims === null) fail('malformed claims');
  const c = claims as Record<string, unknown>;
  const now = Math.floor(nowMs / 1000);
  if (typeof c['exp'] !== 'number' || c['exp'] <= now) fail('token expired');
  if (typeof c['nbf'] === 'number' && c['nbf'] > now + DEFAULT_CLOCK_SKEW_SECONDS)
    fail('token not valid yet');
  if (typeof c['iat'] === 'number' && c['iat'] > now + DEFAULT_CLOCK_SKEW_SECONDS)
    fail('token issued in the future');
  const sub = typeof c['sub'] === 'string' ? c['sub'].trim() : '';
  if (sub === '') fail('missing sub');
  return { ...(c as JwtClaims), sub };
}
