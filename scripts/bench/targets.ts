/**
 * Celerity's targets, set against the peers' medians.
 *
 * The peer figures below are copied from ../shared/peers/results-2026-11-23.md (table and "Reading"
 * section: medians of 3 full runs of ../shared/peers/run.sh on this project's 2-vCPU VM, BullMQ
 * 6.7.0 on Redis 7.0 without persistence). They come from ANOTHER run: the machine's speed drifts
 * by tens of percent between runs, so the real comparison is a side-by-side run,
 * `EXTRA_SUITE=$PWD/scripts/peers-suite.sh SETUPS="bullmq-redis celerity" ../shared/peers/run.sh`.
 */
import { median, type BenchRecord, ENQUEUE_VARIANT, WORKLOAD } from "./common.ts";

/** BullMQ / Redis (no persistence) medians, 2026-11-23. */
export const PEER_2026_11_23 = {
  enqueueSequential: 7_630, // a. add() loop, sequential await (tasks/s)
  enqueue100InFlight: 26_604, // a. add(), 100 in flight (tasks/s)
  drainC50: 13_131, // b. Worker concurrency 50 (tasks/s)
  p50: 0.96, // c. add() + waitUntilFinished, Worker c=1 (ms)
  p99: 5.38, // c. (ms)
  coldStart: 272, // d. node oneshot.js: connect, add 1 job, close (ms)
  nodeBaseline: 90, // d. node -e 0 in those runs (89.9 ms)
  idleRss: 67.8, // e. Worker concurrency 1 (MB)
} as const;

interface Row {
  target: string;
  celerity: string;
  peer: string;
  goal: string;
  ratio: string;
  pass: boolean | undefined;
  /** The same path measured here without Celerity (raw nats.js) or with task events off. */
  reference?: string;
}

const fmt = (x: number, digits = 0) => x.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });

/** Median of Celerity's records for a workload / variant prefix / metric; undefined when absent. */
function pick(recs: BenchRecord[], workload: string, variant: (v: string) => boolean, metric: string, peer = "celerity", setup: (s: string) => boolean = () => true): { variant: string; value: number }[] {
  const groups = new Map<string, number[]>();
  for (const r of recs) {
    if (r.peer !== peer || r.workload !== workload || r.metric !== metric || !variant(r.variant) || !setup(r.setup ?? "")) continue;
    const list = groups.get(r.variant) ?? [];
    list.push(r.value);
    groups.set(r.variant, list);
  }
  return [...groups].map(([v, xs]) => ({ variant: v, value: median(xs) }));
}

