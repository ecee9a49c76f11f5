/**
 * Reference figures measured directly on nats.js, without Celerity, on the same server: what the
 * broker, the socket and the machine allow. `docs/benchmarks.md` ("where the time goes") reads
 * Celerity's rows against these.
 *
 * Rows (workload "f. reference: raw nats.js, no Celerity", peer "nats.js"):
 * - core PING/PONG round trip (`nc.flush()`), sequential
 * - acked JetStream publish, sequential: file + Nats-Msg-Id, file, memory, memory + Nats-Msg-Id
 * - acked publish pipelined (file + Nats-Msg-Id), 100 and 1000 in flight
 * - core request/reply to another process (scripts/bench/raw-worker.mjs)
 * - JetStream round trip: publish to a work queue, the raw worker pulls it and replies on core
 * - drain: the raw worker stores a result per task (acked publish) and then acks, prefetch 1 and 50
 */
import { createInbox, headers as natsHeaders, type MsgHdrs, type NatsConnection } from "@nats-io/nats-core";
import { AckPolicy, jetstreamManager, type JetStreamManager, type StreamConfig } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { performance } from "node:perf_hooks";
import { cpuPerTask, emit, log, num, ownCpuMs, percentile, processCpuMs, RAW_WORKER, removeQuietly, round, serversOf, sleep, startWorker, stopGroup, tempFile, waitFile, WORKLOAD, type Args } from "./common.ts";

