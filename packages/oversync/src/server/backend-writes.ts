/**
 * The public constants of backend writes that sync (`registeredTables[].backendWrites`): what a
 * bundle made from an ordinary SQL transaction carries, and the SQLSTATEs of the refused writes.
 */

/**
 * The `source_id` of every bundle committed from backend writes (its `source_bundle_id` is the
 * bundle's own `bundle_seq`). Reserved: a device that sends it (`Oversync-Source-ID`, a
 * replacement's `new_source_id`) or a server writer whose actor names it is refused.
 */
export const BACKEND_WRITE_SOURCE_ID = 'oversync-backend-writes';

/**
 * SQLSTATE of a backend write to an opted-in table whose row cannot be attributed to a scope: its
 * `_sync_scope_id` is NULL or empty, or names a scope that is not INITIALIZED (no device has
 * connected and no `scopeManager().execWrite` has written it, or a device is initializing it).
 * Message: `oversync: backend write to registered table <schema>.<table> cannot be attributed to a
 * scope`; the DETAIL says which case.
 */
export const BACKEND_WRITE_UNATTRIBUTABLE_SQLSTATE = 'OV001';

/** SQLSTATE of a backend UPDATE that changes a row's `_sync_scope_id` (moving rows between scopes). */
export const BACKEND_WRITE_SCOPE_CHANGE_SQLSTATE = 'OV002';

/**
 * SQLSTATE of a TRUNCATE of a table opted in to backend writes: it fires no row triggers, so its
 * rows could not reach the devices. DELETE the rows instead (one bundle per scope, as always).
 */
export const BACKEND_WRITE_TRUNCATE_SQLSTATE = 'OV003';
