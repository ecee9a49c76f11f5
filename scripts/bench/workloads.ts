/**
 * The five workloads, with the peers' boundaries (../shared/peers/README.md). Each function runs
 * against a given server and prints its records as JSON lines on stdout.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { performance } from "node:perf_hooks";
import process from "node:process";
import type { Client } from "../../sdk/client/mod.ts";
import {
  benchClient,
  cpuPerTask,
  ownCpuMs,
  processCpuMs,
  emit,
  ENQUEUE_VARIANT,
  log,
  median,
  num,
  ONESHOT_DIST,
  RAW_WORKER,
  oneshotBundlePaths,
  percentile,
  removeQuietly,
  resetNamespace,
  round,
  serversOf,
  setupLabel,
  sleep,
  startWorker,
  stopGroup,
  streamCount,
  TASK,
  tempFile,
  waitFile,
  WORKER_JS,
  WORKLOAD,
  type Args,
  type EnqueueMode,
} from "./common.ts";
import { coldstart, idlemem } from "./proc.ts";

function enqueueMode(raw: string | undefined, fallback: EnqueueMode): EnqueueMode {
  const m = (raw ?? fallback) as EnqueueMode;
  if (!(m in ENQUEUE_VARIANT)) throw new Error(`--mode must be one of ${Object.keys(ENQUEUE_VARIANT).join(", ")}, got ${raw}`);
  return m;
}

/** `events: false` rows are labelled, default rows are not. */
function eventsOf(args: Args): boolean | undefined {
  return args.events === undefined ? undefined : args.events === "1" || args.events === "true";
}
const eventsTag = (events: boolean | undefined) => (events === false ? " [events: false]" : "");

/**
 * Sends tasks 0..n-1 and resolves when the last PubAck is in: the broker holds every task.
 * Timed from the first send() to the last PubAck.
 */
export async function enqueueTasks(client: Client, mode: EnqueueMode, n: number): Promise<{ seconds: number; lastId: string }> {
  let lastId = "";
  const t0 = performance.now();
  if (mode === "seq") {
    for (let i = 0; i < n; i++) {
      const h = await client.send(TASK, { i });
      if (i === n - 1) lastId = h.id;
    }
  } else {
    let next = 0;
    const lane = async () => {
      while (next < n) {
        const i = next++;
        const h = await client.send(TASK, { i });
        if (i === n - 1) lastId = h.id;
      }
    };
    await Promise.all(Array.from({ length: mode === "p100" ? 100 : 1000 }, lane));
  }
  return { seconds: (performance.now() - t0) / 1000, lastId };
}

/** The nats-server's pid when the caller knows it (--server-pid), for its CPU per task. */
function serverPid(args: Args): number | undefined {
  return args["server-pid"] ? Number(args["server-pid"]) : undefined;
}

async function enqueueAndVerify(client: Client, mode: EnqueueMode, n: number, rep: number, events: boolean | undefined, setup: string, spid: number | undefined): Promise<string> {
  const cpu0 = ownCpuMs();
  const srv0 = processCpuMs(spid);
  const { seconds, lastId } = await enqueueTasks(client, mode, n);
  const cpu1 = ownCpuMs();
  const srv1 = processCpuMs(spid);
  const held = await streamCount(client, client.names.tasksStream);
  if (held !== n) throw new Error(`enqueue: expected ${n} tasks in ${client.names.tasksStream}, found ${held}`);
  emit({
    setup, workload: WORKLOAD.enqueue, variant: ENQUEUE_VARIANT[mode] + eventsTag(events), rep, metric: "throughput", value: round(n / seconds, 0), unit: "tasks/s", n,
    seconds: round(seconds, 3), client_cpu_us_per_task: cpuPerTask(cpu0, cpu1, n), server_cpu_us_per_task: cpuPerTask(srv0, srv1, n),
  });
  return lastId;
}

/** a. enqueue: one client process, no worker. */
export async function cmdEnqueue(args: Args): Promise<void> {
  const servers = serversOf(args);
  const n = num(args, "n", 20000);
  const mode = enqueueMode(args.mode, "p100");
  const events = eventsOf(args);
  const client = await benchClient(servers, { events });
  try {
    const setup = setupLabel(args, client.nc.info?.version);
    await resetNamespace(client);
    log(`enqueue ${ENQUEUE_VARIANT[mode]}${eventsTag(events)}: n=${n}`);
    await enqueueAndVerify(client, mode, n, num(args, "rep", 1), events, setup, serverPid(args));
  } finally {
    await client.close();
  }
}

