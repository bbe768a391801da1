import { LatencyReservoir } from '@x/core';
import type { WriteCoordinatorMetrics } from '../types.js';

/** The coordinator's running counts and latency window, and the `metrics()` snapshot made of them. */
export class Counters {
  accepted = 0;
  completed = 0;
  replayed = 0;
  failed = 0;
  expired = 0;
  aborted = 0;
  rejected = 0;
  dropped = 0;
  maxDepth = 0;
  batches = 0;
  batchedJobs = 0;
  readonly latency: LatencyReservoir;

  constructor(latencyReservoirSize: number) {
    this.latency = new LatencyReservoir(latencyReservoirSize);
  }

  snapshot(now: { depth: number; waiting: number; isolated: number; seq: number }): WriteCoordinatorMetrics {
    const [p50, p99] = this.latency.percentiles(50, 99);
    return {
      accepted: this.accepted,
      completed: this.completed,
      replayed: this.replayed,
      failed: this.failed,
      expired: this.expired,
      aborted: this.aborted,
      rejected: this.rejected,
      dropped: this.dropped,
      queueDepth: now.depth,
      maxQueueDepth: this.maxDepth,
      waiting: now.waiting,
      batches: this.batches,
      meanBatchSize: this.batches === 0 ? 0 : this.batchedJobs / this.batches,
      isolatedBatches: now.isolated,
      p50LatencyMs: p50 ?? 0,
      p99LatencyMs: p99 ?? 0,
      seq: now.seq,
    };
  }
}
