/**
 * Preloaded into the fan-out bench's server process (`NODE_OPTIONS=--import tsx --import
 * fanout-probe.ts`), without touching the server: every second, one stderr line
 * `[probe] <epochMs> eld_p50=<ms> eld_p99=<ms> eld_max=<ms> cpu_ms=<ms> rss_mb=<MB>` with the event
 * loop's delay (how long a ready callback waited for the loop) and the CPU time the process used in
 * that second.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';

const h = monitorEventLoopDelay({ resolution: 5 });
h.enable();
let cpu = process.cpuUsage();
const timer = setInterval(() => {
  const c = process.cpuUsage(cpu);
  cpu = process.cpuUsage();
  const ms = (ns: number) => (ns / 1e6).toFixed(1);
  process.stderr.write(
    `[probe] ${Date.now()} eld_p50=${ms(h.percentile(50))} eld_p99=${ms(h.percentile(99))} eld_max=${ms(h.max)} cpu_ms=${((c.user + c.system) / 1000).toFixed(0)} rss_mb=${(process.memoryUsage().rss / 2 ** 20).toFixed(0)}\n`,
  );
  h.reset();
}, 1000);
timer.unref();
