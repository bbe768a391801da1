/**
 * A device's two policies: how long it waits between attempts to reach the server (capped
 * exponential backoff with jitter) and how it settles push conflicts (the demo's merge resolver).
 */
import type { ConflictContext, ConflictResolution } from '@x/oversync/client';

/** Capped exponential backoff with jitter: the n-th wait is uniform in [cap/2, cap], cap = min(max, min * 2^n). */
export class Backoff {
  #attempt = 0;
  constructor(
    readonly minMs: number,
    readonly maxMs: number,
    readonly random: () => number = Math.random,
  ) {}
  next(): number {
    const cap = Math.min(this.maxMs, this.minMs * 2 ** Math.min(this.#attempt++, 30));
    return Math.round(cap / 2 + (cap / 2) * this.random());
  }
  reset(): void {
    this.#attempt = 0;
  }
}

/** Conflict policy of the demo: a server deletion wins; concurrent edits of an item are merged. */
export function mergeResolver(ctx: ConflictContext): ConflictResolution {
  if (ctx.serverRowDeleted || ctx.serverRowLocal === null || ctx.localPayload === null)
    return { kind: 'accept-server' };
  if (ctx.table !== 'items') return { kind: 'accept-server' };
  const s = ctx.serverRowLocal;
  const l = ctx.localPayload;
  if (s['title'] === l['title']) return { kind: 'accept-server' };
  return {
    kind: 'merged',
    payload: {
      ...s,
      title: `${String(s['title'])} + ${String(l['title'])}`,
      done: Math.max(Number(s['done'] ?? 0), Number(l['done'] ?? 0)),
      updated_by: 'merge',
    },
  };
}
