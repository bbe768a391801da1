/**
 * What the OpenAPI document says about each route the plugin mounts (internal/http/*-routes.ts):
 * its request schemas — the very zod schemas the route validates with — its success body and the
 * wire error codes it can answer (their statuses come from `WIRE_ERROR_STATUS`). A route added,
 * removed or answering another status without a change here fails test/server/openapi.
 */
import type { z } from 'zod';
import {
  bundleChangeEventSchema,
  capabilitiesResponseSchema,
  committedBundleRowsResponseSchema,
  connectRequestSchema,
  connectResponseSchema,
  pullResponseSchema,
  pushBundleRequestSchema,
  pushBundleResponseSchema,
  pushSessionChunkRequestSchema,
  pushSessionChunkResponseSchema,
  pushSessionCommitResponseSchema,
  pushSessionCreateRequestSchema,
  pushSessionCreateResponseSchema,
  snapshotChunkResponseSchema,
  snapshotSessionCreateRequestSchema,
  snapshotSessionSchema,
  type WireErrorCode,
} from '../../shared/wire.js';
import {
  bundleSeqParamsSchema,
  pullQuerySchema,
  pushIdParamsSchema,
  rowPageQuerySchema,
  snapshotIdParamsSchema,
  watchQuerySchema,
} from '../internal/http/params.js';
import { openApiDocumentSchema, statusResponseSchema } from './schemas.js';

export const OPENAPI_DOCUMENT_URL = '/sync/openapi.json';

export interface OperationSpec {
  readonly method: 'GET' | 'POST' | 'DELETE';
  /** fastify's syntax (`:name` parameters), without the plugin's prefix. */
  readonly url: string;
  readonly operationId: string;
  readonly tag: string;
  readonly summary: string;
  readonly description?: string;
  /** Acts for an actor: the host's authentication and the `Oversync-Source-ID` header. */
  readonly actor: boolean;
  readonly params?: z.ZodObject;
  readonly query?: z.ZodObject;
  readonly body?: { readonly schema: z.ZodType; readonly required: boolean; readonly description: string };
  /** The success answer: a JSON body (200), none (204), or a server-sent event stream. */
  readonly success:
    | { readonly status: 200; readonly schema: z.ZodType; readonly description: string }
    | { readonly status: 204; readonly description: string }
    | { readonly status: 200; readonly events: z.ZodType; readonly description: string };
  /** Answers other than the success and the error bodies (health's 503 with the status body). */
  readonly other?: ReadonlyArray<{
    readonly status: number;
    readonly schema: z.ZodType;
    readonly description: string;
  }>;
  /** Every wire error code the route answers. */
  readonly errors: readonly WireErrorCode[];
}

/** Every actor route can refuse its actor (401, or 400 for the source header). */
const ACTOR: readonly WireErrorCode[] = ['invalid_request', 'authentication_failed'];
/** A counted service operation: refused with 503 while the service closes. */
const OP: readonly WireErrorCode[] = [...ACTOR, 'service_unavailable'];
const PUSH_SESSION: readonly WireErrorCode[] = [
  'push_session_not_found',
  'push_session_forbidden',
  'push_session_expired',
];
const LEASE: readonly WireErrorCode[] = ['initialization_stale', 'initialization_expired'];
const SOURCE_SEQUENCE: readonly WireErrorCode[] = [
  'history_pruned',
  'source_sequence_out_of_order',
  'source_retired',
];
const INITIALIZED_SCOPE: readonly WireErrorCode[] = ['scope_uninitialized', 'scope_initializing'];

