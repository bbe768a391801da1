/**
 * The election of one process (internal/election.ts is the lock itself): at start, win the lock and
 * promote, or become a secondary whose loop follows the live primary and, whenever it is gone, tries
 * the lock again, ends a stalled holder, or finds the next primary. It holds what that decides: the
 * lock, the lease, this process's `Primary` or the `Link` it follows, the epoch, and their counters.
 * The role itself, and what a role change tells the world, stay with the proxy (`ElectionHost`).
 */
import diagnostics_channel from 'node:diagnostics_channel';
import { type Emitter, sleep } from '@x/core';
import { ELECTION_CHANNEL, type ElectionPhase } from '../channels.js';
import type { Logger, ResolvedDbProxyOptions } from '../options.js';
import type { Role } from '../types.js';
import type { ChangeFeed } from './change-feed.js';
import { type ElectionLock, lockPathFor, tryAcquireElectionLock } from './election.js';
import { leasePathFor, readLease, startLease } from './lease.js';
import { BYE_REASON, Link, REFUSED_REASON } from './link.js';
import { pidAlive } from './pid.js';
import { Primary } from './primary.js';
import {
  databaseKey,
  ensureRuntimeDir,
  infoPathFor,
  type PrimaryInfo,
  readPrimaryInfo,
  removeEndpointFiles,
  resolveDatabasePath,
} from './runtime-dir.js';

const electionChannel = diagnostics_channel.channel(ELECTION_CHANNEL);

/** After losing its primary, a secondary retries the election this often ... */
const FAST_ELECTION_POLL_MS = 5;
/** ... for this long; then every `electionPollMs`. */
const FAST_ELECTION_WINDOW_MS = 1_000;

/** What the election needs of the proxy it runs for. */
export interface ElectionHost {
  readonly options: Readonly<ResolvedDbProxyOptions>;
  readonly feed: ChangeFeed;
  /** Requests served for other processes (kept by the proxy across epochs). */
  readonly served: { requests: number; errors: number };
  /** Emitted whenever the role, the link or the primary changes (by the proxy and by the loop). */
  readonly stateChanged: Emitter<{ changed: undefined }>;
  /** Aborted once the proxy closes: no more elections. */
  readonly stopped: AbortSignal;
  role(): Role;
  setRole(role: Role): void;
}

export class ElectionLoop {
  readonly #host: ElectionHost;
  readonly #options: Readonly<ResolvedDbProxyOptions>;
  readonly #log: Logger;

  #dbPath = '';
  #runtimeDir = '';
  #key = '';
  #infoPath = '';
  #lockPath = '';
  #leasePath = '';
  /** The holder's lease beat while this process holds the election lock. */
  #lease: { stop(): Promise<void> } | null = null;
  /** As of the last election attempt: how long until the lock holder's lease counts as stalled. */
  #leaseStaleInMs = Number.POSITIVE_INFINITY;
  /** The epoch of the last lease seen: a new one means a promotion is under way. */
  #leaseEpoch = 0;

  #lock: ElectionLock | null = null;
  #primary: Primary | null = null;
  #link: Link | null = null;
  #epoch = 0;
  #retiredEpoch = 0;
  #supervisor: Promise<void> | null = null;

  #failovers = 0;
  #promotions = 0;
  #stalledEnded = 0;

  constructor(host: ElectionHost) {
    this.#host = host;
    this.#options = host.options;
    this.#log = host.options.logger;
  }

  /** This process as primary, once promoted (until it closes). */
  get primary(): Primary | null {
    return this.#primary;
  }

  /** The link to the primary this process follows, if any. */
  get link(): Link | null {
    return this.#link;
  }

  /** The epoch of the primary this process follows or is (0 before any). */
  get epoch(): number {
    return this.#epoch;
  }

  /** Times this process moved to a newer primary (by promotion or by following one). */
  get failovers(): number {
    return this.#failovers;
  }

  get promotions(): number {
    return this.#promotions;
  }

  /** Stalled primaries this process ended to take over. */
  get stalledEnded(): number {
    return this.#stalledEnded;
  }

  /** Creates the runtime directory and resolves the paths keyed by the database; returns its real path. */
  resolvePaths(): string {
    this.#runtimeDir = ensureRuntimeDir(this.#options.runtimeDir);
    this.#dbPath = resolveDatabasePath(this.#options.databasePath);
    this.#key = databaseKey(this.#dbPath);
    this.#infoPath = infoPathFor(this.#dbPath);
    this.#lockPath = lockPathFor(this.#dbPath);
    this.#leasePath = leasePathFor(this.#dbPath);
    return this.#dbPath;
  }

