/**
 * Bundle-change watch (§10.3): a LISTEN connection woken by the `pg_notify` every committed bundle
 * sends, fanned out in-process to per-user subscribers with a one-slot coalescing buffer.
 */
import { ChangeStream, Emitter, sleep } from '@x/core';
import type { BundleChangeEvent } from '../../shared/wire.js';
import type { BundleChangeSubscription } from '../bundle-change-subscription.js';
import type { SyncDatabase, SyncListenClient } from '../database.js';
import type { SyncLogger } from '../options.js';
import { quoteIdent } from './db.js';

/** A full one-slot buffer keeps the newer event: a watcher only needs the latest sequence. */
const coalesce = (_buffered: readonly BundleChangeEvent[], incoming: BundleChangeEvent) => [incoming];

class Subscriber implements BundleChangeSubscription {
  #lastSeq: number;
  readonly #stream: ChangeStream<BundleChangeEvent>;
  constructor(after: number, onClose: (s: Subscriber) => void) {
    this.#lastSeq = after;
    this.#stream = new ChangeStream({ capacity: 1, overflow: coalesce, onClose: () => onClose(this) });
  }
  get closed(): boolean {
    return this.#stream.done;
  }
  /** Non-blocking: a newer event replaces a queued one (coalescing); stale ones are ignored. */
  publish(e: BundleChangeEvent): void {
    if (this.closed || e.bundle_seq <= 0 || e.bundle_seq <= this.#lastSeq) return;
    this.#lastSeq = e.bundle_seq;
    this.#stream.push(e);
  }
  /** Ends the iteration at once; a queued event is dropped. */
  close(): void {
    void this.#stream.return();
  }
  [Symbol.asyncIterator](): AsyncIterator<BundleChangeEvent> {
    return this.#stream;
  }
}

export class BundleChangeHub {
  readonly #subs = new Map<string, Set<Subscriber>>();
  readonly #stop = new AbortController();
  #loop: Promise<void> | undefined;
  #client: SyncListenClient | undefined;
  /** `listening` fires each time LISTEN becomes active (first connect and every reconnect). */
  readonly #events = new Emitter<{ listening: undefined }>();

  constructor(
    private readonly db: SyncDatabase,
    private readonly channel: string,
    private readonly logger: SyncLogger,
  ) {}

  subscriberCount(userPk?: string): number {
    if (userPk !== undefined) return this.#subs.get(userPk)?.size ?? 0;
    let n = 0;
    for (const s of this.#subs.values()) n += s.size;
    return n;
  }

  subscribe(userPk: string, afterBundleSeq: number): Subscriber {
    this.#loop ??= this.#run();
    const sub = new Subscriber(afterBundleSeq, (s) => {
      const set = this.#subs.get(userPk);
      set?.delete(s);
      if (set?.size === 0) this.#subs.delete(userPk);
    });
    let set = this.#subs.get(userPk);
    if (!set) {
      set = new Set();
      this.#subs.set(userPk, set);
    }
    set.add(sub);
    return sub;
  }

  publish(userPk: string, e: BundleChangeEvent): void {
    const set = this.#subs.get(userPk);
    if (set) for (const s of [...set]) s.publish(e);
  }

  /**
   * Resolves once LISTEN is active (tests and hosts that need the guarantee), or after `timeoutMs`
   * or on close() without it. Waits on the `listening` event, not by polling.
   */
  async ready(timeoutMs = 5000): Promise<void> {
    this.#loop ??= this.#run();
    const stop = this.#stop.signal;
    if (this.#client || stop.aborted) return;
    // setTimeout's limit: a longer (or Infinity) timeout would fire at once instead of waiting
    await sleep(Math.min(timeoutMs, 2_147_483_647), {
      wake: (wakeUp) => {
        const off = this.#events.once('listening', wakeUp);
        stop.addEventListener('abort', wakeUp, { once: true });
        return () => {
          off();
          stop.removeEventListener('abort', wakeUp);
        };
      },
    });
  }

  async close(): Promise<void> {
    this.#stop.abort();
    for (const set of [...this.#subs.values()]) for (const s of [...set]) s.close();
    await this.#loop;
  }

  async #run(): Promise<void> {
    const connect = this.db.connect?.bind(this.db);
    if (!connect) {
      this.logger.error(
        {},
        'oversync watch: the db has no connect(); bundle change notifications are disabled',
      );
      return;
    }
    let backoff = 100;
    while (!this.#stop.signal.aborted) {
      let client: SyncListenClient | undefined;
      try {
        client = (await connect({ signal: this.#stop.signal })) as SyncListenClient;
        const ended = new Promise<void>((resolve) => {
          client!.on('error', (err?: Error) => {
            this.logger.warn({ err }, 'oversync watch: listener connection error');
            resolve();
          });
          client!.on('end', () => resolve());
          this.#stop.signal.addEventListener('abort', () => resolve(), { once: true });
        });
        client.on('notification', (msg) => this.#onNotification(msg.payload));
        await client.query(`LISTEN ${quoteIdent(this.channel)}`);
        this.#client = client;
        this.#events.emit('listening', undefined);
        backoff = 100;
        await this.#catchUp();
        await ended;
      } catch (err) {
        if (!this.#stop.signal.aborted)
          this.logger.warn({ err }, 'oversync watch: listener failed; reconnecting');
      } finally {
        this.#client = undefined;
        if (client) {
          client.removeAllListeners('notification');
          try {
            client.release(true);
          } catch {
            // already released
          }
        }
      }
      if (this.#stop.signal.aborted) break;
      // close() aborts the wait at once instead of leaving it to run out.
      await sleep(backoff, { signal: this.#stop.signal, unref: true }).catch(() => undefined);
      backoff = Math.min(2000, backoff * 2);
    }
  }

  #onNotification(payload: string | undefined): void {
    try {
      const p = JSON.parse(payload ?? '') as Record<string, unknown>;
      const userPk = p['user_pk'];
      const seq = p['bundle_seq'];
      if ((typeof userPk !== 'number' && typeof userPk !== 'string') || typeof seq !== 'number') return;
      const e: BundleChangeEvent = { bundle_seq: seq };
      if (typeof p['source_id'] === 'string' && p['source_id']) e.source_id = p['source_id'];
      if (typeof p['source_bundle_id'] === 'number' && p['source_bundle_id'] > 0)
        e.source_bundle_id = p['source_bundle_id'];
      this.publish(String(userPk), e);
    } catch (err) {
      this.logger.warn({ err }, 'oversync watch: ignoring a malformed notification');
    }
  }

  /** After (re)connecting, wake every local subscriber whose scope moved while we were not listening. */
  async #catchUp(): Promise<void> {
    const pks = [...this.#subs.keys()];
    if (pks.length === 0) return;
    const r = await this.db.query<{ user_pk: string; seq: string }>(
      'SELECT user_pk::text, (next_bundle_seq - 1)::text AS seq FROM sync.user_state WHERE user_pk = ANY($1::bigint[])',
      [pks],
    );
    for (const row of r.rows) this.publish(row.user_pk, { bundle_seq: Number(row.seq) });
  }
}
