/** The primary's sockets: a ROUTER answering JSON-RPC and a PUB for heartbeats and commits. */
import { Publisher, Router } from 'zeromq';
import { DbProxyError, wireError } from '../errors.js';
import type { Logger } from '../options.js';
import { errorResponse, type JsonRpcRequest, type JsonRpcResponse, requestSchema } from '../protocol.js';
import { CoalescingSender, encodeFrame } from './coalescing-sender.js';

interface Peer {
  key: string;
  peer: Buffer;
}

export type RequestHandler = (method: string, params: unknown) => unknown | Promise<unknown>;

/**
 * The primary's sockets: a ROUTER answering JSON-RPC requests (one object, or an array of them, per
 * frame; answers to one peer are coalesced the same way) and a PUB for heartbeats and commits.
 * Requests are handled concurrently; replies are matched by `id` on the caller's side.
 */
export class RpcServer {
  readonly #router: Router;
  readonly #pub: Publisher;
  /** Answers keyed by the peer's routing id (latin1); each item carries the id frame itself. */
  readonly #replies: CoalescingSender<{ peer: Buffer; response: JsonRpcResponse }>;
  readonly #handle: RequestHandler;
  readonly #log: Logger;
  #pubQueue: Array<[string, string]> = [];
  #pubRunning = false;
  #closed = false;
  #loop: Promise<void> | null = null;

  constructor(handle: RequestHandler, log: Logger) {
    this.#handle = handle;
    this.#log = log;
    // linger 0 on the router: an answer to a dead peer is worthless; the PUB lingers briefly so a
    // final "bye" leaves before close.
    this.#router = new Router({
      linger: 0,
      mandatory: false,
      sendHighWaterMark: 100_000,
      receiveHighWaterMark: 100_000,
    });
    this.#pub = new Publisher({ linger: 200, sendHighWaterMark: 100_000 });
    this.#replies = new CoalescingSender<{ peer: Buffer; response: JsonRpcResponse }>(
      async (_to, items) => {
        const body = encodeFrame(
          items.map((i) => i.response),
          (r, e) => {
            // never expected (results are checked when recorded), but one bad answer must not cost
            // the peer's other answers their frame
            this.#log.error({ err: e }, 'dbproxy: answer not serialisable');
            return JSON.stringify(
              errorResponse(
                r.id,
                wireError('INTERNAL', 'the answer could not be serialised', { applied: 'unknown' }),
              ),
            );
          },
        );
        if (body !== null) await this.#router.send([items[0]!.peer, body]);
      },
      (e) => this.#log.debug({ err: e }, 'dbproxy: reply not sent'),
    );
  }

  async bind(rpcEndpoint: string, pubEndpoint: string): Promise<void> {
    await this.#router.bind(rpcEndpoint);
    await this.#pub.bind(pubEndpoint);
    this.#loop = this.#receiveLoop();
  }

  publish(topic: string, payload: unknown): void {
    if (this.#closed) return;
    this.#pubQueue.push([topic, JSON.stringify(payload)]);
    if (!this.#pubRunning) void this.#drainPub();
  }

  async #drainPub(): Promise<void> {
    this.#pubRunning = true;
    try {
      while (this.#pubQueue.length > 0 && !this.#pub.closed) {
        const msg = this.#pubQueue.shift()!;
        try {
          await this.#pub.send(msg);
        } catch (e) {
          this.#log.debug({ err: e }, 'dbproxy: publish failed');
        }
      }
    } finally {
      this.#pubRunning = false;
    }
  }

  /** Waits (bounded) until queued replies and publications are handed to the sockets. */
  async flush(timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs;
    while ((this.#pubQueue.length > 0 || this.#pubRunning || this.#replies.busy) && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 2));
    }
  }

  async #receiveLoop(): Promise<void> {
    try {
      for await (const frames of this.#router) {
        const [peer, body] = frames;
        if (peer === undefined || body === undefined) continue;
        const from = { key: peer.toString('latin1'), peer };
        let parsed: unknown;
        try {
          parsed = JSON.parse(body.toString('utf8'));
        } catch {
          this.#reply(
            from,
            errorResponse(null, wireError('PARSE_ERROR', 'parse error: the frame is not JSON')),
          );
          continue;
        }
        if (Array.isArray(parsed) && parsed.length === 0) {
          this.#reply(
            from,
            errorResponse(null, wireError('INVALID_REQUEST', 'invalid request: empty batch')),
          );
          continue;
        }
        const list = Array.isArray(parsed) ? parsed : [parsed];
        for (const item of list) this.#dispatch(from, item);
      }
    } catch (e) {
      if (!this.#closed) this.#log.error({ err: e }, 'dbproxy: rpc receive loop failed');
    }
  }

  #reply(to: Peer, response: JsonRpcResponse): void {
    if (!this.#closed) this.#replies.push(to.key, { peer: to.peer, response });
  }

  #dispatch(peer: Peer, raw: unknown): void {
    const req = requestSchema.safeParse(raw);
    if (!req.success) {
      const id = typeof raw === 'object' && raw !== null ? (raw as { id?: unknown }).id : undefined;
      this.#reply(
        peer,
        errorResponse(
          typeof id === 'number' || typeof id === 'string' ? id : null,
          wireError('INVALID_REQUEST', 'invalid request: not a JSON-RPC 2.0 request object', {
            details: { issues: req.error.issues.map((i) => ({ path: i.path, message: i.message })) },
          }),
        ),
      );
      return;
    }
    void this.#answer(peer, req.data);
  }

  /** Runs the request; answers it unless it is a notification (no `id`). */
  async #answer(peer: Peer, req: JsonRpcRequest): Promise<void> {
    let response: JsonRpcResponse;
    try {
      const result = await this.#handle(req.method, req.params);
      if (req.id === undefined) return;
      response = { jsonrpc: '2.0', id: req.id, result: result === undefined ? null : result };
    } catch (e) {
      const err =
        e instanceof DbProxyError
          ? e
          : wireError('INTERNAL', 'internal error', { applied: 'unknown', cause: e });
      if (!(e instanceof DbProxyError)) this.#log.error({ err: e }, 'dbproxy: handler failed');
      if (req.id === undefined) return;
      response = errorResponse(req.id, err);
    }
    this.#reply(peer, response);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#replies.clear();
    this.#router.close();
    this.#pub.close();
    await this.#loop;
  }
}
