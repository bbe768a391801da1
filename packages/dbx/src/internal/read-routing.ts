import { type DbxError, isDbxError } from '../errors.js';
import type { ResolvedClusterOptions } from '../options.js';
import type { NodeClass } from '../types.js';
import { type ExecContext, type Lease, runStatement } from './exec.js';
import type { Topology } from './health.js';
import type { Leases } from './leases.js';
import { maxLsn, parseLsn } from './lsn.js';
import type { Node } from './node.js';
import { sleep } from './util.js';

/**
 * Where a read goes: round-robin over healthy replicas within the lag bound, the writer as fallback,
 * and for a read-your-writes token a replica that has replayed it (asked directly when health data is
 * older than the write).
 */
export class ReadRouter {
  readonly #topology: Topology;
  readonly #leases: Leases;
  readonly #options: Readonly<ResolvedClusterOptions>;
  readonly #ctx: ExecContext;
  #rr = 0;
  #fallbacks = 0;

  constructor(
    topology: Topology,
    leases: Leases,
    options: Readonly<ResolvedClusterOptions>,
    ctx: ExecContext,
  ) {
    this.#topology = topology;
    this.#leases = leases;
    this.#options = options;
    this.#ctx = ctx;
  }

  /** Reads sent to the writer because no replica could take them. */
  get fallbacks(): number {
    return this.#fallbacks;
  }

  /** Within the lag bounds: the cluster's, or `maxLagMs` given for this read. */
  #lagOk(n: Node, maxLagMs: number | null | undefined): boolean {
    const { maxReplicaLagBytes } = this.#options;
    const maxReplicaLagMs = maxLagMs === undefined ? this.#options.maxReplicaLagMs : maxLagMs;
    if (maxReplicaLagMs !== null && n.lagMs !== null && n.lagMs > maxReplicaLagMs) return false;
    if (maxReplicaLagBytes !== null && n.lagBytes !== null && n.lagBytes > maxReplicaLagBytes) return false;
    return true;
  }

  #pick(nodes: Node[]): Node {
    const n = nodes[this.#rr++ % nodes.length] as Node;
    if (this.#rr > 1e9) this.#rr = 0;
    return n;
  }

  /** Checks on `lease` (a replica) that it replayed `token`, polling until `deadline` (epoch ms). */
  async #caughtUp(
    lease: Lease,
    token: bigint,
    deadline: number,
    signal: AbortSignal | undefined,
  ): Promise<boolean> {
    for (;;) {
      const r = await runStatement(
        this.#ctx,
        lease,
        { method: 'replayPosition', sql: 'select pg_last_wal_replay_lsn()::text as lsn' },
        signal,
      );
      const text = (Array.isArray(r) ? r[0] : r)?.rows[0]?.lsn as string | null | undefined;
      if (text) {
        const lsn = parseLsn(text);
        lease.node.lsn = maxLsn(lease.node.lsn, lsn);
        if (lsn >= token) return true;
      } else {
        return false; // no longer a standby: let the caller route again
      }
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await sleep(Math.min(10, left), signal);
    }
  }

  /** Healthy replicas within the lag bound that have not failed this read (plus the writer for 'any'). */
  #readCandidates(
    klass: NodeClass | undefined,
    tried: Set<Node>,
    maxLagMs: number | null | undefined,
  ): Node[] {
    const out: Node[] = [];
    for (const n of this.#topology.nodes) {
      if (n.healthy && n.role === 'replica' && !tried.has(n) && this.#lagOk(n, maxLagMs)) out.push(n);
    }
    const w = this.#topology.writer;
    if (klass === 'any' && w?.healthy && !tried.has(w)) out.push(w);
    return out;
  }

  /**
   * The node for a read that needs no particular WAL position: the writer for 'primary'; else
   * round-robin over the candidates; else (default class only) the writer as fallback. Null = none.
   */
  readNode(
    klass: NodeClass | undefined,
    tried: Set<Node>,
    maxLagMs: number | null | undefined,
    candidates?: Node[],
  ): Node | null {
    const w = this.#topology.writer;
    if (klass === 'primary') return w?.healthy ? w : null;
    const c = candidates ?? this.#readCandidates(klass, tried, maxLagMs);
    if (c.length > 0) return this.#pick(c);
    if (klass === 'replica' || !w?.healthy) return null;
    this.#fallbacks++;
    return w;
  }

  #noReadNode(klass: NodeClass | undefined): DbxError {
    if (klass !== 'replica') return this.#leases.noWriter();
    return this.#leases.noNode('no healthy replica within the lag bound');
  }

  /** Chooses and leases a node for a read. `tried` holds nodes that already failed this read. */
  async leaseForRead(
    klass: NodeClass | undefined,
    token: bigint | null,
    tried: Set<Node>,
    maxLagMs: number | null | undefined,
    signal: AbortSignal | undefined,
  ): Promise<Lease> {
    let candidates: Node[] | undefined;
    if (token !== null && klass !== 'primary') {
      candidates = this.#readCandidates(klass, tried, maxLagMs);
      const known = candidates.filter((n) => n.role === 'primary' || (n.lsn !== null && n.lsn >= token));
      if (known.length > 0) {
        candidates = known;
      } else {
        // Health data is older than the write: ask the replicas themselves (GitLab's "find caught-up
        // replica"). The wait bound is for the whole read, not per replica.
        const deadline = Date.now() + this.#options.readYourWritesWaitMs;
        const start = this.#rr++;
        for (let i = 0; i < candidates.length; i++) {
          const n = candidates[(start + i) % candidates.length] as Node;
          tried.add(n);
          let lease: Lease;
          try {
            lease = await this.#leases.acquire(n, signal);
          } catch (e) {
            if (isDbxError(e) && e.code === 'DBX_QUERY_CANCELLED') throw e;
            continue;
          }
          let ok = false;
          try {
            ok = await this.#caughtUp(lease, token, deadline, signal);
          } catch (e) {
            this.#leases.release(lease);
            if (isDbxError(e) && e.code === 'DBX_QUERY_CANCELLED') throw e;
            continue;
          }
          if (ok) return lease;
          this.#leases.release(lease);
        }
        candidates = [];
      }
    }
    const node = this.readNode(klass, tried, maxLagMs, candidates);
    if (node === null) throw this.#noReadNode(klass);
    tried.add(node);
    return this.#leases.acquire(node, signal);
  }
}
