import type pg from 'pg';
import { DbxError, isDbxError } from '../errors.js';
import { type Lease, markNotSent, type OnceHooks } from './exec.js';
import type { Topology } from './health.js';
import type { Node } from './node.js';
import { errorMessage, raceAbort } from './util.js';

/** Pool clients that carry dbx's error listener, and those that reported a connection error. */
const guarded = new WeakSet<pg.PoolClient>();
const broken = new WeakSet<pg.PoolClient>();

/** Checking clients out of the nodes' pools and back in, with the errors a failed checkout makes. */
export class Leases {
  readonly #topology: Topology;

  constructor(topology: Topology) {
    this.#topology = topology;
  }

  /** Checks a client out of `node`'s pool. Failures here never sent anything: always safe to retry. */
  acquire(node: Node, signal: AbortSignal | undefined): Promise<Lease> {
    const connecting = signal
      ? raceAbort(node.pool.connect(), signal, (c) => c.release())
      : node.pool.connect();
    return connecting.then(
      (client) => {
        this.#guard(node, client);
        return { node, client, discard: false };
      },
      (e: unknown) => {
        if (isDbxError(e) && e.code === 'DBX_QUERY_CANCELLED') throw e;
        throw this.#connectFailed(node, e);
      },
    );
  }

  /**
   * pg-pool listens for errors only while a client is idle; one arriving while it is checked out and
   * between statements would otherwise be an uncaught exception. Each client gets one listener.
   */
  readonly #guard = (node: Node, client: pg.PoolClient): void => {
    if (guarded.has(client)) return;
    guarded.add(client);
    client.on('error', (e) => {
      broken.add(client);
      this.#topology.onConnectionError(node, e);
    });
  };

  readonly #connectFailed = (node: Node, e: unknown): DbxError => {
    node.errors++;
    this.#topology.onConnectionError(node, e);
    return markNotSent(
      new DbxError('DBX_CONNECTION_FAILED', `could not connect to node ${node.name}: ${errorMessage(e)}`, {
        retryable: true,
        cause: e,
        details: { node: node.name },
      }),
    );
  };

  /** The same checkout rules for the hot path (`runOnce`). */
  readonly hooks: OnceHooks = {
    guard: (node, client) => this.#guard(node, client),
    connectFailed: (node, e) => this.#connectFailed(node, e),
    isBroken: (client) => broken.has(client),
  };

  release(lease: Lease): void {
    lease.client.release(lease.discard || broken.has(lease.client) ? true : undefined);
  }

  /** DBX_NO_HEALTHY_NODE, never sent: safe to retry. */
  noNode(message: string): DbxError {
    return markNotSent(
      new DbxError('DBX_NO_HEALTHY_NODE', message, {
        retryable: true,
        details: {
          nodes: this.#topology.nodes.map((n) => ({ name: n.name, role: n.role, healthy: n.healthy })),
        },
      }),
    );
  }

  /** No writer known: asks every node for its role again. */
  noWriter(): DbxError {
    this.#topology.requestCheckAll();
    return this.noNode('no healthy primary to write to');
  }

  leaseWriter(signal: AbortSignal | undefined): Promise<Lease> {
    const w = this.#topology.writer;
    if (!w?.healthy) return Promise.reject(this.noWriter());
    return this.acquire(w, signal);
  }
}