/** The targets table (Markdown) for the records of one run. */
export function targetsTable(recs: BenchRecord[]): string {
  const P = PEER_2026_11_23;
  const rows: Row[] = [];
  const atLeast = (label: string, got: { variant: string; value: number }[], peer: number, factor: number, unit: string, reference?: (variant: string) => string) => {
    if (got.length === 0) rows.push({ target: label, celerity: "not measured", peer: `${fmt(peer)} ${unit}`, goal: `≥ ${fmt(peer * factor)}`, ratio: "", pass: undefined });
    for (const g of got) {
      rows.push({
        target: `${label}: ${g.variant}`,
        celerity: `${fmt(g.value)} ${unit}`,
        peer: `${fmt(peer)} ${unit}`,
        goal: `≥ ${factor}× = ${fmt(peer * factor)}`,
        ratio: `${fmt(g.value / peer, 2)}×`,
        pass: g.value >= peer * factor,
        reference: reference?.(g.variant),
      });
    }
  };
  const atMost = (label: string, got: { variant: string; value: number }[], peer: number, factor: number, unit: string, digits: number, reference?: (variant: string) => string) => {
    if (got.length === 0) rows.push({ target: label, celerity: "not measured", peer: `${fmt(peer, digits)} ${unit}`, goal: `≤ ${fmt(peer * factor, digits)}`, ratio: "", pass: undefined });
    for (const g of got) {
      rows.push({
        target: `${label}: ${g.variant}`,
        celerity: `${fmt(g.value, digits)} ${unit}`,
        peer: `${fmt(peer, digits)} ${unit}`,
        goal: `≤ ${factor === 1 ? "" : `${factor}× = `}${fmt(peer * factor, digits)}`,
        ratio: `${fmt(g.value / peer, 2)}×`,
        pass: g.value <= peer * factor,
        reference: reference?.(g.variant),
      });
    }
  };
  // Reference figures of this run: raw nats.js (workload f) and Celerity with task events off.
  const one = (workload: string, variant: string, metric: string, peer = "nats.js") => pick(recs, workload, (x) => x === variant, metric, peer)[0]?.value;
  // The raw sequential publishes also run on memory storage: the references are the file-storage ones.
  const raw = (variant: string, metric = "throughput") => pick(recs, WORKLOAD.raw, (x) => x === variant, metric, "nats.js", (st) => !st.includes("memory"))[0]?.value;
  const ref = (parts: [string, number | undefined, number][]) =>
    parts.filter(([, v]) => v !== undefined).map(([l, v, d]) => `${l} ${fmt(v!, d)}`).join("; ");
  const off = " [events: false]";

  const enq = (v: string) => (x: string) => x === v;
  atLeast("a. enqueue, sequential await", pick(recs, WORKLOAD.enqueue, enq(ENQUEUE_VARIANT.seq), "throughput"), P.enqueueSequential, 1.5, "tasks/s", () =>
    ref([
      ["raw acked publish (file, msg id)", raw("acked publish, sequential await, Nats-Msg-Id"), 0],
      ["core PING/PONG", raw("core PING/PONG (nc.flush()), sequential"), 0],
      ["events off", one(WORKLOAD.enqueue, ENQUEUE_VARIANT.seq + off, "throughput", "celerity"), 0],
    ]));
  atLeast("a. enqueue, pipelined (peer: add(), 100 in flight)", pick(recs, WORKLOAD.enqueue, (x) => x === ENQUEUE_VARIANT.p100 || x === ENQUEUE_VARIANT.p1000, "throughput"), P.enqueue100InFlight, 2, "tasks/s", (v) =>
    ref([
      [`raw acked publish, ${v === ENQUEUE_VARIANT.p100 ? 100 : 1000} in flight`, raw(`acked publish, Nats-Msg-Id, ${v === ENQUEUE_VARIANT.p100 ? 100 : 1000} in flight`), 0],
      ["events off", one(WORKLOAD.enqueue, v + off, "throughput", "celerity"), 0],
    ]));
  atLeast("b. drain, c=50", pick(recs, WORKLOAD.drain, (x) => x.startsWith("Worker concurrency 50 ") && !x.includes("events: false"), "throughput"), P.drainC50, 1.5, "tasks/s", (v) =>
    ref([
      ["raw worker (store, then ack), prefetch 50", raw("drain: pull, store result (acked), then ack; prefetch 50"), 0],
      ["events off", one(WORKLOAD.drain, v + off, "throughput", "celerity"), 0],
    ]));
  const lat = (x: string) => !x.includes("events: false");
  const rt = "JetStream round trip: acked publish, pull (prefetch 1), core reply, worker stores a result before its ack";
  for (const [m, peer] of [["p50", P.p50], ["p99", P.p99]] as const) {
    atMost(`c. latency ${m}`, pick(recs, WORKLOAD.latency, lat, m), peer, 0.5, "ms", 2, (v) =>
      ref([
        ["raw JetStream round trip", raw(rt, m), 2],
        ["raw core request/reply", raw("core request/reply to another process, sequential", m), 2],
        ["events off", one(WORKLOAD.latency, v + off, m, "celerity"), 2],
      ]));
  }

  // Cold start: time above `node -e 0` measured in THIS run, against BullMQ's 272 - 90 ms.
  const base = pick(recs, WORKLOAD.coldstart, (x) => x === "node -e 0", "wall", "baseline")[0];
  const peerAbove = P.coldStart - P.nodeBaseline;
  const cold = pick(recs, WORKLOAD.coldstart, (x) => !x.startsWith("diagnostic"), "wall");
  if (!base || cold.length === 0) rows.push({ target: "d. cold start above node -e 0", celerity: "not measured", peer: `${peerAbove} ms`, goal: `≤ ${fmt(peerAbove / 4, 1)} ms`, ratio: "", pass: undefined });
  for (const g of base ? cold : []) {
    const above = g.value - base!.value;
    rows.push({
      target: `d. cold start above node -e 0 (${fmt(base!.value, 1)} ms here): ${g.variant}`,
      celerity: `${fmt(above, 1)} ms (${fmt(g.value, 1)} total)`,
      peer: `${peerAbove} ms (${P.coldStart} − ${P.nodeBaseline})`,
      goal: `≤ ¼ = ${fmt(peerAbove / 4, 1)} ms`,
      ratio: `${fmt(above / peerAbove, 2)}×`,
      pass: above <= peerAbove / 4,
      reference: one(WORKLOAD.phases, g.variant, "wall, interleaved", "celerity") === undefined ? "" : ref([
        ["interleaved run: whole process", one(WORKLOAD.phases, g.variant, "wall, interleaved", "celerity"), 0],
        ["node -e 0", one(WORKLOAD.phases, "node -e 0", "wall, interleaved", "baseline"), 0],
        ["until script body", one(WORKLOAD.phases, g.variant, "until script body", "celerity"), 0],
        ["node -e 0's", one(WORKLOAD.phases, "node -e 0", "until script body", "baseline"), 0],
        ["connect", one(WORKLOAD.phases, g.variant, "connect", "celerity"), 0],
        ["send", one(WORKLOAD.phases, g.variant, "send (until PubAck)", "celerity"), 0],
        ["close", one(WORKLOAD.phases, g.variant, "close", "celerity"), 0],
      ]),
    });
  }
  for (const g of pick(recs, WORKLOAD.idlemem, () => true, "rss")) {
    rows.push({
      target: `e. idle worker RSS: ${g.variant}`, celerity: `${fmt(g.value, 1)} MB`, peer: `${fmt(P.idleRss, 1)} MB`, goal: "≤ 50 MB", ratio: `${fmt(g.value / P.idleRss, 2)}×`, pass: g.value <= 50,
      reference: ref([
        ["node alone", pick(recs, WORKLOAD.idlemem, (x) => x.startsWith("node alone"), "rss", "baseline")[0]?.value, 1],
        ["raw nats.js worker", pick(recs, WORKLOAD.idlemem, (x) => x.startsWith("raw nats.js worker"), "rss", "nats.js")[0]?.value, 1],
      ]),
    });
  }

  const out = [
    "Targets. Peer figures: BullMQ 6.7.0 / Redis (no persistence) medians from ../shared/peers/results-2026-11-23.md,",
    "i.e. ANOTHER run on this VM (its speed drifts tens of percent between runs). The real comparison is a",
    'side-by-side run: EXTRA_SUITE=$PWD/scripts/peers-suite.sh SETUPS="bullmq-redis celerity" ../shared/peers/run.sh',
    "",
    "| Target | Celerity (median here) | BullMQ (2026-11-23 run) | Goal | Celerity / BullMQ | Result | Same path here without Celerity / with events off |",
    "|---|---:|---:|---:|---:|---|---|",
  ];
  for (const r of rows) out.push(`| ${r.target} | ${r.celerity} | ${r.peer} | ${r.goal} | ${r.ratio} | ${r.pass === undefined ? "–" : r.pass ? "**pass**" : "**miss**"} | ${r.reference ?? ""} |`);
  return out.join("\n") + "\n";
}
