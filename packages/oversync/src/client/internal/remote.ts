/**
 * The remote: one typed method per endpoint of a go-oversync v1 server. The only place of the
 * client that knows HTTP paths; everything above it speaks in answers, never in URLs. Requests go
 * through the transport (auth, source id header, retry policy).
 */

import { isPlainBundleRow, isPlainSnapshotRow } from '../../shared/plain-rows.js';
import {
  bundleRowSchema,
  capabilitiesResponseSchema,
  committedBundleRowsResponseSchema,
  connectResponseSchema,
  pullResponseSchema,
  pushBundleResponseSchema,
  pushSessionChunkResponseSchema,
  pushSessionCommitResponseSchema,
  pushSessionCreateResponseSchema,
  snapshotChunkResponseSchema,
  snapshotRowSchema,
  snapshotSessionSchema,
} from '../../shared/wire.js';
import { ClientError } from '../errors.js';
import { statusOf, type Transport } from './transport.js';

const PATHS = {
  capabilities: '/sync/capabilities',
  connect: '/sync/connect',
  pushSessions: '/sync/push-sessions',
  push: '/sync/push',
  committedBundles: '/sync/committed-bundles/',
  pull: '/sync/pull',
  snapshotSessions: '/sync/snapshot-sessions',
  watch: '/sync/watch',
} as const;

export type Capabilities = ReturnType<typeof capabilitiesResponseSchema.parse>;
export type ConnectAnswer = ReturnType<typeof connectResponseSchema.parse>;
export type PushSessionCreated = ReturnType<typeof pushSessionCreateResponseSchema.parse>;
export type PushChunkAnswer = ReturnType<typeof pushSessionChunkResponseSchema.parse>;
export type PushCommitAnswer = ReturnType<typeof pushSessionCommitResponseSchema.parse>;
export type PushBundleAnswer = ReturnType<typeof pushBundleResponseSchema.parse>;
export type CommittedBundlePage = ReturnType<typeof committedBundleRowsResponseSchema.parse>;
export type PullAnswer = ReturnType<typeof pullResponseSchema.parse>;
export type SnapshotSession = ReturnType<typeof snapshotSessionSchema.parse>;
export type SnapshotChunk = ReturnType<typeof snapshotChunkResponseSchema.parse>;

const sig = (signal: AbortSignal | undefined) => (signal ? { signal } : {});
const seg = (id: string) => encodeURIComponent(id);

/** True when `e` (an HTTP error of the transport) answered a committed-bundle rows fetch. */
export function isCommittedBundleFetchError(e: unknown): boolean {
  const message = e instanceof ClientError ? String(e.message) : '';
  return message.startsWith(PATHS.committedBundles);
}

export class Remote {
  readonly transport: Transport;
  /** The answer of `capabilities()` (any call), for the features asked later. */
  #caps: Capabilities | undefined;

  constructor(transport: Transport) {
    this.transport = transport;
  }

  /** The source id sent with every request. */
  get sourceId(): string {
    return this.transport.sourceId;
  }
  set sourceId(id: string) {
    this.transport.sourceId = id;
  }

  /** Runs `fn` (several requests) under the retry policy as one operation. */
  withRetry<T>(op: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    return this.transport.withRetry(op, fn, signal);
  }

