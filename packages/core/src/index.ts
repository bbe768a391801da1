/**
 * `@x/core`: the primitives every `@x` package shares, in one home: abort-aware waiting, a bounded
 * change stream, the logger contract, options parsing with one freeze, an emitter whose `on` returns
 * an unsubscribe function, a latency reservoir, and the base class of every package's coded error.
 * Nothing here knows about a database.
 */
export { type AbortableOptions, abortable, type SleepOptions, sleep, throwIfAborted } from './abort.js';
export { ChangeStream, type ChangeStreamOptions, type OverflowPolicy } from './change-stream.js';
export { CodedError, type CodedErrorJSON, type CodedErrorOptions, hasCodePrefix } from './coded-error.js';
export { Emitter, type EmitterOptions, type Listener } from './emitter.js';
export { LatencyReservoir } from './latency-reservoir.js';
export { INVALID_LOGGER_MESSAGE, isLogger, type Logger, SILENT_LOGGER } from './logger.js';
export { formatOptionIssues, type OptionIssue, optionIssues } from './option-issues.js';
export { type DeepFreezeOptions, deepFreeze, parseOptions } from './options.js';
