import type { ConflictContext } from '@x/oversync/client';
import { describe, expect, it } from 'vitest';
import { mergeResolver } from '../../src/device-policy.js';

const ctx = (over: Partial<ConflictContext>): ConflictContext => ({
  reason: 'row_version',
  schema: 'acme',
  table: 'items',
  key: { id: 'k' },
  localOp: 'UPDATE',
  localPayload: { id: 'k', list_id: 'l', title: 'phone', done: 1, note: '', updated_by: 'phone' },
  baseRowVersion: 1,
  serverRowVersion: 2,
  serverRowDeleted: false,
  serverRow: null,
  serverRowLocal: { id: 'k', list_id: 'l', title: 'laptop', done: 0, note: '', updated_by: 'laptop' },
  ...over,
});

describe('the demo conflict policy', () => {
  it('merges concurrent title edits and keeps "done" if either side set it', () => {
    const r = mergeResolver(ctx({}));
    expect(r).toEqual({
      kind: 'merged',
      payload: { id: 'k', list_id: 'l', title: 'laptop + phone', done: 1, note: '', updated_by: 'merge' },
    });
  });
  it('lets a server deletion win, and takes the server row when nothing differs', () => {
    expect(mergeResolver(ctx({ serverRowDeleted: true, serverRowLocal: null })).kind).toBe('accept-server');
    expect(mergeResolver(ctx({ localOp: 'DELETE', localPayload: null })).kind).toBe('accept-server');
    const same = ctx({});
    expect(mergeResolver({ ...same, localPayload: { ...same.serverRowLocal } }).kind).toBe('accept-server');
  });
});