/** b. drain: enqueue n tasks, then start ONE worker process; a poller counts stored results every 10 ms. */
export async function cmdDrain(args: Args): Promise<void> {
  const servers = serversOf(args);
  const n = num(args, "n", 20000);
  const c = num(args, "concurrency", 1);
  const prefetch = args.prefetch === undefined ? undefined : num(args, "prefetch", c);
  const events = eventsOf(args);
  const rep = num(args, "rep", 1);
  // As the BullMQ suite does: c=1 after the sequential loop, c>1 after the fastest pipelined enqueue.
  const mode = enqueueMode(args["enqueue-mode"], c === 1 ? "seq" : "p1000");
  const pollMs = num(args, "poll-ms", 10);

  const sender = await benchClient(servers, { events });
  const setup = setupLabel(args, sender.nc.info?.version);
  await resetNamespace(sender);
  log(`drain c=${c} prefetch=${prefetch ?? "default"}${eventsTag(events)}: enqueue ${n} (${ENQUEUE_VARIANT[mode]})`);
  const lastId = await enqueueAndVerify(sender, mode, n, rep, events, setup, serverPid(args));
  await sender.close();

  const poller = await benchClient(servers, { events: false, name: "bench-poller" });
  const jsm = await poller.jsm();
  const results = `KV_${poller.names.resultsBucket}`;
  const tSpawn = performance.now();
  const worker = startWorker({ servers, concurrency: c, ...(prefetch === undefined ? {} : { prefetch }), ...(events === undefined ? {} : { events }) });
  let tFirst: number | undefined;
  let tLast = 0;
  const spid = serverPid(args);
  let cpuFirst: [number | undefined, number | undefined] = [undefined, undefined];
  let cpuLast: [number | undefined, number | undefined] = [undefined, undefined];
  let seenFirst = 0;
  try {
    for (;;) {
      const done = (await jsm.streams.info(results)).state.messages;
      const now = performance.now();
      if (done > 0 && tFirst === undefined) {
        tFirst = now;
        seenFirst = done;
        cpuFirst = [processCpuMs(worker.pid), processCpuMs(spid)];
      }
      if (done >= n) {
        tLast = now;
        cpuLast = [processCpuMs(worker.pid), processCpuMs(spid)];
        break;
      }
      if (worker.exitCode !== null) throw new Error(`worker exited (${worker.exitCode}) with ${done}/${n} results stored`);
      if (now - tSpawn > 300_000) throw new Error(`drain timeout, ${done}/${n} results stored`);
      await sleep(pollMs);
    }
    // Every task acked after its result: the work queue empties.
    const t0 = Date.now();
    let left = await streamCount(poller, poller.names.tasksStream);
    while (left > 0 && Date.now() - t0 < 10_000) {
      await sleep(20);
      left = await streamCount(poller, poller.names.tasksStream);
    }
    if (left > 0) throw new Error(`drain: ${left} tasks still in the work queue 10 s after the last result`);
  } finally {
    await stopGroup(worker);
  }
  const record = await poller.getRecord(lastId);
  const result = record?.result as { i?: number } | undefined;
  if (!record || record.state !== "SUCCESS" || result?.i !== n - 1) {
    throw new Error(`drain: the last task's stored result is wrong: ${JSON.stringify(record)}`);
  }
  await poller.close();
  const steady = (tLast - tFirst!) / 1000;
  // Unset, the worker's prefetch adapts to run times (docs/protocol.md §6.1): from c up to 4c.
  const p = prefetch === undefined ? `prefetch default: adaptive, ${c}–${4 * c}` : `prefetch ${prefetch}`;
  emit({
    setup,
    workload: WORKLOAD.drain,
    variant: `Worker concurrency ${c} (${p})${eventsTag(events)}`,
    rep,
    metric: "throughput",
    value: round((n - 1) / steady, 0),
    unit: "tasks/s",
    n,
    seconds_first_to_last: round(steady, 3),
    seconds_incl_worker_start: round((tLast - tSpawn) / 1000, 3),
    // CPU between the first and the last reading (start-up excluded), per task stored in that window.
    worker_cpu_us_per_task: cpuPerTask(cpuFirst[0], cpuLast[0], n - seenFirst),
    server_cpu_us_per_task: cpuPerTask(cpuFirst[1], cpuLast[1], n - seenFirst),
  });
}

