import { CodedError } from '@x/core';
import { ClientError, isClientError } from '@x/oversync/client';
import {
  isOversyncError,
  isSyncServerError,
  OversyncError,
  SyncServerError,
  UnsupportedSchemaError,
} from '@x/oversync/server';
import { describe, expect, it } from 'vitest';

/** Issue #16: the package's one error class extends `@x/core`'s CodedError, its classes and forms kept. */
describe('OversyncError on the CodedError base', () => {
  it('keeps every class in the chain and its own name', () => {
    const server = new UnsupportedSchemaError('no key', { details: { table: 'p' } });
    for (const c of [CodedError, OversyncError, SyncServerError, UnsupportedSchemaError, Error])
      expect(server).toBeInstanceOf(c);
    expect([server.name, server.code, server.retryable, server.details]).toEqual([
      'UnsupportedSchemaError',
      'OVERSYNC_UNSUPPORTED_SCHEMA',
      false,
      { table: 'p' },
    ]);
    const client = new ClientError('OVERSYNC_CLIENT_NETWORK', 'offline', { retryable: true, cause: 'x' });
    expect(client).toBeInstanceOf(CodedError);
    expect(client).toBeInstanceOf(OversyncError);
    expect([client.name, client.retryable, client.details, client.cause]).toEqual([
      'OversyncError',
      true,
      {},
      'x',
    ]);
    expect(isClientError(client, 'OVERSYNC_CLIENT_NETWORK') && isOversyncError(client)).toBe(true);
    expect(isSyncServerError(server) && isOversyncError(server) && !isClientError(server)).toBe(true);
  });

  it('serialises as CodedError does, with the server fields', () => {
    expect(
      JSON.parse(
        JSON.stringify(new SyncServerError('OVERSYNC_PUSH_CONFLICT', 'm', { body: { conflict: 1 } })),
      ),
    ).toEqual({
      name: 'SyncServerError',
      code: 'OVERSYNC_PUSH_CONFLICT',
      retryable: false,
      wireCode: 'push_conflict',
      body: { conflict: 1 },
    });
    expect(new OversyncError('OVERSYNC_X', 'm').toJSON()).toEqual({
      name: 'OversyncError',
      code: 'OVERSYNC_X',
      retryable: false,
    });
    expect('details' in new OversyncError('OVERSYNC_X', 'm')).toBe(false);
  });
});
