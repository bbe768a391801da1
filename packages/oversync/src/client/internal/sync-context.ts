/**
 * What the sync modules (push, replay, conflict resolution, pull, rebuild, snapshot apply) share
 * over one local database: the transaction runner, the remote, the settings, the managed tables
 * and the hooks through which they report to the client.
 */
import { ClientError } from '../errors.js';
import type { Logger } from '../transport-types.js';
import type {
  AppliedEvent,
  ConflictContext,
  ConflictRecord,
  ConflictResolution,
  ConflictResolver,
  ProgressEvent,
} from '../types.js';
import { ForeignKeyIndex } from './foreign-keys.js';
import type { Remote } from './remote.js';
import type { TableModel } from './table-model.js';
import { TableOps } from './table-ops.js';
import type { TxRunner } from './writer.js';

export interface SyncConfig {
  readonly schema: string;
  readonly uploadLimit: number;
  readonly downloadLimit: number;
  readonly snapshotChunkRows: number;
  readonly maxConflictRetries: number;
  readonly maxUnstructuredConflicts: number;
  readonly resolver: ConflictResolver;
}

export interface SyncHooks {
  progress(e: ProgressEvent): void;
  applied(e: AppliedEvent): void;
  conflict(context: ConflictContext, resolution: ConflictResolution, record: ConflictRecord): void;
  /** Called when the in-memory source id changes after a committed rotation. */
  sourceChanged(sourceId: string): void;
  /** Called when the durable binding was reset (seed lease lost). */
  bindingReset(): void;
}

export const WIRE_OPS = new Set(['INSERT', 'UPDATE', 'DELETE']);

export function protocolError(message: string, details: Record<string, unknown> = {}): ClientError {
  return new ClientError('OVERSYNC_CLIENT_PROTOCOL', message, { details });
}

/** A ClientError's cause when it is the retry policy's exhaustion, else the error itself. */
export function unwrapRetry(e: unknown): unknown {
  return e instanceof ClientError && e.code === 'OVERSYNC_CLIENT_RETRY_EXHAUSTED' ? e.cause : e;
}

export class SyncContext {
  readonly runner: TxRunner;
  readonly remote: Remote;
  readonly cfg: SyncConfig;
  readonly models: readonly TableModel[];
  readonly ops: ReadonlyMap<string, TableOps>;
  readonly fk: ForeignKeyIndex;
  readonly hooks: SyncHooks;
  readonly logger: Logger;

  constructor(
    runner: TxRunner,
    remote: Remote,
    cfg: SyncConfig,
    models: readonly TableModel[],
    hooks: SyncHooks,
    logger: Logger,
  ) {
    this.runner = runner;
    this.remote = remote;
    this.cfg = cfg;
    this.models = models;
    this.ops = new Map(models.map((m) => [m.table, new TableOps(m, cfg.schema)]));
    this.fk = new ForeignKeyIndex(models);
    this.hooks = hooks;
    this.logger = logger;
  }

  tableOps(table: string): TableOps {
    const o = this.ops.get(table);
    if (!o) throw protocolError(`table ${table} is not managed by this client`, { table });
    return o;
  }

  /** The table of a server row, after checking it names the configured schema. */
  checkRow(schema: string, table: string): TableOps {
    if (schema !== this.cfg.schema) {
      throw protocolError(`row schema ${schema} differs from the configured schema ${this.cfg.schema}`);
    }
    return this.tableOps(table);
  }
}
