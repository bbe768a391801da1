import type { BundleChangeEvent } from '../shared/wire.js';

/** One watcher: an async iterable of bundle events that ends when closed. */
export interface BundleChangeSubscription extends AsyncIterable<BundleChangeEvent> {
  readonly closed: boolean;
  /** Ends the iteration at once (a queued event is dropped); idempotent. */
  close(): void;
}