  /**
   * Joins the election (after `resolvePaths`): promotes at once when the lock is free, else becomes a
   * secondary whose change events start after `committedSeqNow()` (what the file holds now, 0 for a
   * file no primary created yet) and starts the loop. A failed promotion releases the lock and rejects.
   */
  async start(committedSeqNow: () => number): Promise<void> {
    const lock = tryAcquireElectionLock(this.#lockPath);
    if (lock !== null) {
      try {
        await this.#promote(lock);
      } catch (e) {
        lock.release(); // never keep the election while unable to serve
        this.#lock = null;
        throw e;
      }
      return;
    }
    this.#host.feed.deliveredSeq = committedSeqNow();
    this.#host.setRole('secondary');
    this.#supervisor = this.#supervise();
  }

  /** Takes the link to the primary down for good, if there is one. */
  dropLink(reason: string): void {
    this.#link?.markDown(reason);
  }

  /**
   * The election's part of close, once intake has stopped (the host's signal aborted): a promotion
   * already under way finishes first, and is then shut down like any primary (steps 2 to 4, see
   * `Primary.close`). 5. The election is released last, so no successor starts while this process
   * still writes; the lease beats until then, so nobody takes a slow close for a stall.
   */
  async close(drainTimeoutMs: number): Promise<void> {
    await this.#supervisor?.catch(() => {});
    const p = this.#primary;
    if (p !== null) {
      await p.close(drainTimeoutMs);
      this.#primary = null;
    }
    this.#lock?.release();
    this.#lock = null;
    await this.#lease?.stop();
    this.#lease = null;
  }

  #phase(phase: ElectionPhase, epoch: number, extra: Record<string, unknown> = {}): void {
    if (electionChannel.hasSubscribers)
      electionChannel.publish({ phase, epoch, instanceId: this.#options.instanceId, ...extra });
  }

  /** The secondary's loop: follow a live primary; whenever it is gone, try the lock, else find the next one. */
  async #supervise(): Promise<void> {
    const signal = this.#host.stopped;
    const poll = this.#options.electionPollMs;
    // While no primary is known, for a short window the lock and the info file are retried every
    // few ms (a successor takes tens of ms to announce itself, and a loser that slept a whole poll
    // interval would add that to its failover); later, every electionPollMs.
    let leaderlessSince = Date.now();
    // An epoch whose endpoint refused us is dead; its info file may stay until the next primary
    // announces itself, so it is not tried again for a poll interval.
    let refused = { epoch: 0, until: 0 };
    let seenLeaseEpoch = this.#leaseEpoch;
    while (!signal.aborted && this.#host.role() === 'secondary') {
      let lock: ElectionLock | null = null;
      try {
        lock = tryAcquireElectionLock(this.#lockPath);
      } catch (e) {
        this.#log.warn({ err: e }, 'dbproxy: election attempt failed');
      }
      if (signal.aborted) {
        lock?.release();
        return;
      }
      if (lock === null && this.#endStalledPrimary()) {
        // it dies at once (SIGKILL cannot be caught) and the OS drops its lock: try again soon
        await sleep(5, { signal }).catch(() => {});
        continue;
      }
      if (lock !== null) {
        try {
          await this.#promote(lock);
          return;
        } catch (e) {
          this.#log.error({ err: e }, 'dbproxy: promotion failed; releasing the lock');
          lock.release();
          this.#lock = null;
          this.#host.setRole('secondary');
        }
      }
      const info = readPrimaryInfo(this.#infoPath);
      if (
        info !== null &&
        info.dbPath === this.#dbPath &&
        info.epoch > this.#retiredEpoch &&
        !(info.epoch === refused.epoch && Date.now() < refused.until) &&
        pidAlive(info.pid)
      ) {
        const link = await this.#follow(info);
        if (link.downReason === REFUSED_REASON) refused = { epoch: info.epoch, until: Date.now() + poll };
        if (!link.isDown) {
          await new Promise<void>((resolve) => {
            const check = (): void => {
              if (link.isDown || signal.aborted) resolve();
              else this.#host.stateChanged.once('changed', check);
            };
            check();
          });
          if (this.#link === link) this.#link = null;
          // A primary that said bye is leaving; never follow that epoch again.
          if (link.downReason === BYE_REASON) this.#retiredEpoch = Math.max(this.#retiredEpoch, link.epoch);
          leaderlessSince = Date.now();
          continue; // the primary is gone or changed: try the lock at once
        }
      }
      if (this.#leaseEpoch !== seenLeaseEpoch) {
        // someone won the lock since (after a crash, or after ending a stalled primary): it will
        // announce itself within milliseconds
        seenLeaseEpoch = this.#leaseEpoch;
        leaderlessSince = Date.now();
      }
      const fast = Date.now() - leaderlessSince < FAST_ELECTION_WINDOW_MS;
      // no later than the moment the holder's lease would count as stalled
      const wait = Math.min(
        fast ? FAST_ELECTION_POLL_MS : poll / 2 + Math.random() * poll,
        this.#leaseStaleInMs + 1,
      );
      try {
        await sleep(wait, { signal });
      } catch {
        return;
      }
    }
  }

  /**
   * The lock is held by someone whose lease has been silent for longer than the stall timeout: the
   * holder is stopped (not merely busy, its beat comes from a worker thread). End it, so its lock is
   * released and it can never commit again (its coordinator is fenced by epoch as well). Returns
   * whether it sent the signal.
   */
  #endStalledPrimary(): boolean {
    const lease = readLease(this.#leasePath);
    this.#leaseStaleInMs = Number.POSITIVE_INFINITY;
    this.#leaseEpoch = lease?.epoch ?? this.#leaseEpoch;
    if (lease === null || lease.pid === process.pid) return false;
    if (lease.silentMs <= this.#options.heartbeat.stallTimeoutMs) {
      this.#leaseStaleInMs = this.#options.heartbeat.stallTimeoutMs - lease.silentMs;
      return false;
    }
    if (!pidAlive(lease.pid)) return false;
    this.#log.warn(
      { pid: lease.pid, epoch: lease.epoch, silentMs: Math.round(lease.silentMs) },
      'dbproxy: the primary has stalled; ending it to take over',
    );
    try {
      process.kill(lease.pid, 'SIGKILL');
      this.#stalledEnded++;
      return true;
    } catch (e) {
      this.#log.error({ err: e, pid: lease.pid }, 'dbproxy: could not end the stalled primary');
      return false;
    }
  }

  /** Connects to the primary `info` names; the link comes back down if that failed (see `downReason`). */
  async #follow(info: PrimaryInfo): Promise<Link> {
    const link = new Link(info, {
      heartbeatTimeoutMs: this.#options.heartbeat.timeoutMs,
      log: this.#log,
      events: {
        onCommit: (pub) => {
          if (this.#link === link) this.#host.feed.onCommit(pub);
        },
        onHeartbeat: (hb) => {
          if (this.#link === link) this.#host.feed.onRemoteSeq(hb.seq);
        },
        onDown: (l, reason) => {
          this.#log.info({ epoch: l.epoch, reason }, 'dbproxy: link to primary down');
          if (this.#link === l) this.#phase('link-down', l.epoch, { reason });
          this.#host.stateChanged.emit('changed', undefined);
        },
      },
    });
    let ping: { epoch: number; seq: number };
    try {
      ping = await link.connect();
    } catch (e) {
      this.#log.debug({ err: e, epoch: info.epoch }, 'dbproxy: primary did not answer');
      link.markDown('unreachable');
      return link;
    }
    if (this.#host.stopped.aborted || this.#host.role() !== 'secondary') {
      link.markDown('not needed');
      return link;
    }
    if (this.#epoch !== 0 && info.epoch !== this.#epoch) this.#failovers++;
    this.#epoch = info.epoch;
    this.#link = link;
    this.#log.info({ epoch: info.epoch, pid: info.pid }, 'dbproxy: following primary');
    this.#phase('following', info.epoch);
    if (this.#host.feed.deliveredSeq === null) this.#host.feed.deliveredSeq = ping.seq;
    this.#host.stateChanged.emit('changed', undefined);
    this.#host.feed.onRemoteSeq(ping.seq);
    return link;
  }

  async #promote(lock: ElectionLock): Promise<void> {
    this.#lock = lock;
    const epoch = lock.epoch;
    this.#phase('lock-acquired', epoch);
    // Beat from the very start (migrate may take long): silence means stalled, not busy.
    this.#lease = startLease(this.#leasePath, epoch, this.#options.heartbeat.intervalMs);
    let primary: Primary;
    try {
      primary = await Primary.open(
        {
          options: this.#options,
          log: this.#log,
          dbPath: this.#dbPath,
          runtimeDir: this.#runtimeDir,
          key: this.#key,
          infoPath: this.#infoPath,
          phase: (phase, e) => this.#phase(phase, e),
          onCommit: (pub) => this.#host.feed.onCommit(pub),
          served: this.#host.served,
        },
        epoch,
      );
    } catch (e) {
      await this.#lease?.stop();
      this.#lease = null;
      throw e;
    }
    this.#primary = primary;
    const old = this.#link;
    this.#link = null;
    old?.markDown('promoted');
    if (this.#epoch !== 0) this.#failovers++;
    this.#epoch = epoch;
    this.#promotions++;
    const seq = primary.coordinator.seq;
    if (this.#host.feed.deliveredSeq === null) this.#host.feed.deliveredSeq = seq;
    else if (seq > this.#host.feed.deliveredSeq) {
      // The dead primary's last commits were not all delivered here; the ring died with it.
      this.#host.feed.emitGap(this.#host.feed.deliveredSeq, seq);
    }
    removeEndpointFiles(this.#runtimeDir, this.#key, epoch);
    this.#host.setRole('primary');
  }
}
