/** This process's change feed: commits in sequence order to every `changes()` stream, catch-up and gaps. */
import { ChangeStream, Emitter } from '@x/core';
import type { Logger } from '../options.js';
import { type CommitPublication, METHOD_DB_CHANGES } from '../protocol.js';
import type { ChangeEvent } from '../types.js';
import type { Link } from './link.js';

/**
 * The change feed of this process: commits (from the local coordinator or the primary's PUB) are
 * delivered to every `changes()` stream in sequence order; a hole is fetched from the primary
 * (`db.changes`), and what it no longer has becomes a gap event.
 */
export class ChangeFeed {
  readonly #streams = new Set<ChangeStream<ChangeEvent>>();
  readonly #log: Logger;
  /** Woken whenever the delivered sequence moves. */
  readonly seqAdvanced = new Emitter<{ changed: undefined }>();
  /** The highest sequence delivered (null until the starting point is known). */
  deliveredSeq: number | null = null;
  #catchingUp: CommitPublication[] | null = null;
  /** The link to follow for catch-up, when this process is a secondary. */
  readonly #link: () => Link | null;
  readonly #isSecondary: () => boolean;

  constructor(log: Logger, link: () => Link | null, isSecondary: () => boolean) {
    this.#log = log;
    this.#link = link;
    this.#isSecondary = isSecondary;
  }

  /**
   * A new `changes()` stream, fed every event from now on until it is done: its consumer leaves, its
   * signal aborts (reads reject with the signal's reason), it is failed, or `end()` ends it. A
   * consumer more than `bufferSize` events behind gets one gap event instead (`replaceByGap`).
   */
  open(bufferSize: number, signal: AbortSignal | undefined): ChangeStream<ChangeEvent> {
    let stream: ChangeStream<ChangeEvent> | null = null;
    stream = new ChangeStream<ChangeEvent>({
      capacity: bufferSize,
      overflow: replaceByGap,
      signal,
      onClose: () => {
        if (stream !== null) this.#streams.delete(stream);
      },
    });
    if (!stream.done) this.#streams.add(stream);
    return stream;
  }

  /** A commit reached this process (from the local coordinator or the primary's PUB). */
  onCommit(pub: CommitPublication): void {
    if (this.#catchingUp !== null) {
      this.#catchingUp.push(pub);
      return;
    }
    const last = this.deliveredSeq;
    const link = this.#link();
    if (last !== null && pub.seq > last + 1 && link !== null && this.#isSecondary()) {
      this.#catchingUp = [pub];
      void this.#catchUp(link, last);
      return;
    }
    this.#deliver(pub);
  }

  /** A heartbeat or ping told us the primary's seq; fetch what we missed, if anything. */
  onRemoteSeq(seq: number): void {
    const last = this.deliveredSeq;
    if (last === null || seq <= last || this.#catchingUp !== null) return;
    const link = this.#link();
    if (link === null) return;
    this.#catchingUp = [];
    void this.#catchUp(link, last);
  }

  async #catchUp(link: Link, afterSeq: number): Promise<void> {
    try {
      const r = (await link.call(METHOD_DB_CHANGES, { meta: link.auth, afterSeq })) as {
        events: CommitPublication[];
        complete: boolean;
        seq: number;
      };
      const first = r.events[0];
      // What the primary no longer has (or never had: it was promoted after those commits) is a gap.
      if (!r.complete) this.emitGap(afterSeq, first !== undefined ? first.seq - 1 : r.seq);
      for (const e of r.events) this.#deliver(e);
    } catch (e) {
      this.#log.debug({ err: e }, 'dbproxy: change catch-up failed');
    }
    const queued = this.#catchingUp ?? [];
    this.#catchingUp = null;
    for (const pub of queued) {
      const last = this.deliveredSeq;
      if (last !== null && pub.seq > last + 1) this.emitGap(last, pub.seq - 1);
      this.#deliver(pub);
    }
  }

  emitGap(afterSeq: number, toSeq: number): void {
    if (toSeq <= afterSeq) return;
    for (const s of this.#streams) s.push({ type: 'gap', afterSeq, toSeq } satisfies ChangeEvent);
    this.deliveredSeq = toSeq;
    this.seqAdvanced.emit('changed', undefined);
  }

  #deliver(pub: CommitPublication): void {
    if (this.deliveredSeq !== null && pub.seq <= this.deliveredSeq) return;
    this.deliveredSeq = pub.seq;
    for (const s of this.#streams) {
      for (const w of pub.writes) {
        s.push({
          type: 'write',
          seq: pub.seq,
          epoch: pub.epoch,
          method: w.method,
          requestId: w.requestId,
          sourceInstanceId: w.sourceInstanceId,
        });
      }
    }
    this.seqAdvanced.emit('changed', undefined);
  }

  /** At close: every stream ends. */
  end(): void {
    for (const s of [...this.#streams]) s.end();
  }
}

/**
 * The overflow policy of a `changes()` stream: the events its consumer has not read yet and the one
 * arriving are replaced by one gap event covering all their commits, rather than growing without bound.
 */
export function replaceByGap(buffered: readonly ChangeEvent[], incoming: ChangeEvent): ChangeEvent[] {
  const first = buffered[0] ?? incoming;
  const afterSeq = first.type === 'write' ? first.seq - 1 : first.afterSeq;
  const toSeq = incoming.type === 'write' ? incoming.seq : incoming.toSeq;
  return [{ type: 'gap', afterSeq, toSeq }];
}
