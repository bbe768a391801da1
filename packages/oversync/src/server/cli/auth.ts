/**
 * Bearer JWT verification with jose: HS256 with a shared secret, or the keys of a JWKS URL
 * (fetched, cached and refreshed on an unknown `kid` by jose). The user id is the `sub` claim.
 */
import { createRemoteJWKSet, type JWTVerifyOptions, jwtVerify } from 'jose';
import type { ServerConfig } from './config.js';

/** The verified user id of a bearer token, or a reason it is refused (never thrown). */
export type VerifyResult = { ok: true; userId: string } | { ok: false; reason: string };

export type TokenVerifier = (token: string) => Promise<VerifyResult>;

/** Asymmetric algorithms accepted from a JWKS (never `none`, never HMAC with a public key). */
const JWKS_ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
];

export function createTokenVerifier(jwt: ServerConfig['jwt']): TokenVerifier {
  const options: JWTVerifyOptions = {
    algorithms: jwt.secret !== undefined ? ['HS256'] : JWKS_ALGORITHMS,
    clockTolerance: jwt.clockToleranceSec,
    requiredClaims: ['sub'],
    ...(jwt.issuer !== undefined ? { issuer: jwt.issuer } : {}),
    ...(jwt.audience !== undefined ? { audience: jwt.audience } : {}),
  };
  const verify =
    jwt.secret !== undefined
      ? (
          (key: Uint8Array) => (token: string) =>
            jwtVerify(token, key, options)
        )(new TextEncoder().encode(jwt.secret))
      : (
          (keys: ReturnType<typeof createRemoteJWKSet>) => (token: string) =>
            jwtVerify(token, keys, options)
        )(createRemoteJWKSet(new URL(jwt.jwksUrl!)));
  return async (token) => {
    try {
      const { payload } = await verify(token);
      const sub = typeof payload.sub === 'string' ? payload.sub.trim() : '';
      return sub === '' ? { ok: false, reason: 'blank sub claim' } : { ok: true, userId: sub };
    } catch (e) {
      const err = e as { code?: string; message?: string };
      return { ok: false, reason: `${err.code ?? 'ERR_JWT_INVALID'}: ${err.message ?? String(e)}` };
    }
  };
}

/** The token of an `Authorization: Bearer <token>` header, or null. */
export function bearerToken(header: string | string[] | undefined): string | null {
  if (typeof header !== 'string') return null;
  const m = /^Bearer +(\S+)\s*$/i.exec(header);
  return m ? m[1]! : null;
}
