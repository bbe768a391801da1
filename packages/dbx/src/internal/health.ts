import { healthChannel } from '../channels.js';
import { DbxError } from '../errors.js';
import type { Logger, ResolvedClusterOptions } from '../options.js';
import type { ClusterEventMap, NodeRole } from '../types.js';
import { Node } from './node.js';
import { errorMessage } from './util.js';

interface PrimarySample {
  lsn: bigint;
  at: number;
}

const MAX_PRIMARY_SAMPLES = 512;

type Emit = <E extends keyof ClusterEventMap>(event: E, payload: ClusterEventMap[E]) => void;

/** One pg pool per configured node, named `primary`, `replica1`, ... unless the config names it. */
export function createNodes(
  options: ResolvedClusterOptions,
  onPoolError: (node: Node, e: Error) => void,
): Node[] {
  const configs = [options.primary, ...options.replicas];
  const names = configs.map((c, i) =>
    typeof c === 'object' && c.name !== undefined ? c.name : i === 0 ? 'primary' : `replica${i}`,
  );
  if (new Set(names).size !== names.length) {
    throw new DbxError('DBX_INVALID_OPTIONS', 'node names must be unique', { details: { names } });
  }
  return configs.map(
    (c, i) => new Node(c, i === 0 ? 'primary' : 'replica', names[i] as string, options, onPoolError),
  );
}

/**
 * What the cluster knows about its nodes: background health checks (role, WAL position, lag), the
 * fast re-check after a connection error, and the election of the write target.
 */
export class Topology {
  readonly nodes: readonly Node[];
  readonly #options: Readonly<ResolvedClusterOptions>;
  readonly #logger: Logger;
  readonly #emit: Emit;
  #writer: Node | null;
  #samples: PrimarySample[] = [];
  #splitBrainWarned = false;
  #stopped = false;

  constructor(nodes: readonly Node[], options: Readonly<ResolvedClusterOptions>, logger: Logger, emit: Emit) {
    this.nodes = nodes;
    this.#options = options;
    this.#logger = logger;
    this.#emit = emit;
    this.#writer = nodes[0] ?? null;
  }

  /** The node writes go to, or null when no healthy primary is known. */
  get writer(): Node | null {
    return this.#writer;
  }

  /** Starts the health checks of every node. */
  start(): void {
    for (const n of this.nodes) this.#scheduleCheck(n, 0);
  }

  /** Stops scheduling checks (synchronously: no check starts after this returns). */
  stop(): void {
    this.#stopped = true;
    for (const n of this.nodes) {
      if (n.timer) clearTimeout(n.timer);
      n.timer = null;
    }
  }