/** c. round-trip latency: worker (c=1) ready, 50 warm-up calls, then n timed sequential call()s. */
export async function cmdLatency(args: Args): Promise<void> {
  const servers = serversOf(args);
  const n = num(args, "n", num(args, "lat-n", 1000));
  const warm = num(args, "warmup", 50);
  const events = eventsOf(args);
  const client = await benchClient(servers, { events });
  const setup = setupLabel(args, client.nc.info?.version);
  await resetNamespace(client);
  const readyFile = tempFile("ready");
  const prefetch = args.prefetch === undefined ? undefined : num(args, "prefetch", 1);
  const worker = startWorker({ servers, concurrency: 1, readyFile, ...(prefetch === undefined ? {} : { prefetch }), ...(events === undefined ? {} : { events }) });
  const samples: number[] = [];
  log(`latency: ${warm} warm-up + ${n} timed call()s${eventsTag(events)}`);
  try {
    await waitFile(readyFile, worker);
    for (let i = 0; i < warm + n; i++) {
      const t0 = performance.now();
      const r = (await client.call(TASK, { i }, { timeout: 30_000 })) as { i?: number };
      const ms = performance.now() - t0;
      if (r?.i !== i) throw new Error(`latency: bad result ${JSON.stringify(r)} for ${i}`);
      if (i >= warm) samples.push(ms);
    }
  } finally {
    await stopGroup(worker);
    removeQuietly(readyFile);
    await client.close();
  }
  samples.sort((a, b) => a - b);
  const p = prefetch === undefined || prefetch === 1 ? "" : `, prefetch ${prefetch}`;
  const base = { setup, workload: WORKLOAD.latency, variant: `call() (send + reply inbox), Worker c=1${p}${eventsTag(events)}`, rep: num(args, "rep", 1), unit: "ms", n };
  for (const p of [50, 90, 99]) emit({ ...base, metric: `p${p}`, value: round(percentile(samples, p), 3) });
}

/** The cold-start variants: which file runs, and with which extra environment. */
export const COLDSTART_VARIANTS = {
  bundled: { label: "bundled oneshot.mjs (esbuild, one file, shipped alone): connect, send 1 task, close" },
  "bundled-native": { label: "bundled oneshot.mjs, run inside the project (msgpackr native addon found)" },
  dist: { label: "node oneshot.mjs importing dist/client.js (unbundled)" },
  "dist-no-native": { label: "node oneshot.mjs importing dist/client.js, MSGPACKR_NATIVE_ACCELERATION_DISABLED=true" },
  callback: { label: "HPC callback: node respond.cjs send bench.noop (scripts/bundle-callback.mjs, shipped alone)" },
  "bundled-no-yaml": { label: "diagnostic: bundled oneshot.mjs with the yaml package left out (shipped alone)" },
  "raw-bundled": { label: "diagnostic: the same job on nats.js alone (oneshot-raw.mjs), bundled, shipped alone" },
} as const;
/** The variants a plain `coldstart` measures (the peers suite); `all` adds the diagnostic one. */
export const COLDSTART_DEFAULT: ColdstartVariant[] = ["bundled", "bundled-native", "dist", "dist-no-native", "callback"];
export type ColdstartVariant = keyof typeof COLDSTART_VARIANTS;

/** The command line of a one-shot variant (after `node`). */
function oneshotArgv(v: ColdstartVariant): string[] {
  const b = oneshotBundlePaths();
  if (v === "callback") return [b.callback, "send", TASK, "--args", JSON.stringify({ i: 1 })];
  return [{ bundled: b.shipped, "bundled-native": b.inProject, "bundled-no-yaml": b.noYaml, "raw-bundled": b.raw, dist: ONESHOT_DIST, "dist-no-native": ONESHOT_DIST }[v]];
}

/** The variants whose files exist (the callback needs scripts/bundle-callback.mjs). */
function available(variants: ColdstartVariant[]): ColdstartVariant[] {
  return variants.filter((v) => {
    const ok = existsSync(oneshotArgv(v)[0]!);
    if (!ok) log(`cold start: variant ${v} skipped (${oneshotArgv(v)[0]} was not built)`);
    return ok;
  });
}

/**
 * d. cold start of a one-off process (whole process, spawn to exit), measured by proc.js
 * coldstart. The topology exists beforehand; afterwards the tasks stream must hold exactly
 * runs + warmup tasks (checked per variant).
 */
