import { describe, expect, it } from 'vitest';
import { sameRows } from '../../src/tour.js';

const item = (id: string, over: Record<string, unknown> = {}) => ({
  id,
  list_id: 'L',
  title: `t${id}`,
  done: 0,
  note: '',
  updated_by: 'p',
  ...over,
});
const lists = [{ id: 'L', name: 'Groceries' }];

describe('the final verification (a device equals the server)', () => {
  it('ignores order and compares integers by value', () => {
    const dev = { lists, items: [item('b'), item('a', { done: 1 })] };
    const srv = { lists, items: [item('a', { done: 1 }), item('b')] };
    expect(sameRows(dev, srv)).toBe(true);
  });
  it('fails on a changed value, a missing row, an extra row or a different list', () => {
    const srv = { lists, items: [item('a'), item('b')] };
    expect(sameRows({ lists, items: [item('a'), item('b', { title: 'other' })] }, srv)).toBe(false);
    expect(sameRows({ lists, items: [item('a', { done: 1 }), item('b')] }, srv)).toBe(false);
    expect(sameRows({ lists, items: [item('a')] }, srv)).toBe(false);
    expect(sameRows({ lists, items: [item('a'), item('b'), item('c')] }, srv)).toBe(false);
    expect(sameRows({ lists: [{ id: 'L', name: 'x' }], items: srv.items }, srv)).toBe(false);
  });
});
