/**
 * Wire contract shared by `@x/oversync/server` and `@x/oversync/client`: protocol v1 types and zod
 * schemas, the canonical JSON encoder and the bundle hash.
 */
export * from './bundle-hash.js';
export * from './canonical-json.js';
export * from './errors.js';
export * from './wire.js';
