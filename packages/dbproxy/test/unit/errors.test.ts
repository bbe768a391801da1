import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DbProxyError, isDbProxyError, WIRE_ERROR_CODES, type WireErrorCode } from '../../src/errors.js';
import {
  errorFromWire,
  errorResponse,
  JSONRPC_INVALID_PARAMS,
  JSONRPC_METHOD_NOT_FOUND,
} from '../../src/protocol.js';

describe('typed errors across the wire', () => {
  it('round-trips every wire code with retryable, applied and details intact', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...WIRE_ERROR_CODES),
        fc.boolean(),
        fc.constantFrom('no', 'unknown', 'yes' as const),
        fc.string(),
        // `__proto__` is deliberately dropped when details are rebuilt (no prototype games from the wire)
        fc.option(
          fc.dictionary(
            fc.string({ minLength: 1 }).filter((k) => k !== '__proto__'),
            fc.jsonValue(),
          ),
          { nil: undefined },
        ),
        (code: WireErrorCode, retryable, applied, message, details) => {
          const err = new DbProxyError(`DBPROXY_${code}`, message, {
            retryable,
            applied,
            ...(details === undefined ? {} : { details }),
          });
          const resp = errorResponse(7, err);
          if (!('error' in resp)) throw new Error('expected an error response');
          const back = errorFromWire(JSON.parse(JSON.stringify(resp.error)));
          expect(isDbProxyError(back)).toBe(true);
          expect(back.code).toBe(`DBPROXY_${code}`);
          expect(back.wireCode).toBe(code);
          expect(back.retryable).toBe(retryable);
          expect(back.applied).toBe(applied);
          expect(back.message).toBe(message);
          if (details !== undefined) expect(back.details).toEqual(JSON.parse(JSON.stringify(details)));
        },
      ),
      { numRuns: 300 },
    );
  });

  it('uses the standard JSON-RPC codes for method-not-found and invalid params', () => {
    const a = errorResponse(1, new DbProxyError('DBPROXY_METHOD_NOT_FOUND', 'x'));
    const b = errorResponse(1, new DbProxyError('DBPROXY_INVALID_PARAMS', 'x'));
    expect('error' in a && a.error.code).toBe(JSONRPC_METHOD_NOT_FOUND);
    expect('error' in b && b.error.code).toBe(JSONRPC_INVALID_PARAMS);
  });

  it('never guesses from a message: an error without data becomes INTERNAL with applied unknown', () => {
    const e = errorFromWire({ code: -32000, message: 'UNIQUE constraint failed: t.k' });
    expect(e).toMatchObject({ code: 'DBPROXY_INTERNAL', applied: 'unknown', retryable: false });
    const nf = errorFromWire({ code: -32601, message: 'nope' });
    expect(nf.code).toBe('DBPROXY_METHOD_NOT_FOUND');
    const bad = errorFromWire({
      code: -32000,
      message: 'm',
      data: { code: 'MADE_UP', retryable: true, applied: 'no' } as never,
    });
    expect(bad.code).toBe('DBPROXY_INTERNAL');
  });

  it('local-only codes have no wire code', () => {
    expect(new DbProxyError('DBPROXY_CLOSED', 'c').wireCode).toBeNull();
    expect(isDbProxyError(new Error('x'))).toBe(false);
  });
});
