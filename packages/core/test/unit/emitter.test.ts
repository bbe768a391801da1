import { describe, expect, it } from 'vitest';
import { Emitter } from '../../src/index.js';

interface Events {
  up: { node: string };
  down: { node: string; reason: string };
}

describe('Emitter', () => {
  it('calls listeners of the emitted event in subscription order with the payload', () => {
    const e = new Emitter<Events>();
    const calls: string[] = [];
    e.on('up', (p) => calls.push(`a:${p.node}`));
    e.on('up', (p) => calls.push(`b:${p.node}`));
    e.on('down', (p) => calls.push(`down:${p.reason}`));
    e.emit('up', { node: 'n1' });
    expect(calls).toEqual(['a:n1', 'b:n1']);
  });

  it('on returns an idempotent unsubscribe', () => {
    const e = new Emitter<Events>();
    const calls: string[] = [];
    const off = e.on('up', (p) => calls.push(p.node));
    e.emit('up', { node: '1' });
    off();
    off();
    e.emit('up', { node: '2' });
    expect(calls).toEqual(['1']);
    expect(e.listenerCount('up')).toBe(0);
  });

  it('once fires a single time and can be cancelled before', () => {
    const e = new Emitter<Events>();
    const calls: string[] = [];
    e.once('up', (p) => calls.push(p.node));
    const cancel = e.once('up', (p) => calls.push(`never:${p.node}`));
    cancel();
    e.emit('up', { node: '1' });
    e.emit('up', { node: '2' });
    expect(calls).toEqual(['1']);
  });

  it('a throwing listener goes to onListenerError and the others still run', () => {
    const errors: unknown[] = [];
    const e = new Emitter<Events>({ onListenerError: (err, event) => errors.push([event, err]) });
    const boom = new Error('boom');
    const calls: string[] = [];
    e.on('down', () => {
      throw boom;
    });
    e.on('down', (p) => calls.push(p.node));
    e.emit('down', { node: 'n', reason: 'r' });
    expect(errors).toEqual([['down', boom]]);
    expect(calls).toEqual(['n']);
  });

  it('listeners added during an emit run from the next emit; clear removes all', () => {
    const e = new Emitter<Events>();
    const calls: string[] = [];
    e.on('up', () => {
      calls.push('outer');
      e.on('up', () => calls.push('inner'));
    });
    e.emit('up', { node: 'x' });
    expect(calls).toEqual(['outer']);
    e.clear();
    e.emit('up', { node: 'x' });
    expect(calls).toEqual(['outer']);
  });
});
