/** A secondary's connection to the primary: requests over a DEALER, heartbeats and commits over a SUB. */
import { Dealer, Subscriber } from 'zeromq';
import { DbProxyError } from '../errors.js';
import type { Logger } from '../options.js';
import {
  type AuthMeta,
  type CommitPublication,
  errorFromWire,
  type HeartbeatPublication,
  type JsonRpcResponse,
  METHOD_DB_PING,
  TOPIC_BYE,
  TOPIC_COMMIT,
  TOPIC_HEARTBEAT,
} from '../protocol.js';
import { CoalescingSender, encodeFrame } from './coalescing-sender.js';
import type { SignalLike } from './light-signal.js';
import type { PrimaryInfo } from './runtime-dir.js';

export const BYE_REASON = 'primary shut down';
/**
 * The primary's endpoint refused the connection (or its socket file is gone): nobody listens there,
 * so that primary has closed or died. Known within milliseconds, instead of a ping timeout.
 */
export const REFUSED_REASON = 'endpoint refused the connection';

/** The link to a primary went down with the request outstanding: it may or may not have been applied. */
export class LinkDownError extends Error {
  override readonly name = 'LinkDownError';
  constructor(
    readonly reason: string,
    readonly sent: boolean,
  ) {
    super(`link to primary down: ${reason}`);
  }
}

export interface LinkEvents {
  onCommit(pub: CommitPublication): void;
  onHeartbeat(hb: HeartbeatPublication): void;
  onDown(link: Link, reason: string): void;
}

interface Pending {
  resolve(v: unknown): void;
  reject(e: unknown): void;
  sent: boolean;
  signal: SignalLike | undefined;
  onAbort: (() => void) | undefined;
}

interface OutgoingRequest {
  jsonrpc: '2.0';
  id: number;
  method: string;
  params: unknown;
}

/**
 * A secondary's connection to one primary (one epoch): a DEALER for JSON-RPC with many requests in
 * flight, matched by id, and a SUB for heartbeats and commits. The link is "down" for good as soon
 * as the socket monitor reports a disconnect, the primary says bye, or nothing arrives for a
 * heartbeat timeout; every outstanding request is then rejected with LinkDownError, and the proxy
 * re-sends it (same requestId) on the next link.
 */
export class Link {
  readonly info: PrimaryInfo;
  readonly auth: AuthMeta;
  readonly #dealer: Dealer;
  readonly #sub: Subscriber;
  readonly #pending = new Map<number, Pending>();
  readonly #sender: CoalescingSender<OutgoingRequest>;
  readonly #events: LinkEvents;
  readonly #log: Logger;
  readonly #heartbeatTimeoutMs: number;
  #nextId = 1;
  #lastSeen = Date.now();
  #down: string | null = null;
  #watchdog: NodeJS.Timeout | null = null;

