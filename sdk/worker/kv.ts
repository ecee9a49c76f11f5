/**
 * The worker's KV buckets (eternal leases, handler definitions): opened one way. The same code as
 * beat's `openBucket` and `isCasConflict` (sdk/beat/lease.ts), which the worker may not import.
 */
import { jetstream } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import type { Client } from "../client/mod.ts";

/**
 * Opens KV bucket `bucket`, creating it when missing (history 1, the namespace's replicas and
 * storage). Idempotent: concurrent creators all end with the same bucket.
 */
export async function openBucket(client: Client, bucket: string): Promise<KV> {
  const kvm = new Kvm(jetstream(client.nc, { timeout: client.settings.requestTimeout }));
  try {
    return await kvm.create(bucket, { history: 1, replicas: client.settings.replicas, storage: client.settings.storage });
  } catch (err) {
    if (/already in use|already exists/i.test((err as Error).message)) return await kvm.open(bucket);
    throw err;
  }
}

/** True for JetStream's "wrong last sequence" answer: a compare-and-set lost to another writer. */
export function isCasConflict(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown };
  return e?.code === 10071 || e?.code === 10164 || /wrong last sequence|key exists/i.test(String(e?.message ?? ""));
}
