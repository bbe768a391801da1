/**
 * HS256 JSON Web Tokens with `jose` (the maintained JOSE library): what the reference example server
 * uses for its bearer auth. `sub` is the user id; `exp` is required, `iat` and `nbf` are checked.
 */
import { errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import { DemoError } from './errors.js';

/** The development secret used when `DEMO_JWT_SECRET` is not set. Never use it in production. */
export const DEFAULT_JWT_SECRET = 'x-demo-dev-secret-change-me';
export const DEFAULT_TOKEN_TTL_SECONDS = 24 * 3600;
/** Clock skew tolerated on `iat` and `nbf` (never on `exp`). */
export const DEFAULT_CLOCK_SKEW_SECONDS = 30;
/** The only signing algorithm accepted or produced. */
export const JWT_ALGORITHM = 'HS256';

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

const key = (secret: string) => new TextEncoder().encode(secret);

export async function signJwt(
  secret: string,
  claims: { sub: string; did?: string; iss?: string; ttlSeconds?: number; now?: number },
): Promise<string> {
  const now = Math.floor((claims.now ?? Date.now()) / 1000);
  const jwt = new SignJWT(claims.did === undefined ? {} : { did: claims.did })
    .setProtectedHeader({ alg: JWT_ALGORITHM, typ: 'JWT' })
    .setSubject(claims.sub)
    .setIssuedAt(now)
    .setNotBefore(now)
    .setExpirationTime(now + (claims.ttlSeconds ?? DEFAULT_TOKEN_TTL_SECONDS));
  if (claims.iss !== undefined) jwt.setIssuer(claims.iss);
  return jwt.sign(key(secret));
}

function fail(message: string, cause?: unknown): never {
  throw new DemoError('DEMO_UNAUTHORIZED', message, cause === undefined ? {} : { cause });
}

/** Why jose refused a token, in the words the 401s and the tests use. */
function reason(e: unknown): string {
  if (e instanceof joseErrors.JOSEAlgNotAllowed || e instanceof joseErrors.JOSENotSupported)
    return 'unexpected signing method';
  if (e instanceof joseErrors.JWSSignatureVerificationFailed) return 'bad signature';
  if (e instanceof joseErrors.JWTExpired) return 'token expired';
  if (e instanceof joseErrors.JWTClaimValidationFailed) {
    if (e.claim === 'exp') return 'token without exp';
    if (e.claim === 'nbf') return 'token not valid yet';
    return `bad ${e.claim} claim`;
  }
  return 'malformed token';
}

/** Verifies signature (HS256 only), `exp`, `nbf`, `iat` and a non-blank `sub`; returns the claims. */
export async function verifyJwt(token: string, secret: string, nowMs = Date.now()): Promise<JwtClaims> {
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(token, key(secret), {
      algorithms: [JWT_ALGORITHM],
      requiredClaims: ['exp'],
      clockTolerance: DEFAULT_CLOCK_SKEW_SECONDS,
      currentDate: new Date(nowMs),
    }));
  } catch (e) {
    fail(reason(e), e);
  }
  const now = Math.floor(nowMs / 1000);
  // jose's tolerance also applies to `exp`; an expired token gets no grace here.
  if (typeof payload['exp'] !== 'number' || payload['exp'] <= now) fail('token expired');
  if (typeof payload['iat'] === 'number' && payload['iat'] > now + DEFAULT_CLOCK_SKEW_SECONDS)
    fail('token issued in the future');
  const sub = typeof payload['sub'] === 'string' ? payload['sub'].trim() : '';
  if (sub === '') fail('missing sub');
  return { ...(payload as JwtClaims), sub };
}
