import { describe, expect } from 'vitest';
import { z } from 'zod';
import { it, openCoordinator, values } from '../helpers/db.js';
import { rejection } from '../helpers/errors.js';

describe('named writes', () => {
  it('dispatches { method, params } through the registry with parsed params', async ({ tdb: t }) => {
    const { db, wc } = openCoordinator(t);
    wc.register('addItem', z.object({ v: z.string().trim() }), (d, p) => {
      d.prepare('INSERT INTO items (v) VALUES (?)').run(p.v);
      return { v: p.v };
    });
    const events: unknown[] = [];
    wc.subscribe((e) => events.push(e));
    const r = await wc.submit({ method: 'addItem', params: { v: '  x  ' } }, { requestId: 'add-1' });
    expect(r.value).toEqual({ v: 'x' });
    expect(values(db)).toEqual(['x']);
    expect(events).toEqual([{ seq: 1, jobs: [{ method: 'addItem', requestId: 'add-1' }] }]);
    await wc.close();
  });

  it('unknown method and invalid params are typed errors and nothing is written', async ({ tdb: t }) => {
    const { db, wc } = openCoordinator(t);
    let ran = 0;
    wc.register('addItem', z.object({ v: z.string() }), () => {
      ran++;
    });
    const nf = await rejection(wc.submit({ method: 'nope', params: {} }));
    expect(nf.code).toBe('WRITECOORDINATOR_METHOD_NOT_FOUND');
    const bad = await rejection(wc.submit({ method: 'addItem', params: { v: 3 } }));
    expect(bad.code).toBe('WRITECOORDINATOR_INVALID_PARAMS');
    expect(bad.details?.issues).toBeDefined();
    expect(ran).toBe(0);
    expect(wc.seq).toBe(0);
    expect(values(db)).toEqual([]);
    expect(() => wc.register('addItem', z.object({}), () => {})).toThrow(
      expect.objectContaining({ code: 'WRITECOORDINATOR_METHOD_EXISTS' }),
    );
    expect(wc.metrics().rejected).toBe(2);
    await wc.close();
  });
});