export async function cmdColdstart(args: Args): Promise<void> {
  const servers = serversOf(args);
  const runs = num(args, "runs", num(args, "cold-runs", 10));
  const warmup = num(args, "warmup", 1);
  const variants = (args.variants ?? COLDSTART_DEFAULT.join(",")).split(",").filter(Boolean) as ColdstartVariant[];
  for (const v of variants) if (!(v in COLDSTART_VARIANTS)) throw new Error(`unknown cold-start variant ${v} (${Object.keys(COLDSTART_VARIANTS).join(", ")})`);
  const client = await benchClient(servers, { events: false, name: "bench-coldstart" });
  const setup = setupLabel(args, client.nc.info?.version);
  await resetNamespace(client);
  const jsm = await client.jsm();
  const failures: string[] = [];
  try {
    if (args.baseline === "1") {
      await coldstart({ proc: args.proc, runs, warmup, labels: { peer: "baseline", setup: "no broker", workload: WORKLOAD.coldstart, variant: "node -e 0" }, cmd: [process.execPath, "-e", "0"], env: process.env });
    }
    for (const v of available(variants)) {
      await jsm.streams.purge(client.names.tasksStream);
      const env: NodeJS.ProcessEnv = { ...process.env, CELERITY_SERVERS: servers };
      delete env.CELERITY_SETTINGS;
      delete env.MSGPACKR_NATIVE_ACCELERATION_DISABLED;
      if (v === "dist-no-native") env.MSGPACKR_NATIVE_ACCELERATION_DISABLED = "true";
      log(`coldstart ${v}: ${runs} runs after ${warmup} warm-up`);
      const peer = v === "raw-bundled" ? "nats.js" : "celerity";
      await coldstart({ proc: args.proc, runs, warmup, labels: { peer, setup, workload: WORKLOAD.coldstart, variant: COLDSTART_VARIANTS[v].label }, cmd: [process.execPath, ...oneshotArgv(v)], env });
      const held = await streamCount(client, client.names.tasksStream);
      if (held !== runs + warmup) failures.push(`cold start ${v}: expected ${runs + warmup} tasks in the stream, found ${held}`);
    }
  } finally {
    await client.close();
  }
  if (failures.length) throw new Error(failures.join("; "));
}

/**
 * e. worker idle memory, measured by proc.js idlemem (RSS and PSS of the worker's process tree).
 * With --baseline 1 it also measures, for reading the figure: node alone (idle, a timer keeping it
 * alive) and the raw nats.js worker (scripts/bench/raw-worker.mjs: connected, one pull open).
 */
export async function cmdIdlemem(args: Args): Promise<void> {
  const servers = serversOf(args);
  const c = num(args, "concurrency", 1);
  const settle = num(args, "settle", num(args, "idle-settle", 2));
  const rep = num(args, "rep", 1);
  const client = await benchClient(servers, { events: false, name: "bench-idlemem" });
  const setup = setupLabel(args, client.nc.info?.version);
  await resetNamespace(client);
  if (args.baseline === "1") {
    const jsm = await client.jsm();
    await jsm.streams.delete("RAW_IDLE").catch(() => {});
    await jsm.streams.add({ name: "RAW_IDLE", subjects: ["raw.idle.>"], retention: "workqueue" as never, storage: "file" as never });
    await jsm.consumers.add("RAW_IDLE", { durable_name: "raw", ack_policy: "explicit" as never });
  }
  await client.close();
  const readyFile = tempFile("ready");
  const argv = [process.execPath, WORKER_JS, "--servers", servers, "--concurrency", String(c)];
  if (args.prefetch !== undefined) argv.push("--prefetch", args.prefetch);
  log(`idlemem: worker concurrency ${c}, settle ${settle} s`);
  try {
    await idlemem({ proc: args.proc, readyFile, settle, labels: { peer: "celerity", setup, workload: WORKLOAD.idlemem, variant: `Worker concurrency ${c}`, rep }, cmd: argv, env: process.env });
    if (args.baseline === "1") {
      const idle = "require('fs').writeFileSync(process.env.BENCH_READY_FILE, String(process.pid)); setInterval(() => {}, 1e9)";
      await idlemem({ proc: args.proc, readyFile, settle, labels: { peer: "baseline", setup: "no broker", workload: WORKLOAD.idlemem, variant: "node alone, idle (node -e 'setInterval(...)')", rep }, cmd: [process.execPath, "-e", idle], env: process.env });
      await idlemem({
        proc: args.proc, readyFile, settle, labels: { peer: "nats.js", setup, workload: WORKLOAD.idlemem, variant: "raw nats.js worker (raw-worker.mjs), connected, one pull open", rep },
        cmd: [process.execPath, RAW_WORKER, "--servers", servers, "--stream", "RAW_IDLE", "--consumer", "raw", "--prefetch", "1"], env: process.env,
      });
      const c2 = await benchClient(servers, { events: false, name: "bench-idlemem" });
      await (await c2.jsm()).streams.delete("RAW_IDLE").catch(() => {});
      await c2.close();
    }
  } finally {
    removeQuietly(readyFile);
  }
}

