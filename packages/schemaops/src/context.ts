import { AsyncLocalStorage } from 'node:async_hooks';

const physical = new AsyncLocalStorage<boolean>();

/**
 * Runs `fn` with the "physical DDL required" flag set to `required`: code called from it, however
 * deep and across awaits (an `afterCommit` hook flushing per-tenant replicas, say), reads it with
 * `physicalDdlRequired()`. Returns what `fn` returns. `run()` takes the flag of the enclosing scope
 * when its input does not set `physicalDdlRequired`.
 *
 * @example
 * ```ts
 * import { physicalDdlRequired, withPhysicalDdlRequired } from '@x/schemaops';
 *
 * async function flushReplicas(): Promise<string> {
 *   await Promise.resolve(); // the flag survives awaits
 *   return physicalDdlRequired() ? 'flush the tenant replicas' : 'metadata only: nothing to flush';
 * }
 * console.log(await withPhysicalDdlRequired(true, flushReplicas)); // flush the tenant replicas
 * console.log(await flushReplicas()); // metadata only: nothing to flush
 * ```
 */
export function withPhysicalDdlRequired<T>(required: boolean, fn: () => T): T {
  return physical.run(required, fn);
}

/**
 * The flag of the enclosing `withPhysicalDdlRequired` scope; false outside one. An `afterCommit`
 * hook runs inside the scope of its operation's `physicalDdlRequired`.
 *
 * @example
 * ```ts
 * import { physicalDdlRequired, withPhysicalDdlRequired } from '@x/schemaops';
 *
 * console.log(physicalDdlRequired()); // false
 * withPhysicalDdlRequired(true, () => console.log(physicalDdlRequired())); // true
 * withPhysicalDdlRequired(false, () => console.log(physicalDdlRequired())); // false
 * ```
 */
export function physicalDdlRequired(): boolean {
  return physical.getStore() === true;
}
