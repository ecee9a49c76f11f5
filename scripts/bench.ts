/**
 * Celerity's benchmark, on the workloads and boundaries of ../shared/peers (BullMQ, Celery).
 *
 *   npm run bench                       # = all: own nats-server, every workload, table + targets
 *   node .bench/build/bench.mjs <sub> --servers nats://127.0.0.1:PORT [flags]
 *
 * `.bench/build/bench.mjs` is this file bundled (`… bench.ts build` writes it; `all` runs every
 * step with it): measured processes never run under the tsx loader, which slows down even the
 * JavaScript it did not compile. `node --import tsx scripts/bench.ts <sub>` works too, slower.
 *
 * Subcommands (each prints JSON lines in the peers' record format on stdout, logs on stderr):
 *   enqueue   --mode seq|p100|p1000 [--n 20000] [--events 0]         a. enqueue
 *   drain     --concurrency C [--prefetch P] [--enqueue-mode M] [--n] b. drain (1 worker process)
 *   latency   [--n 1000] [--warmup 50]                                c. round-trip latency
 *   coldstart [--runs 10] [--warmup 1] [--variants a,b] [--baseline 1] [--proc path/to/proc.js]
 *                                                                     d. cold start (whole process)
 *   idlemem   --concurrency C [--settle 2] [--rep R] [--proc ...]     e. worker idle memory
 *   coldphases [--runs 10] [--variants a,b]                           g. diagnostic: one-shot phases
 *   raw       [--n 20000]                                             f. reference figures, raw nats.js
 *   build                                                             dist/ + .bench/build/ (worker, bundles)
 *   report    --in a.jsonl[,b.jsonl]                                 the tables again (several runs: medians)
 *   wait      [--timeout 20]                                          until the server answers JetStream requests
 *   all       (default) starts a private nats-server (sdk/testing), runs everything, writes
 *             .bench/results-<stamp>.jsonl, prints the table and the targets.
 * Knobs for all (environment): N=20000 LAT_N=1000 LAT_WARMUP=50 COLD_RUNS=10 REPS=1 IDLE_SETTLE=2 RAW=1.
 * See docs/benchmarks.md.
 */
import process from "node:process";
import { ensureBuilt, log, parseArgs } from "./bench/common.ts";
import { cmdAll, cmdReport } from "./bench/all.ts";
import { cmdRaw } from "./bench/raw.ts";
import { cmdColdphases, cmdColdstart, cmdDrain, cmdEnqueue, cmdIdlemem, cmdLatency, cmdWait } from "./bench/workloads.ts";

const { sub = "all", args } = parseArgs(process.argv.slice(2));
// The run owns its settings: a settings file of the shell must not change what is measured.
delete process.env.CELERITY_SETTINGS;

const commands: Record<string, (a: typeof args) => Promise<void>> = {
  enqueue: async (a) => {
    await ensureBuilt();
    await cmdEnqueue(a);
  },
  drain: async (a) => {
    await ensureBuilt();
    await cmdDrain(a);
  },
  latency: async (a) => {
    await ensureBuilt();
    await cmdLatency(a);
  },
  coldstart: async (a) => {
    await ensureBuilt();
    await cmdColdstart(a);
  },
  idlemem: async (a) => {
    await ensureBuilt();
    await cmdIdlemem(a);
  },
  coldphases: async (a) => {
    await ensureBuilt();
    await cmdColdphases(a);
  },
  raw: cmdRaw,
  build: () => ensureBuilt(true),
  wait: async (a) => {
    await ensureBuilt();
    await cmdWait(a);
  },
  report: cmdReport,
  all: cmdAll,
};

const fn = commands[sub];
if (!fn) {
  process.stderr.write(`usage: bench.ts [${Object.keys(commands).join("|")}] [--flags]\n`);
  process.exit(2);
}
try {
  await fn(args);
  process.exit(0);
} catch (err) {
  log(`${sub} failed: ${(err as Error).stack ?? String(err)}`);
  process.exit(1);
}
