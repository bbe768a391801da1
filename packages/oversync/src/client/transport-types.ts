/** The HTTP edge and the logger the client's options take (`fetch`, `token`, `retry`, `logger`). */

export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;
export type TokenSource = string | ((opts: { signal?: AbortSignal }) => string | Promise<string>);

export interface RetryPolicy {
  readonly enabled: boolean;
  readonly maxAttempts: number;
  readonly initialBackoffMs: number;
  readonly maxBackoffMs: number;
  readonly jitter: number;
}

export interface Logger {
  debug?: (obj: object, msg?: string) => void;
  info?: (obj: object, msg?: string) => void;
  warn?: (obj: object, msg?: string) => void;
  error?: (obj: object, msg?: string) => void;
}
