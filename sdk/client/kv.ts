/**
 * Key-value buckets of a namespace (beat's schedule, eternal leases, handler definitions,
 * workflows), opened one way for every part of the SDK that keeps state in one.
 */
import type { KV } from "@nats-io/kv";
import type { Client } from "./client.ts";

/**
 * Opens KV bucket `bucket`, creating it when missing (history 1, the namespace's replicas and
 * storage). Idempotent: concurrent creators all end with the same bucket. @nats-io/kv is loaded on
 * first use, so a client that never opens a bucket (a one-shot sender) does not pay for it.
 */
export async function openBucket(client: Client, bucket: string): Promise<KV> {
  const [{ jetstream }, { Kvm }] = await Promise.all([import("@nats-io/jetstream"), import("@nats-io/kv")]);
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

/**
 * How far apart two contenders' clocks may be before one can take a KV lease the other is renewing
 * (beat's lease, eternal tasks'): a lease's `expiresAt`, written on the holder's clock, counts as
 * passed only this much later on the reader's. A dead holder is still noticed within a lease by
 * its revision standing still on the reader's own clock.
 */
export function clockSlackMs(leaseMs: number): number {
  return Math.max(leaseMs, 30_000);
}
