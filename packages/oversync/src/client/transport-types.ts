/** The HTTP edge and the logger the client's options take (`fetch`, `token`, `retry`, `logger`). */

/** pino-compatible logger: the contract every `@x` package shares, from `@x/core`. */
export type { Logger } from '@x/core';

/** The HTTP call the client makes: global `fetch`'s shape (the `fetch` option, for tests or a custom agent). */
export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;
/** The bearer token: a fixed string, or a function called before each request (may refresh). */
export type TokenSource = string | ((opts: { signal?: AbortSignal }) => string | Promise<string>);

export interface RetryPolicy {
  readonly enabled: boolean;
  readonly maxAttempts: number;
  readonly initialBackoffMs: number;
  readonly maxBackoffMs: number;
  readonly jitter: number;
}
