import { AsyncLocalStorage } from 'node:async_hooks';

const physical = new AsyncLocalStorage<boolean>();

/**
 * Runs `fn` with the "physical DDL required" flag set: code called from it (an `afterCommit` hook
 * flushing per-tenant replicas, say) reads it with `physicalDdlRequired()`.
 */
export function withPhysicalDdlRequired<T>(required: boolean, fn: () => T): T {
  return physical.run(required, fn);
}

/** The flag of the enclosing `withPhysicalDdlRequired` scope; false outside one. */
export function physicalDdlRequired(): boolean {
  return physical.getStore() === true;
}
