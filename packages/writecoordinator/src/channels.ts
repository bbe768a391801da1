/** diagnostics_channel names (see README). */
export const BATCH_CHANNEL = 'x:writecoordinator:batch';
export const CLOSE_CHANNEL = 'x:writecoordinator:close';
