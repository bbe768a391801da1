import { channel } from 'node:diagnostics_channel';

/** `x:dbx:query`: one message per statement with node, duration and row count (never parameter values). */
export const queryChannel = channel('x:dbx:query');

/** What `queryChannel` publishes. */
export interface QueryMessage {
  method: string;
  node: string;
  sql: string;
  durationMs: number;
  rowCount: number | null;
  error?: string;
  sqlState?: string;
}

/** `x:dbx:health`: one message per health check (node, ok, role, latency, lag). */
export const healthChannel = channel('x:dbx:health');