  /** After `stop()`: waits for checks still running, then closes the health connections. */
  async settle(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.checking?.catch(() => {})));
    for (const n of this.nodes) n.dropHealthClient();
  }

  #scheduleCheck(node: Node, delayMs: number): void {
    if (this.#stopped) return;
    if (node.timer) clearTimeout(node.timer);
    node.timer = setTimeout(() => {
      node.timer = null;
      this.runCheck(node).catch(() => {});
    }, delayMs);
    node.timer.unref();
  }

  /** Checks `node` now (joining a check already running), then schedules the next one. */
  runCheck(node: Node): Promise<void> {
    if (node.checking) return node.checking;
    const p = (async () => {
      try {
        await this.#checkNode(node);
      } finally {
        node.checking = null;
        const hc = this.#options.healthCheck;
        // While a node fails but is not yet down, confirm quickly; otherwise keep the normal pace.
        const failing = node.consecutiveFailures > 0 && node.healthy;
        this.#scheduleCheck(node, failing ? hc.fastRecheckMs : hc.intervalMs);
      }
    })();
    node.checking = p;
    return p;
  }

  /** A connection error on `node`: re-check it at once instead of waiting for the interval. */
  onConnectionError(node: Node, e: unknown): void {
    if (this.#stopped) return;
    node.recordFailure(e);
    // The writer failing may mean a failover: look for a promoted node right away, not at the next tick.
    if (node === this.#writer) this.requestCheckAll();
    else this.#recheckSoon(node);
  }

  /** Re-probes every node's role soon (a standby answered a write, or no writer is known). */
  requestCheckAll(): void {
    for (const n of this.nodes) this.#recheckSoon(n);
  }

  /** Schedules a check of `node` no sooner than `fastRecheckMs` after its last one. */
  #recheckSoon(node: Node): void {
    if (this.#stopped || node.checking) return;
    const since = node.lastCheckAt === null ? Number.POSITIVE_INFINITY : Date.now() - node.lastCheckAt;
    const fast = this.#options.healthCheck.fastRecheckMs;
    this.#scheduleCheck(node, since >= fast ? 0 : fast - since);
  }

  async #checkNode(node: Node): Promise<void> {
    if (this.#stopped) return;
    const hc = this.#options.healthCheck;
    let result: Awaited<ReturnType<Node['check']>>;
    try {
      result = await node.check(hc.timeoutMs);
    } catch (e) {
      if (this.#stopped) return;
      node.consecutiveFailures++;
      node.lastCheckAt = Date.now();
      node.recordFailure(e);
      if (node.healthy && node.consecutiveFailures >= hc.failuresBeforeDown) {
        node.healthy = false;
        this.#logger.warn(
          { node: node.name, role: node.role, failures: node.consecutiveFailures, err: errorMessage(e) },
          'dbx: node down',
        );
        this.#emit('nodeDown', {
          type: 'nodeDown',
          node: node.name,
          role: node.role,
          error: errorMessage(e),
        });
        this.#electWriter(null);
      }
      if (healthChannel.hasSubscribers) {
        healthChannel.publish({ node: node.name, ok: false, healthy: node.healthy, error: errorMessage(e) });
      }
      return;
    }
    if (this.#stopped) return;
    node.latencyMs = result.latencyMs;
    node.lastCheckAt = Date.now();
    node.consecutiveFailures = 0;
    node.lastError = null;
    const newRole: NodeRole = result.inRecovery ? 'replica' : 'primary';
    let change: { from: NodeRole; to: NodeRole } | null = null;
    if (newRole !== node.role) {
      change = { from: node.role, to: newRole };
      if (newRole === 'primary') node.promotedAt = Date.now();
      node.role = newRole;
    }
    if (!node.healthy) {
      node.healthy = true;
      this.#logger.info({ node: node.name, role: node.role }, 'dbx: node up');
      this.#emit('nodeUp', { type: 'nodeUp', node: node.name, role: node.role });
    }
    if (newRole === 'primary') {
      node.lsn = result.lsn;
      node.lagBytes = 0;
      node.lagMs = 0;
    }
    this.#electWriter(change ? { node, ...change } : null);
    if (newRole === 'primary' && node === this.#writer && result.lsn !== null) {
      this.#samples.push({ lsn: result.lsn, at: Date.now() });
      if (this.#samples.length > MAX_PRIMARY_SAMPLES) this.#samples.shift();
    }
    if (newRole === 'replica') this.#updateLag(node, result.lsn);
    if (healthChannel.hasSubscribers) {
      healthChannel.publish({
        node: node.name,
        ok: true,
        healthy: node.healthy,
        role: node.role,
        latencyMs: node.latencyMs,
        lagBytes: node.lagBytes,
        lagMs: node.lagMs,
      });
    }
  }

  /**
   * Lag of a replica measured against the primary's WAL positions: bytes behind the newest primary
   * sample, and time since the primary first passed the replica's replay position (hasql only looks
   * at the standby's receive-replay gap, which reads 0 when the standby stops receiving).
   */
  #updateLag(node: Node, replay: bigint | null): void {
    // Not max(old, new): after a demotion the old insert position says nothing about replay.
    node.lsn = replay;
    const latest = this.#samples[this.#samples.length - 1];
    if (replay === null || latest === undefined) {
      node.lagBytes = null;
      node.lagMs = null;
      return;
    }
    if (replay >= latest.lsn) {
      node.lagBytes = 0;
      node.lagMs = 0;
      return;
    }
    node.lagBytes = Number(latest.lsn - replay);
    const first = this.#samples.find((s) => s.lsn > replay) ?? latest;
    node.lagMs = Date.now() - first.at;
  }

  /**
   * Picks the write target: a healthy node reporting it is not in recovery. When several do (a
   * replica was promoted while the old primary still runs), the most recently promoted wins: the
   * old primary is presumed fenced.
   */
  #electWriter(change: { node: Node; from: NodeRole; to: NodeRole } | null): void {
    const prev = this.#writer;
    const primaries = this.nodes.filter((n) => n.healthy && n.role === 'primary');
    let next: Node | null = null;
    for (const n of primaries) {
      if (
        next === null ||
        n.promotedAt > next.promotedAt ||
        (n.promotedAt === next.promotedAt && n === prev && next !== prev)
      ) {
        next = n;
      }
    }
    if (primaries.length > 1 && !this.#splitBrainWarned) {
      this.#splitBrainWarned = true;
      this.#logger.warn(
        { nodes: primaries.map((n) => n.name), writer: next?.name ?? null },
        'dbx: more than one node reports being a primary; writing to the most recently promoted',
      );
    }
    if (next !== prev) {
      this.#writer = next;
      this.#samples = [];
      this.#logger.warn(
        { from: prev?.name ?? null, to: next?.name ?? null },
        next ? `dbx: writer is now ${next.name}` : 'dbx: no healthy primary',
      );
    }
    if (change) {
      this.#logger.warn(
        { node: change.node.name, from: change.from, to: change.to },
        `dbx: role change: ${change.node.name} ${change.from} -> ${change.to}`,
      );
      this.#emit('roleChange', {
        type: 'roleChange',
        node: change.node.name,
        from: change.from,
        to: change.to,
        previousWriter: prev?.name ?? null,
        writer: this.#writer?.name ?? null,
      });
    } else if (next !== prev && next !== null) {
      this.#emit('roleChange', {
        type: 'roleChange',
        node: next.name,
        from: next.role,
        to: next.role,
        previousWriter: prev?.name ?? null,
        writer: next.name,
      });
    }
  }
}