/** Waits until the server accepts clients and JetStream answers (for scripts that start one). */
export async function cmdWait(args: Args): Promise<void> {
  const servers = serversOf(args);
  const deadline = Date.now() + num(args, "timeout", 20) * 1000;
  for (;;) {
    try {
      const client = await benchClient(servers, { events: false, name: "bench-wait" });
      try {
        await (await client.jsm()).getAccountInfo();
        return;
      } finally {
        await client.close();
      }
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`no JetStream server at ${servers}: ${(err as Error).message}`);
      await sleep(100);
    }
  }
}

/**
 * Diagnostic: where a one-shot process spends its time. Runs node -e 0 and each one-shot variant
 * round-robin (so load drifts hit them alike), `runs` times after one untimed round, the one-shot
 * with BENCH_PHASES=1, and emits medians: the whole process ("wall, interleaved"), "until script
 * body" (node's own start-up plus loading and evaluating the imports), connect, send (until the
 * PubAck), close, exit.
 */
export async function cmdColdphases(args: Args): Promise<void> {
  const servers = serversOf(args);
  const runs = num(args, "runs", 10);
  const variants = (args.variants ?? "bundled,bundled-no-yaml,dist").split(",").filter(Boolean) as ColdstartVariant[];
  const client = await benchClient(servers, { events: false, name: "bench-coldphases" });
  const setup = setupLabel(args, client.nc.info?.version);
  await resetNamespace(client);
  await client.close();
  const env: NodeJS.ProcessEnv = { ...process.env, CELERITY_SERVERS: servers, BENCH_PHASES: "1" };
  delete env.CELERITY_SETTINGS;
  delete env.MSGPACKR_NATIVE_ACCELERATION_DISABLED;
  const BASE = "node -e 0";
  const runnable = available(variants);
  const samples = new Map<string, Record<string, number[]>>();
  const add = (key: string, phase: string, x: number) => {
    const m = samples.get(key) ?? {};
    (m[phase] ??= []).push(x);
    samples.set(key, m);
  };
  for (let i = 0; i < runs + 1; i++) {
    for (const v of [BASE, ...runnable]) {
      const argv = v === BASE ? ["-e", "process.stderr.write(JSON.stringify({ body: performance.now() }))"] : oneshotArgv(v as ColdstartVariant);
      const t0 = performance.now();
      const r = spawnSync(process.execPath, argv, { encoding: "utf8", env: v === "dist-no-native" ? { ...env, MSGPACKR_NATIVE_ACCELERATION_DISABLED: "true" } : env });
      const wall = performance.now() - t0;
      if (r.status !== 0) throw new Error(`coldphases ${v}: exited ${r.status}: ${r.stderr}`);
      if (i === 0) continue;
      add(v, "wall", wall);
      // The callback prints no phases: only its whole-process time is kept.
      const last = r.stderr.trim().split("\n").pop() ?? "";
      if (last.startsWith("{")) for (const [k, x] of Object.entries(JSON.parse(last) as Record<string, number>)) add(v, k, x);
    }
  }
  const names: Record<string, string> = { wall: "wall, interleaved", body: "until script body", connect: "connect", send: "send (until PubAck)", close: "close", exit: "exit" };
  for (const [v, phases] of samples) {
    const labels = v === BASE
      ? { peer: "baseline", setup: "no broker", variant: BASE }
      : { peer: v === "raw-bundled" ? "nats.js" : "celerity", setup, variant: COLDSTART_VARIANTS[v as ColdstartVariant].label };
    for (const [k, xs] of Object.entries(phases)) emit({ ...labels, workload: WORKLOAD.phases, metric: names[k] ?? k, value: round(median(xs), 1), unit: "ms", n: runs });
  }
}