  /** GET /sync/capabilities; a server without it does not support the connect lifecycle. */
  async capabilities(signal?: AbortSignal): Promise<Capabilities> {
    try {
      this.#caps = await this.transport.request({
        method: 'GET',
        path: PATHS.capabilities,
        schema: capabilitiesResponseSchema,
        retryOp: 'connect_capabilities',
        ...sig(signal),
      });
      return this.#caps;
    } catch (e) {
      const s = statusOf(e);
      if (s === 404 || s === 405 || s === 501) {
        throw new ClientError(
          'OVERSYNC_CLIENT_LIFECYCLE_UNSUPPORTED',
          'server has no capabilities endpoint',
          { cause: e },
        );
      }
      throw e;
    }
  }

  connect(hasLocalPendingRows: boolean, signal?: AbortSignal): Promise<ConnectAnswer> {
    return this.transport.request({
      method: 'POST',
      path: PATHS.connect,
      body: { has_local_pending_rows: hasLocalPendingRows },
      schema: connectResponseSchema,
      retryOp: 'connect_request',
      ...sig(signal),
    });
  }

  createPushSession(body: Record<string, unknown>, signal?: AbortSignal): Promise<PushSessionCreated> {
    return this.transport.request({
      method: 'POST',
      path: PATHS.pushSessions,
      body,
      schema: pushSessionCreateResponseSchema,
      ...sig(signal),
    });
  }

  pushChunk(
    pushId: string,
    /** The chunk, or the chunk already serialised as JSON (built in slices by the push). */
    body: { start_row_ordinal: number; rows: unknown[] } | string,
    signal?: AbortSignal,
  ): Promise<PushChunkAnswer> {
    return this.transport.request({
      method: 'POST',
      path: `${PATHS.pushSessions}/${seg(pushId)}/chunks`,
      ...(typeof body === 'string' ? { bodyJson: body } : { body }),
      schema: pushSessionChunkResponseSchema,
      ...sig(signal),
    });
  }

  commitPushSession(pushId: string, signal?: AbortSignal): Promise<PushCommitAnswer> {
    return this.transport.request({
      method: 'POST',
      path: `${PATHS.pushSessions}/${seg(pushId)}/commit`,
      schema: pushSessionCommitResponseSchema,
      ...sig(signal),
    });
  }

  /**
   * The most rows a one-request push may carry (`POST /sync/push`, feature `single_request_push`),
   * 0 when the server does not take one. Asked once (with the capabilities a connect read, or now);
   * `singleRequestPushRefused()` turns it off, for a server that stopped answering the route.
   */
  async singleRequestPushRows(signal?: AbortSignal): Promise<number> {
    if (this.#caps === undefined) {
      try {
        await this.capabilities(signal);
      } catch (e) {
        if (!(e instanceof ClientError) || e.code !== 'OVERSYNC_CLIENT_LIFECYCLE_UNSUPPORTED') throw e;
        return 0;
      }
    }
    const caps = this.#caps!;
    if (!caps.features['single_request_push']) return 0;
    return caps.bundle_limits?.['max_rows_per_push_chunk'] ?? Number.MAX_SAFE_INTEGER;
  }

  singleRequestPushRefused(): void {
    if (this.#caps)
      this.#caps = { ...this.#caps, features: { ...this.#caps.features, single_request_push: false } };
  }

  /** POST /sync/push: a bundle of one chunk (its JSON body built by the push) in one request. */
  pushBundle(bodyJson: string, signal?: AbortSignal): Promise<PushBundleAnswer> {
    return this.transport.request({
      method: 'POST',
      path: PATHS.push,
      bodyJson,
      schema: pushBundleResponseSchema,
      ...sig(signal),
    });
  }

  /** Best effort: a failure is ignored (the server expires the session). */
  dropPushSession(pushId: string): void {
    this.transport
      .request({ method: 'DELETE', path: `${PATHS.pushSessions}/${seg(pushId)}` })
      .catch(() => undefined);
  }

  committedBundleRows(
    bundleSeq: number,
    query: { maxRows: number; afterRowOrdinal?: number | undefined },
    signal?: AbortSignal,
  ): Promise<CommittedBundlePage> {
    return this.transport.request({
      method: 'GET',
      path: `${PATHS.committedBundles}${bundleSeq}/rows`,
      query: { max_rows: query.maxRows, after_row_ordinal: query.afterRowOrdinal },
      schema: committedBundleRowsResponseSchema,
      rows: { schema: bundleRowSchema, in: 'body', plain: isPlainBundleRow },
      retryOp: 'committed_bundle_fetch',
      ...sig(signal),
    });
  }

  pull(
    query: { afterBundleSeq: number; maxBundles: number; targetBundleSeq?: number | undefined },
    signal?: AbortSignal,
  ): Promise<PullAnswer> {
    return this.transport.request({
      method: 'GET',
      path: PATHS.pull,
      query: {
        after_bundle_seq: query.afterBundleSeq,
        max_bundles: query.maxBundles,
        target_bundle_seq: query.targetBundleSeq,
      },
      schema: pullResponseSchema,
      rows: { schema: bundleRowSchema, in: 'bundles', plain: isPlainBundleRow },
      retryOp: 'pull_request',
      ...sig(signal),
    });
  }

  createSnapshotSession(
    body: Record<string, unknown> | undefined,
    signal?: AbortSignal,
  ): Promise<SnapshotSession> {
    return this.transport.request({
      method: 'POST',
      path: PATHS.snapshotSessions,
      ...(body ? { body } : {}),
      schema: snapshotSessionSchema,
      retryOp: 'snapshot_session_create',
      ...sig(signal),
    });
  }

  snapshotChunk(
    snapshotId: string,
    query: { afterRowOrdinal: number; maxRows: number },
    signal?: AbortSignal,
  ): Promise<SnapshotChunk> {
    return this.transport.request({
      method: 'GET',
      path: `${PATHS.snapshotSessions}/${seg(snapshotId)}`,
      query: { after_row_ordinal: query.afterRowOrdinal, max_rows: query.maxRows },
      schema: snapshotChunkResponseSchema,
      rows: { schema: snapshotRowSchema, in: 'body', plain: isPlainSnapshotRow },
      retryOp: 'snapshot_chunk_fetch',
      ...sig(signal),
    });
  }

  /** Best effort: a failure is ignored (the server expires the session). */
  dropSnapshotSession(snapshotId: string): void {
    this.transport
      .request({ method: 'DELETE', path: `${PATHS.snapshotSessions}/${seg(snapshotId)}` })
      .catch(() => undefined);
  }

  /**
   * Opens the bundle-change watch stream (server-sent events). Resolves to the raw response, or
   * to 'forbidden' when the server refuses to watch for this caller.
   */
  async watch(
    afterBundleSeq: number,
    signal: AbortSignal,
  ): Promise<ReadableStream<Uint8Array> | 'forbidden'> {
    const res = await this.transport.raw(PATHS.watch, { after_bundle_seq: afterBundleSeq }, signal);
    if (res.status === 403) {
      await res.body?.cancel();
      return 'forbidden';
    }
    if (!res.ok || !res.body) {
      await res.body?.cancel();
      throw new ClientError('OVERSYNC_CLIENT_HTTP', `${PATHS.watch}: ${res.status}`, {
        retryable: true,
        details: { status: res.status },
      });
    }
    return res.body;
  }
}
