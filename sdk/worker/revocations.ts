/**
 * The worker's view of the revocations bucket. The bucket is the truth (it survives every restart);
 * this is a cache of it fed by a KV watch that first replays what is stored, then follows live
 * changes and resumes from its last revision after a reconnect (the KV library's ordered consumer).
 */
import { Kvm, type KvWatchEntry } from "@nats-io/kv";
import type { JetStreamClient } from "@nats-io/jetstream";
import { decodeRevocation, UnsupportedVersionError, type Revocation } from "../protocol/mod.ts";

/**
 * Waits for `promise` at most `ms`; true if it settled in time. The timer is cleared either way:
 * a pending one would keep the process alive (for up to `ms`) after the worker has closed.
 */
export async function settledWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([promise.then(() => true, () => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Follows the revocations bucket. */
export class Revocations {
  readonly #byId = new Map<string, Revocation>();
  #stop: (() => void) | undefined;
  #ready!: Promise<void>;

  constructor(
    /** The worker client's JetStream context: its API requests wait the client's `requestTimeout`. */
    private readonly js: JetStreamClient,
    private readonly bucket: string,
    private readonly expiresMs: number,
    private readonly onRevoke: (r: Revocation) => void,
    /** An entry this worker cannot read (written by a newer protocol version). */
    private readonly onUnreadable?: (key: string, reason: string) => void,
  ) {}

  /** Starts watching; resolves once everything already stored has been read. */
  async start(): Promise<void> {
    const kv = await new Kvm(this.js).open(this.bucket);
    let markReady!: () => void;
    this.#ready = new Promise((r) => (markReady = r));
    // Stored entries arrive first, counting down `delta` to 0; an empty bucket sends none.
    if ((await kv.status()).values === 0) markReady();
    const watch = await kv.watch({ key: ">" });
    this.#stop = () => watch.stop();
    void (async () => {
      for await (const entry of watch as AsyncIterable<KvWatchEntry>) {
        // The last stored entry arrives with delta 0 (already flagged isUpdate by the library).
        if ((entry.delta ?? 0) === 0) markReady();
        if (entry.operation !== "PUT" || entry.value.length === 0) continue;
        let r: Revocation;
        try {
          r = decodeRevocation(entry.value);
        } catch (err) {
          // Not a revocation record: ignore it. One from a newer protocol: say so once per key.
          if (err instanceof UnsupportedVersionError) this.onUnreadable?.(entry.key, err.message);
          continue;
        }
        this.#byId.set(r.id, r);
        this.onRevoke(r);
      }
    })();
    // A watch that never reports its last stored entry must not block start-up forever.
    await settledWithin(this.#ready, 5000);
  }

  /** The revocation of `id`, if it is revoked and the revocation has not expired. */
  get(id: string): Revocation | undefined {
    const r = this.#byId.get(id);
    if (r && Date.now() - r.at > this.expiresMs) {
      this.#byId.delete(id);
      return undefined;
    }
    return r;
  }

  /** Number of revocations held (for inspect). */
  get size(): number {
    return this.#byId.size;
  }

  /** Stops watching. */
  stop(): void {
    this.#stop?.();
  }
}
