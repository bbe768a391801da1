import { isWriteCoordinatorError, type WriteCoordinatorError } from '@x/writecoordinator';

/** Awaits a promise expected to reject with a coordinator error and returns that error. */
export async function rejection(p: Promise<unknown>): Promise<WriteCoordinatorError> {
  try {
    await p;
  } catch (e) {
    if (isWriteCoordinatorError(e)) return e;
    throw new Error(`expected a WriteCoordinatorError, got ${String(e)}`);
  }
  throw new Error('expected a rejection, got a result');
}