  constructor(info: PrimaryInfo, opts: { heartbeatTimeoutMs: number; log: Logger; events: LinkEvents }) {
    this.info = info;
    this.auth = { epoch: info.epoch, dbPath: info.dbPath, token: info.token };
    this.#events = opts.events;
    this.#log = opts.log;
    this.#heartbeatTimeoutMs = opts.heartbeatTimeoutMs;
    // immediate: never queue a request for a peer that is not connected; linger 0: never deliver a
    // stale request after this link is abandoned.
    this.#dealer = new Dealer({
      linger: 0,
      immediate: true,
      sendTimeout: opts.heartbeatTimeoutMs,
      sendHighWaterMark: 100_000,
      receiveHighWaterMark: 100_000,
      reconnectInterval: 50,
    });
    this.#sub = new Subscriber({ linger: 0, receiveHighWaterMark: 100_000, reconnectInterval: 50 });
    this.#sender = new CoalescingSender<OutgoingRequest>(
      async (_to, items) => {
        // Each request is encoded on its own: one that JSON cannot carry fails its own caller only
        // (the proxy checks params before they get here; this is the last line).
        const frame = encodeFrame(items, (it, e) => {
          const p = this.#pending.get(it.id);
          if (p !== undefined) {
            this.#pending.delete(it.id);
            this.#settle(p);
            p.reject(
              new DbProxyError(
                'DBPROXY_PARAMS_NOT_SERIALISABLE',
                `params of ${it.method} cannot be sent as JSON`,
                {
                  details: { reason: e instanceof Error ? e.message : String(e) },
                  cause: e,
                },
              ),
            );
          }
          return null;
        });
        if (frame === null) return;
        for (const it of items) {
          const p = this.#pending.get(it.id);
          if (p !== undefined) p.sent = true;
        }
        await this.#dealer.send(frame);
      },
      (e) => this.markDown(`send failed: ${(e as Error).message}`),
    );
  }

  /** Why the link went down, or null while it is up. */
  get downReason(): string | null {
    return this.#down;
  }

  get isDown(): boolean {
    return this.#down !== null;
  }

  get epoch(): number {
    return this.info.epoch;
  }

  get inFlight(): number {
    return this.#pending.size;
  }

  /** Connects both sockets and pings the primary; resolves with its ping answer or rejects (link closed). */
  async connect(): Promise<{ epoch: number; seq: number }> {
    // libzmq retries a refused connect (dead primary, socket file left behind, or removed) every
    // reconnectInterval without ever failing the send; the monitor says so at the first attempt.
    let connected = false;
    this.#dealer.events.on('connect', () => {
      connected = true;
    });
    this.#dealer.events.on('connect:retry', () => {
      if (!connected) this.markDown(REFUSED_REASON);
    });
    this.#dealer.events.on('disconnect', () => this.markDown('socket disconnected'));
    this.#sub.events.on('disconnect', () => this.markDown('socket disconnected'));
    this.#dealer.connect(this.info.endpoints.rpc);
    this.#sub.connect(this.info.endpoints.pub);
    this.#sub.subscribe();
    void this.#readReplies();
    void this.#readPublications();
    const timer = setTimeout(() => this.markDown('no answer to ping'), this.#heartbeatTimeoutMs);
    try {
      const r = (await this.call(METHOD_DB_PING, { meta: this.auth })) as { epoch: number; seq: number };
      this.#lastSeen = Date.now();
      this.#watchdog = setInterval(
        () => {
          if (Date.now() - this.#lastSeen > this.#heartbeatTimeoutMs) this.markDown('heartbeat timeout');
        },
        Math.max(10, Math.floor(this.#heartbeatTimeoutMs / 4)),
      );
      return r;
    } catch (e) {
      this.markDown('ping failed');
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Sends one request; rejects with LinkDownError if the link goes down first, with the rebuilt
   * remote error, or with `signal.reason` if the signal aborts first (the request may still be
   * applied then; its answer is ignored).
   */
  call(method: string, params: unknown, signal?: SignalLike): Promise<unknown> {
    if (this.#down !== null) return Promise.reject(new LinkDownError(this.#down, false));
    if (signal?.aborted) return Promise.reject(signal.reason);
    const id = this.#nextId++;
    return new Promise<unknown>((resolve, reject) => {
      const pending: Pending = { resolve, reject, sent: false, signal, onAbort: undefined };
      if (signal !== undefined) {
        pending.onAbort = () => {
          this.#pending.delete(id);
          reject(signal.reason);
        };
        signal.addEventListener('abort', pending.onAbort, { once: true });
      }
      this.#pending.set(id, pending);
      this.#sender.push('', { jsonrpc: '2.0', id, method, params });
    });
  }

  #settle(p: Pending): void {
    if (p.onAbort !== undefined) p.signal?.removeEventListener('abort', p.onAbort);
  }

  async #readReplies(): Promise<void> {
    try {
      for await (const frames of this.#dealer) {
        this.#lastSeen = Date.now();
        const body = frames[frames.length - 1];
        if (body === undefined) continue;
        let parsed: unknown;
        try {
          parsed = JSON.parse(body.toString('utf8'));
        } catch {
          this.#log.warn({}, 'dbproxy: unparseable reply dropped');
          continue;
        }
        const list = (Array.isArray(parsed) ? parsed : [parsed]) as JsonRpcResponse[];
        for (const r of list) {
          if (typeof r?.id !== 'number') {
            this.#log.warn({ reply: 'error' in r ? r.error : null }, 'dbproxy: reply without a request id');
            continue;
          }
          const p = this.#pending.get(r.id);
          if (p === undefined) continue;
          this.#pending.delete(r.id);
          this.#settle(p);
          if ('error' in r) p.reject(errorFromWire(r.error) satisfies DbProxyError);
          else p.resolve(r.result);
        }
      }
    } catch (e) {
      if (this.#down === null) this.#log.debug({ err: e }, 'dbproxy: reply loop ended');
    }
  }

  async #readPublications(): Promise<void> {
    try {
      for await (const [topicBuf, body] of this.#sub) {
        this.#lastSeen = Date.now();
        if (topicBuf === undefined || body === undefined) continue;
        const topic = topicBuf.toString('utf8');
        let payload: unknown;
        try {
          payload = JSON.parse(body.toString('utf8'));
        } catch {
          continue;
        }
        if (topic === TOPIC_HEARTBEAT) this.#events.onHeartbeat(payload as HeartbeatPublication);
        else if (topic === TOPIC_COMMIT) this.#events.onCommit(payload as CommitPublication);
        else if (topic === TOPIC_BYE) this.markDown(BYE_REASON);
      }
    } catch (e) {
      if (this.#down === null) this.#log.debug({ err: e }, 'dbproxy: subscription loop ended');
    }
  }

  /** Takes the link down for good (idempotent): rejects what is outstanding and closes the sockets. */
  markDown(reason: string): void {
    if (this.#down !== null) return;
    this.#down = reason;
    if (this.#watchdog !== null) clearInterval(this.#watchdog);
    this.#sender.clear();
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) {
      this.#settle(p);
      p.reject(new LinkDownError(reason, p.sent));
    }
    try {
      this.#dealer.close();
    } catch {}
    try {
      this.#sub.close();
    } catch {}
    this.#events.onDown(this, reason);
  }
}
