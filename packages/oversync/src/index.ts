/**
 * `@x/oversync`: offline-first PostgreSQL <-> SQLite sync, wire-compatible with go-oversync
 * protocol v1. The server lives at `@x/oversync/server`, the client at `@x/oversync/client`; this
 * entry exports the shared wire contract (types, schemas, canonical JSON, bundle hash).
 */
export * from './shared/index.js';
/** The version of this package. */
export const VERSION = '0.1.0';