/** Acked publishing on one wildcard inbox (the technique of sdk/client/publisher.ts, minus retries). */
class MuxPublisher {
  readonly #prefix = createInbox();
  readonly #waiting = new Map<string, (ok: boolean) => void>();
  #seq = 0;
  constructor(private readonly nc: NatsConnection) {
    nc.subscribe(`${this.#prefix}.*`, {
      callback: (_e, m) => {
        const key = m.subject.slice(this.#prefix.length + 1);
        const done = this.#waiting.get(key);
        if (!done) return;
        this.#waiting.delete(key);
        done((m.headers?.code ?? 0) === 0 && !m.string().includes('"error"'));
      },
    });
  }
  publish(subject: string, data: Uint8Array, headers?: MsgHdrs): Promise<void> {
    const key = (++this.#seq).toString(36);
    return new Promise((resolve, reject) => {
      this.#waiting.set(key, (ok) => (ok ? resolve() : reject(new Error(`publish to ${subject} refused`))));
      this.nc.publish(subject, data, { reply: `${this.#prefix}.${key}`, ...(headers ? { headers } : {}) });
    });
  }
}

/** A payload of the size of a Celerity task message for `bench.noop` ({i: n}, a reply subject). */
const PAYLOAD = new Uint8Array(150).fill(97);
const NS = 1_000_000_000;

async function recreate(jsm: JetStreamManager, config: Partial<StreamConfig> & { name: string }): Promise<void> {
  try {
    await jsm.streams.delete(config.name);
  } catch {
    /* absent */
  }
  await jsm.streams.add(config);
}

const workQueue = (name: string, subject: string, storage: "file" | "memory") =>
  ({ name, subjects: [`${subject}.>`], retention: "workqueue", storage, duplicate_window: 120 * NS, num_replicas: 1 }) as Partial<StreamConfig> & { name: string };

function msgIdHeaders(id: string, extra?: Record<string, string>): MsgHdrs {
  const h = natsHeaders();
  h.set("Nats-Msg-Id", id);
  for (const [k, v] of Object.entries(extra ?? {})) h.set(k, v);
  return h;
}

export async function cmdRaw(args: Args): Promise<void> {
  const servers = serversOf(args);
  const n = num(args, "n", 20000);
  const seqN = num(args, "seq-n", 5000);
  const latN = num(args, "lat-n", 1000);
  const warm = num(args, "warmup", 50);
  const rep = num(args, "rep", 1);
  const nc = await connect({ servers, name: "bench-raw" });
  const jsm = await jetstreamManager(nc);
  const version = nc.info?.version ?? "?";
  const setup = (storage: string) => `NATS JetStream ${version}, ${storage} storage`;
  const rec = (storage: string, variant: string, metric: string, value: number, unit: string, extra: Record<string, unknown> = {}) =>
    emit({ peer: "nats.js", setup: setup(storage), workload: WORKLOAD.raw, variant, rep, metric, value, unit, ...extra });
  const pub = new MuxPublisher(nc);
  const run = `${process.pid}`;
  const spid = args["server-pid"] ? Number(args["server-pid"]) : undefined;

  // 1. Core PING/PONG: the floor of any acknowledged operation from node on this machine.
  {
    log("raw: core PING/PONG");
    for (let i = 0; i < 200; i++) await nc.flush();
    const s: number[] = [];
    const t0 = performance.now();
    for (let i = 0; i < seqN; i++) {
      const t = performance.now();
      await nc.flush();
      s.push(performance.now() - t);
    }
    const secs = (performance.now() - t0) / 1000;
    s.sort((a, b) => a - b);
    rec("no stream", "core PING/PONG (nc.flush()), sequential", "p50", round(percentile(s, 50) * 1000, 0), "µs", { n: seqN });
    rec("no stream", "core PING/PONG (nc.flush()), sequential", "throughput", round(seqN / secs, 0), "round trips/s", { n: seqN });
  }

  // 2. Sequential acked publish, by storage and with / without Nats-Msg-Id dedupe.
  await recreate(jsm, workQueue("RAW_FILE", "raw.file", "file"));
  await recreate(jsm, workQueue("RAW_MEM", "raw.mem", "memory"));
  for (const [storage, subject, withId] of [["file", "raw.file", true], ["file", "raw.file", false], ["memory", "raw.mem", false], ["memory", "raw.mem", true]] as const) {
    const variant = `acked publish, sequential await${withId ? ", Nats-Msg-Id" : ", no msg id"}`;
    log(`raw: ${variant} (${storage})`);
    for (let i = 0; i < 100; i++) await pub.publish(`${subject}.x`, PAYLOAD, withId ? msgIdHeaders(`w${run}-${storage}-${withId}-${i}`) : undefined);
    const s: number[] = [];
    const cpu0 = ownCpuMs();
    const srv0 = processCpuMs(spid);
    const t0 = performance.now();
    for (let i = 0; i < seqN; i++) {
      const t = performance.now();
      await pub.publish(`${subject}.x`, PAYLOAD, withId ? msgIdHeaders(`${run}-${storage}-${i}`) : undefined);
      s.push(performance.now() - t);
    }
    const secs = (performance.now() - t0) / 1000;
    s.sort((a, b) => a - b);
    rec(storage, variant, "throughput", round(seqN / secs, 0), "msgs/s", {
      n: seqN, client_cpu_us_per_task: cpuPerTask(cpu0, ownCpuMs(), seqN), server_cpu_us_per_task: cpuPerTask(srv0, processCpuMs(spid), seqN),
    });
    rec(storage, variant, "p50", round(percentile(s, 50) * 1000, 0), "µs", { n: seqN });
  }

  // 3. Pipelined acked publish (file, Nats-Msg-Id), as Celerity's send() with many in flight.
  for (const lanes of [100, 1000]) {
    await jsm.streams.purge("RAW_FILE");
    log(`raw: acked publish, ${lanes} in flight`);
    let next = 0;
    const cpu0 = ownCpuMs();
    const srv0 = processCpuMs(spid);
    const t0 = performance.now();
    await Promise.all(Array.from({ length: lanes }, async () => {
      while (next < n) {
        const i = next++;
        await pub.publish("raw.file.x", PAYLOAD, msgIdHeaders(`${run}-p${lanes}-${i}`));
      }
    }));
    const secs = (performance.now() - t0) / 1000;
    rec("file", `acked publish, Nats-Msg-Id, ${lanes} in flight`, "throughput", round(n / secs, 0), "msgs/s", {
      n, client_cpu_us_per_task: cpuPerTask(cpu0, ownCpuMs(), n), server_cpu_us_per_task: cpuPerTask(srv0, processCpuMs(spid), n),
    });
  }

  // 4-6 need the raw worker in its own process.
  const consumer = async (stream: string) => {
    await jsm.consumers.add(stream, { durable_name: "raw", ack_policy: AckPolicy.Explicit, max_ack_pending: -1, ack_wait: 30 * NS });
  };
  const resultsStream = {
    name: "RAW_RESULTS", subjects: ["raw.results.>"], retention: "limits", storage: "file", max_msgs_per_subject: 1, discard: "new",
    allow_direct: true, allow_rollup_hdrs: true, deny_delete: true, duplicate_window: 120 * NS, num_replicas: 1,
  } as Partial<StreamConfig> & { name: string };

  // 4. Core request/reply to another process; 5. JetStream round trip through the raw worker:
  // acked publish to the work queue, pulled (prefetch 1), replied on core; then the same with the
  // worker storing a result (acked) before it acks, as Celerity's worker does.
  for (const store of [false, true]) {
    await recreate(jsm, workQueue("RAW_TASKS", "raw.tasks", "file"));
    await consumer("RAW_TASKS");
    await recreate(jsm, resultsStream);
    const readyFile = tempFile("raw-ready");
    const extra = ["--stream", "RAW_TASKS", "--consumer", "raw", "--prefetch", "1", ...(store ? ["--store", "raw.results"] : [])];
    const worker = startWorker({ servers, concurrency: 1, readyFile, script: RAW_WORKER, extraArgs: extra });
    try {
      await waitFile(readyFile, worker);
      if (!store) {
        log("raw: core request/reply to the raw worker");
        const s: number[] = [];
        for (let i = 0; i < warm + latN; i++) {
          const t = performance.now();
          await nc.request("raw.echo", PAYLOAD, { timeout: 5000 });
          if (i >= warm) s.push(performance.now() - t);
        }
        s.sort((a, b) => a - b);
        for (const p of [50, 99]) rec("no stream", "core request/reply to another process, sequential", `p${p}`, round(percentile(s, p), 3), "ms", { n: latN });
      }
      log(`raw: JetStream round trip through the raw worker${store ? " (result stored before the ack)" : ""}`);
      const inbox = createInbox();
      let replied: (() => void) | undefined;
      const sub = nc.subscribe(`${inbox}.*`, { callback: () => replied?.() });
      const r: number[] = [];
      const acked: number[] = [];
      for (let i = 0; i < warm + latN; i++) {
        const t = performance.now();
        const reply = new Promise<void>((res) => (replied = res));
        let tAck = 0;
        await Promise.all([
          pub.publish("raw.tasks.x", PAYLOAD, msgIdHeaders(`${run}-rt${store}-${i}`, { "Raw-Reply": `${inbox}.${i}` })).then(() => (tAck = performance.now())),
          reply,
        ]);
        if (i >= warm) {
          r.push(performance.now() - t);
          acked.push(tAck - t);
        }
      }
      sub.unsubscribe();
      r.sort((a, b) => a - b);
      acked.sort((a, b) => a - b);
      const v = store
        ? "JetStream round trip: acked publish, pull (prefetch 1), core reply, worker stores a result before its ack"
        : "JetStream round trip: acked publish, pull (prefetch 1), core reply, ack";
      for (const p of [50, 90, 99]) rec("file", v, `p${p}`, round(percentile(r, p), 3), "ms", { n: latN });
      if (!store) rec("file", "JetStream round trip: of which publish until PubAck", "p50", round(percentile(acked, 50), 3), "ms", { n: latN });
    } finally {
      await stopGroup(worker);
      removeQuietly(readyFile);
    }
  }

  // 6. Drain: the raw worker stores a result per task (acked) and then acks it.
  for (const prefetch of [1, 50]) {
    await recreate(jsm, workQueue("RAW_TASKS", "raw.tasks", "file"));
    await consumer("RAW_TASKS");
    await recreate(jsm, resultsStream);
    log(`raw: drain, prefetch ${prefetch}: enqueue ${n}`);
    let next = 0;
    await Promise.all(Array.from({ length: 1000 }, async () => {
      while (next < n) {
        const i = next++;
        await pub.publish("raw.tasks.x", PAYLOAD, msgIdHeaders(`${run}-d${prefetch}-${i}`));
      }
    }));
    const tSpawn = performance.now();
    const worker = startWorker({ servers, concurrency: prefetch, script: RAW_WORKER, extraArgs: ["--stream", "RAW_TASKS", "--consumer", "raw", "--prefetch", String(prefetch), "--store", "raw.results"] });
    let tFirst: number | undefined;
    let tLast = 0;
    let first = 0;
    let cpuFirst: (number | undefined)[] = [];
    let cpuLast: (number | undefined)[] = [];
    try {
      for (;;) {
        const done = (await jsm.streams.info("RAW_RESULTS")).state.messages;
        const now = performance.now();
        if (done > 0 && tFirst === undefined) {
          tFirst = now;
          first = done;
          cpuFirst = [processCpuMs(worker.pid), processCpuMs(spid)];
        }
        if (done >= n) {
          tLast = now;
          cpuLast = [processCpuMs(worker.pid), processCpuMs(spid)];
          break;
        }
        if (worker.exitCode !== null) throw new Error(`raw worker exited with ${done}/${n} stored`);
        if (now - tSpawn > 120_000) throw new Error(`raw drain timeout, ${done}/${n} stored`);
        await sleep(10);
      }
    } finally {
      await stopGroup(worker);
    }
    const steady = (tLast - tFirst!) / 1000;
    rec("file", `drain: pull, store result (acked), then ack; prefetch ${prefetch}`, "throughput", round((n - 1) / steady, 0), "tasks/s", {
      n, seconds_first_to_last: round(steady, 3),
      worker_cpu_us_per_task: cpuPerTask(cpuFirst[0], cpuLast[0], n - first), server_cpu_us_per_task: cpuPerTask(cpuFirst[1], cpuLast[1], n - first),
    });
  }

  for (const s of ["RAW_FILE", "RAW_MEM", "RAW_TASKS", "RAW_RESULTS"]) await jsm.streams.delete(s).catch(() => {});
  await nc.close();
}
