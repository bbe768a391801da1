import { channel } from 'node:diagnostics_channel';

/** `x:dbx:query`: one message per statement with node, duration and row count (never parameter values). */
export const queryChannel = channel('x:dbx:query');

/** What `queryChannel` publishes. */
export interface QueryMessage {
  /** The cluster method that ran the statement (`query`, `readQuery`, `tx.exec`, ...). */
  method: string;
  /** The node's name. */
  node: string;
  /** The statement's text (parameter values are never published). */
  sql: string;
  /** How long the statement took. */
  durationMs: number;
  /** Rows returned or affected; null when it failed. */
  rowCount: number | null;
  /** The error's message, when it failed. */
  error?: string;
  /** The server error's SQLSTATE, when there is one. */
  sqlState?: string;
}

/** `x:dbx:health`: one message per health check (node, ok, role, latency, lag). */
export const healthChannel = channel('x:dbx:health');
