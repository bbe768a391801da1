import { ChangeStream, Emitter, LatencyReservoir, parseOptions, SILENT_LOGGER, sleep } from '@x/core';
import { z } from 'zod';

const options = parseOptions(
  z.strictObject({ intervalMs: z.number().int().positive().default(1_000), logger: z.any().optional() }),
  { intervalMs: 250 },
  (e) => new Error(`invalid options: ${z.prettifyError(e)}`),
); // frozen: { intervalMs: 250 }

const ac = new AbortController();
await sleep(options.intervalMs, { signal: ac.signal }); // rejects with ac.signal.reason on abort

const events = new Emitter<{ up: { node: string } }>({
  onListenerError: (err) => SILENT_LOGGER.warn({ err }),
});
const off = events.on('up', (e) => console.log(e.node));
events.emit('up', { node: 'primary' });
off();

const stream = new ChangeStream<number>({ capacity: 1_000, overflow: 'drop-oldest' });
stream.push(1);
stream.end();
for await (const n of stream) console.log(n);

const latency = new LatencyReservoir(1_024);
latency.record(3.2);
latency.snapshot(); // { p50Ms: 3.2, p99Ms: 3.2 }
