/**
 * Creates the streams and the results bucket of a namespace, idempotently. Works on nats-server
 * 2.9.10: only features that server has are used (no per-message TTL, no stream metadata).
 */
import type { JetStreamManager, StreamConfig } from "@nats-io/jetstream";
import type { Names } from "../protocol/mod.ts";

/** What topology creation needs from settings. */
export interface TopologyOptions {
  resultExpires: number;
  eventsMaxAge: number;
  eventsMaxBytes: number;
  dlqMaxAge: number;
  replicas: number;
  storage: "file" | "memory";
  /** Seconds within which a re-sent task id (Nats-Msg-Id) is recognised as a duplicate. */
  duplicateWindow?: number;
  /** Seconds a revocation is kept. */
  revokeExpires?: number;
  /** Seconds a worker's registry entry lives without a heartbeat. */
  workerLease?: number;
}

const NS_PER_S = 1_000_000_000;

/** Seconds a worker's registry entry outlives its last heartbeat (workers beat every lease/3). */
export const WORKER_LEASE_S = 15;

/** A KV bucket's stream, as @nats-io/kv creates it, with a bucket-wide max age. */
function kvStream(bucket: string, maxAgeSeconds: number, common: { storage: "file" | "memory"; num_replicas: number }): Partial<StreamConfig> {
  return {
    name: `KV_${bucket}`,
    subjects: [`$KV.${bucket}.>`],
    retention: "limits" as never,
    max_msgs_per_subject: 1,
    max_age: maxAgeSeconds * NS_PER_S,
    discard: "new" as never,
    allow_rollup_hdrs: true,
    deny_delete: true,
    allow_direct: true,
    ...common,
  };
}

/** The stream configurations of a namespace, as data (docs/protocol.md mirrors them). */
export function streamConfigs(n: Names, o: TopologyOptions): Partial<StreamConfig>[] {
  const common = { storage: o.storage, num_replicas: o.replicas } as const;
  // Tasks, and tasks waiting for their ETA: removed once acked, deduplicated on Nats-Msg-Id.
  const workQueue = (name: string, wildcard: string): Partial<StreamConfig> => ({
    name,
    subjects: [wildcard],
    retention: "workqueue" as never,
    discard: "old" as never,
    duplicate_window: (o.duplicateWindow ?? 120) * NS_PER_S,
    ...common,
  });
  return [
    workQueue(n.tasksStream, n.tasksWildcard),
    workQueue(n.scheduledStream, n.scheduledWildcard),
    {
      name: n.eventsStream,
      subjects: [n.eventsWildcard],
      retention: "limits",
      max_age: o.eventsMaxAge * NS_PER_S,
      max_bytes: o.eventsMaxBytes,
      discard: "old",
      ...common,
    },
    {
      name: n.dlqStream,
      subjects: [n.dlqWildcard],
      retention: "limits",
      max_age: o.dlqMaxAge * NS_PER_S,
      discard: "old",
      ...common,
    },
    // Buckets are KV buckets (KV_<bucket> on $KV.<bucket>.>, as @nats-io/kv makes them), so KV
    // tools (`nats kv get`) read them. A result's dedupe window must not outlive the result.
    { ...kvStream(n.resultsBucket, o.resultExpires, common), duplicate_window: Math.min(120, o.resultExpires) * NS_PER_S },
    kvStream(n.revokedBucket, o.revokeExpires ?? 86_400, common),
    kvStream(n.workersBucket, o.workerLease ?? WORKER_LEASE_S, common),
    // Rate windows are short-lived counters: an hour covers every window size we accept (/s, /m, /h).
    kvStream(n.ratesBucket, 3600, common),
  ] as Partial<StreamConfig>[];
}

/** Adds each stream that does not exist yet. Existing streams are left as operators configured them. */
export async function ensureStreams(jsm: JetStreamManager, configs: Partial<StreamConfig>[]): Promise<void> {
  for (const config of configs) {
    try {
      await jsm.streams.info(config.name!);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      try {
        await jsm.streams.add(config as Partial<StreamConfig> & { name: string });
      } catch (addErr) {
        // Another process created it between our info and add: that is the idempotent outcome.
        const message = (addErr as Error).message;
        if (/overlap/i.test(message)) {
          throw new Error(
            `cannot create stream ${config.name}: its subjects ${JSON.stringify(config.subjects)} overlap an existing stream ` +
              `(left by an older Celerity version or another application?). List streams with \`nats stream ls\` and remove ` +
              `the old one, or use another namespace. Server said: ${message}`,
            { cause: addErr },
          );
        }
        if (!/already in use|already exists/i.test(message)) throw addErr;
      }
    }
  }
}

/**
 * JetStream API error codes that no retry changes: JetStream off (server or account), another
 * stream holds our subjects, or the account's stream or storage limit is reached. Each needs an
 * operator; retrying a publish for a minute would only hide the reason.
 */
const PERMANENT_API_ERRORS = new Set([
  10076, // JetStream not enabled
  10039, // JetStream not enabled for account
  10065, // subjects overlap with an existing stream
  10027, // maximum number of streams reached
  10047, // insufficient storage resources available (account limit)
]);

/**
 * True when creating the topology failed for a reason only an operator can change (see
 * {@link PERMANENT_API_ERRORS}; nats.js's `JetStreamNotEnabled` is the server answering
 * `$JS.API.INFO` with "no responders"). Follows `cause`, since our own errors wrap the server's.
 */
export function isPermanentTopologyError(err: unknown): boolean {
  type Failure = { name?: string; apiError?: () => { err_code?: number }; cause?: unknown };
  for (let e = err as Failure | undefined, depth = 0; e && depth < 5; e = e.cause as Failure | undefined, depth++) {
    if (e.name === "JetStreamNotEnabled") return true;
    // nats.js's JetStreamApiError keeps the server's answer private; apiError() returns a copy.
    const code = typeof e.apiError === "function" ? e.apiError().err_code : undefined;
    if (code !== undefined && PERMANENT_API_ERRORS.has(code)) return true;
  }
  return false;
}

/** True for JetStream's "not found" answers (stream or consumer). */
export function isNotFound(err: unknown): boolean {
  const e = err as { code?: unknown; api_error?: { err_code?: number; code?: number }; message?: string };
  return e?.api_error?.code === 404 || e?.code === 404 || e?.code === "404" || /not found/i.test(e?.message ?? "");
}

/**
 * Creates the whole topology of a namespace (streams and results bucket). Takes the caller's
 * manager so its API requests wait the client's `requestTimeout`, not nats.js's default 5 s.
 */
export async function ensureTopology(jsm: JetStreamManager, n: Names, o: TopologyOptions): Promise<void> {
  await ensureStreams(jsm, streamConfigs(n, o));
}