export const OPERATIONS: readonly OperationSpec[] = [
  {
    method: 'POST',
    url: '/sync/connect',
    operationId: 'connect',
    tag: 'connect',
    summary: 'Connect: how the device starts syncing its scope',
    description:
      'Answers `remote_authoritative`, `initialize_local` (with an initialization lease), `initialize_empty` or `retry_later`.',
    actor: true,
    body: {
      schema: connectRequestSchema,
      required: true,
      description: 'Whether the device holds local rows.',
    },
    success: { status: 200, schema: connectResponseSchema, description: 'The resolution.' },
    errors: [...OP, 'connect_failed'],
  },
  {
    method: 'GET',
    url: '/sync/capabilities',
    operationId: 'getCapabilities',
    tag: 'connect',
    summary: 'Protocol version, registered tables, features and limits',
    actor: true,
    success: { status: 200, schema: capabilitiesResponseSchema, description: 'The capabilities.' },
    errors: ACTOR,
  },
  {
    method: 'POST',
    url: '/sync/push-sessions',
    operationId: 'createPushSession',
    tag: 'push',
    summary: 'Create a push session for the next bundle of the source',
    description: '`already_committed` when the bundle was committed before (an idempotent replay).',
    actor: true,
    body: { schema: pushSessionCreateRequestSchema, required: true, description: 'The bundle to push.' },
    success: {
      status: 200,
      schema: pushSessionCreateResponseSchema,
      description: 'The session, or the committed bundle.',
    },
    errors: [
      ...OP,
      'push_session_invalid',
      'scope_uninitialized',
      ...LEASE,
      ...SOURCE_SEQUENCE,
      'push_session_create_failed',
    ],
  },
  {
    method: 'POST',
    url: '/sync/push-sessions/:push_id/chunks',
    operationId: 'uploadPushChunk',
    tag: 'push',
    summary: 'Upload the next chunk of rows of a push session',
    actor: true,
    params: pushIdParamsSchema,
    body: {
      schema: pushSessionChunkRequestSchema,
      required: true,
      description: 'Rows from `start_row_ordinal`.',
    },
    success: { status: 200, schema: pushSessionChunkResponseSchema, description: 'The next expected row.' },
    errors: [
      ...OP,
      'push_chunk_invalid',
      'push_row_invalid',
      ...PUSH_SESSION,
      'push_chunk_out_of_order',
      ...LEASE,
      'push_chunk_failed',
    ],
  },
  {
    method: 'POST',
    url: '/sync/push-sessions/:push_id/commit',
    operationId: 'commitPushSession',
    tag: 'push',
    summary: 'Commit a fully uploaded push session as one bundle',
    actor: true,
    params: pushIdParamsSchema,
    success: { status: 200, schema: pushSessionCommitResponseSchema, description: 'The committed bundle.' },
    errors: [
      ...OP,
      ...PUSH_SESSION,
      ...LEASE,
      ...SOURCE_SEQUENCE,
      'source_sequence_changed',
      'push_commit_invalid',
      'push_conflict',
      'push_session_commit_failed',
    ],
  },
  {
    method: 'POST',
    url: '/sync/push',
    operationId: 'pushBundle',
    tag: 'push',
    summary: 'Create, upload and commit a bundle of one chunk in one request',
    description:
      'Feature `single_request_push` (an extension of protocol v1): the three requests of a push session in one, with their rules and errors; `rows` at most `max_rows_per_push_chunk`. `already_committed` when the bundle was committed before (an idempotent replay).',
    actor: true,
    body: {
      schema: pushBundleRequestSchema,
      required: true,
      description: 'The bundle: its source_bundle_id and rows.',
    },
    success: { status: 200, schema: pushBundleResponseSchema, description: 'The committed bundle.' },
    errors: [
      ...OP,
      'push_session_invalid',
      'push_chunk_invalid',
      'push_row_invalid',
      'scope_uninitialized',
      ...LEASE,
      ...SOURCE_SEQUENCE,
      'source_sequence_changed',
      'push_commit_invalid',
      'push_conflict',
      'push_failed',
    ],
  },
  {
    method: 'DELETE',
    url: '/sync/push-sessions/:push_id',
    operationId: 'deletePushSession',
    tag: 'push',
    summary: 'Abandon a push session',
    actor: true,
    params: pushIdParamsSchema,
    success: { status: 204, description: 'Deleted.' },
    errors: [...OP, ...PUSH_SESSION, 'push_session_delete_failed'],
  },
  {
    method: 'GET',
    url: '/sync/committed-bundles/:bundle_seq/rows',
    operationId: 'getCommittedBundleRows',
    tag: 'pull',
    summary: "A page of a committed bundle's rows",
    actor: true,
    params: bundleSeqParamsSchema,
    query: rowPageQuerySchema,
    success: { status: 200, schema: committedBundleRowsResponseSchema, description: 'The page.' },
    errors: [
      ...OP,
      'committed_bundle_chunk_invalid',
      'committed_bundle_not_found',
      'history_pruned',
      'committed_bundle_rows_failed',
    ],
  },
  {
    method: 'GET',
    url: '/sync/pull',
    operationId: 'pull',
    tag: 'pull',
    summary: 'Committed bundles of the scope after a bundle',
    actor: true,
    query: pullQuerySchema,
    success: { status: 200, schema: pullResponseSchema, description: 'The bundles.' },
    errors: [...OP, ...INITIALIZED_SCOPE, 'history_pruned', 'pull_failed'],
  },
  {
    method: 'GET',
    url: '/sync/watch',
    operationId: 'watchBundleChanges',
    tag: 'watch',
    summary: 'Committed-bundle events of the scope, as server-sent events',
    description:
      'A stream of `event: bundle` frames whose `data:` is the JSON of `x-oversync-event-data`, and `: heartbeat` comments; the first event is the latest bundle (catch-up). The stream ends when either side closes.',
    actor: true,
    query: watchQuerySchema,
    success: { status: 200, events: bundleChangeEventSchema, description: 'The event stream.' },
    errors: [
      ...OP,
      'bundle_change_watch_forbidden',
      ...INITIALIZED_SCOPE,
      'bundle_change_watch_disabled',
      'bundle_change_watch_failed',
    ],
  },
  {
    method: 'POST',
    url: '/sync/snapshot-sessions',
    operationId: 'createSnapshotSession',
    tag: 'snapshot',
    summary: 'Freeze the scope into a snapshot session (optionally rotating the source)',
    actor: true,
    body: {
      schema: snapshotSessionCreateRequestSchema,
      required: false,
      description: 'None (or empty) for a plain snapshot; `source_replacement` to rotate the source.',
    },
    success: { status: 200, schema: snapshotSessionSchema, description: 'The snapshot session.' },
    errors: [
      ...OP,
      'snapshot_session_invalid',
      ...INITIALIZED_SCOPE,
      'source_retired',
      'source_replacement_invalid',
      'snapshot_session_create_failed',
    ],
  },
  {
    method: 'GET',
    url: '/sync/snapshot-sessions/:snapshot_id',
    operationId: 'getSnapshotChunk',
    tag: 'snapshot',
    summary: "A page of a snapshot session's rows",
    actor: true,
    params: snapshotIdParamsSchema,
    query: rowPageQuerySchema,
    success: { status: 200, schema: snapshotChunkResponseSchema, description: 'The page.' },
    errors: [
      ...OP,
      'snapshot_chunk_invalid',
      'snapshot_session_not_found',
      'snapshot_session_forbidden',
      'snapshot_session_expired',
      'snapshot_chunk_failed',
    ],
  },
  {
    method: 'DELETE',
    url: '/sync/snapshot-sessions/:snapshot_id',
    operationId: 'deleteSnapshotSession',
    tag: 'snapshot',
    summary: 'Delete a snapshot session',
    actor: true,
    params: snapshotIdParamsSchema,
    success: { status: 204, description: 'Deleted.' },
    errors: [
      ...OP,
      'snapshot_session_not_found',
      'snapshot_session_forbidden',
      'snapshot_session_delete_failed',
    ],
  },
  {
    method: 'GET',
    url: '/syncx/status',
    operationId: 'getStatus',
    tag: 'operator',
    summary: 'Service status and counters',
    actor: false,
    success: { status: 200, schema: statusResponseSchema, description: 'The status.' },
    errors: ['status_failed'],
  },
  {
    method: 'GET',
    url: '/syncx/health',
    operationId: 'getHealth',
    tag: 'operator',
    summary: 'The status, answered 503 unless healthy',
    actor: false,
    success: { status: 200, schema: statusResponseSchema, description: 'Healthy.' },
    other: [
      { status: 503, schema: statusResponseSchema, description: 'Unhealthy (closing, or retention ahead).' },
    ],
    errors: ['health_failed'],
  },
  {
    method: 'GET',
    url: OPENAPI_DOCUMENT_URL,
    operationId: 'getOpenApiDocument',
    tag: 'operator',
    summary: 'This document',
    actor: false,
    success: { status: 200, schema: openApiDocumentSchema, description: 'The OpenAPI 3.1 document.' },
    errors: [],
  },
];
