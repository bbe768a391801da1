import type { ConflictResolver } from './types.js';

/** The default: the server's row wins every conflict. */
export const serverWinsResolver: ConflictResolver = () => ({ kind: 'accept-server' });
/** The local intent wins: it is re-queued on top of the server's version. */
export const clientWinsResolver: ConflictResolver = () => ({ kind: 'keep-local' });
