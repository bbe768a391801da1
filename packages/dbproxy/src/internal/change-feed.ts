import type { Logger } from '../options.js';
import { type CommitPublication, METHOD_DB_CHANGES } from '../protocol.js';
import type { ChangeEvent } from '../types.js';
import { Notifier } from './async.js';
import { ChangeStream } from './change-stream.js';
import type { Link } from './link.js';

/**
 * The change feed of this process: commits (from the local coordinator or the primary's PUB) are
 * delivered to every `changes()` stream in sequence order; a hole is fetched from the primary
 * (`db.changes`), and what it no longer has becomes a gap event.
 */
export class ChangeFeed {
  readonly #streams = new Set<ChangeStream>();
  readonly #log: Logger;
  /** Woken whenever the delivered sequence moves. */
  readonly seqAdvanced = new Notifier();
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

  /** A new stream; `fail` it or leave it to `end()`. */
  open(bufferSize: number, signal: AbortSignal | undefined): ChangeStream {
    const stream: ChangeStream = new ChangeStream(bufferSize, () => this.#streams.delete(stream), signal);
    return stream;
  }

  add(stream: ChangeStream): void {
    this.#streams.add(stream);
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
    this.seqAdvanced.notify();
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
    this.seqAdvanced.notify();
  }

  /** At close: every stream ends. */
  end(): void {
    for (const s of [...this.#streams]) s.end();
  }
}
