import { channel } from 'node:diagnostics_channel';

/** diagnostics_channel channels, one per event type. */
export const CHANNELS = Object.freeze({
  step: channel('x:schemaops:step'),
  operation: channel('x:schemaops:operation'),
  reconcile: channel('x:schemaops:reconcile'),
  afterCommitFailed: channel('x:schemaops:after-commit'),
});
