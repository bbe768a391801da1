/** diagnostics_channel names. */
export const WRITE_CHANNEL = 'x:dbproxy:write';
export const SERVE_CHANNEL = 'x:dbproxy:serve';
export const ROLE_CHANNEL = 'x:dbproxy:role';
export const EXCLUSIVE_CHANNEL = 'x:dbproxy:exclusive';
/**
 * Election and failover phases, published synchronously as they happen: `{ phase, epoch, instanceId }`.
 * Promotion: `lock-acquired` → `database-open` (after `migrate`) → `coordinator-open` → `bound` →
 * `announced` (info file written). Following: `link-down` (with `reason`) and `following`.
 */
export const ELECTION_CHANNEL = 'x:dbproxy:election';
export type ElectionPhase =
  | 'lock-acquired'
  | 'database-open'
  | 'coordinator-open'
  | 'bound'
  | 'announced'
  | 'link-down'
  | 'following';
