import type { z } from 'zod';
import { WriteCoordinatorError } from '../errors.js';
import type { SqliteDatabase } from '../sqlite.js';

interface Registered {
  schema: z.ZodType<unknown>;
  handler: (db: SqliteDatabase, params: unknown) => unknown;
}

/** Named methods (`register`): a submit of `{ method, params }` runs the handler with parsed params. */
export class MethodRegistry {
  readonly #methods = new Map<string, Registered>();

  register<P>(
    method: string,
    paramsSchema: z.ZodType<P>,
    handler: (db: SqliteDatabase, params: P) => unknown,
  ): void {
    if (typeof method !== 'string' || method.length === 0) {
      throw new WriteCoordinatorError('WRITECOORDINATOR_INVALID_PARAMS', 'method must be a non-empty string');
    }
    if (this.#methods.has(method)) {
      throw new WriteCoordinatorError(
        'WRITECOORDINATOR_METHOD_EXISTS',
        `method ${method} is already registered`,
        {
          details: { method },
        },
      );
    }
    this.#methods.set(method, {
      schema: paramsSchema as z.ZodType<unknown>,
      handler: handler as (db: SqliteDatabase, params: unknown) => unknown,
    });
  }

  /** The job function of a call of `method`, or the error that refuses it (unknown method, bad params). */
  bind(method: string, params: unknown): ((db: SqliteDatabase) => unknown) | WriteCoordinatorError {
    const reg = this.#methods.get(method);
    if (reg === undefined) {
      return new WriteCoordinatorError(
        'WRITECOORDINATOR_METHOD_NOT_FOUND',
        `no handler for method ${method}`,
        {
          details: { method, applied: false },
        },
      );
    }
    const parsed = reg.schema.safeParse(params);
    if (!parsed.success) {
      return new WriteCoordinatorError(
        'WRITECOORDINATOR_INVALID_PARAMS',
        `invalid params for method ${method}`,
        {
          details: { method, issues: parsed.error.issues, applied: false },
          cause: parsed.error,
        },
      );
    }
    const value = parsed.data;
    const handler = reg.handler;
    return (db) => handler(db, value);
  }
}
