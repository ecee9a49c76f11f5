/**
 * A lease in a JetStream KV bucket: one key holds `{holder, term, expiresAt}`. It is taken with
 * `create` (absent key) or a compare-and-set `update` on the revision read (expired record), and
 * renewed with a compare-and-set on the holder's last revision, so of any number of contenders
 * exactly one holds it; a holder whose compare-and-set fails has lost it and must stop acting.
 *
 * Expiry is judged twice, so clocks that disagree cannot keep a dead holder's lease alive: by the
 * record's `expiresAt` against the reader's clock, and by the reader watching the revision stay
 * unchanged for a whole lease period on its own clock.
 *
 * (sdk/worker/eternal.ts carries the same mechanism, since worker may not import beat; both
 * belong in one shared module once one is allowed for both.)
 */
import type { KV, KvEntry } from "@nats-io/kv";
import { clockSlackMs, isCasConflict, openBucket } from "../client/mod.ts";

/** Beat's public API has always offered these; they live in the client now (sdk/client/kv.ts). */
export { isCasConflict, openBucket };
import { decode, encode, PROTOCOL_VERSION } from "../protocol/mod.ts";

/** The stored lease. */
export interface LeaseRecord {
  v: number;
  /** Identity of the holder; "" after a release with nobody taking over yet. */
  holder: string;
  /** Incremented by every change of holder: a fencing token. */
  term: number;
  /** Epoch ms (holder's clock) after which others may take the lease; 0 once released. */
  expiresAt: number;
  /** Epoch ms of the last renewal (holder's clock). */
  renewedAt: number;
}

/** What one {@link KvLease.ensure} found. */
export interface LeaseView {
  /** This contender holds the lease now. */
  leader: boolean;
  /** This call took the lease (a new term began). */
  acquired: boolean;
  /** The holder's identity (this contender's when leader). */
  holder: string | undefined;
  term: number;
  expiresAt: number | undefined;
}

function readRecord(entry: KvEntry | null): LeaseRecord | undefined {
  if (!entry || entry.operation !== "PUT" || entry.value.length === 0) return undefined;
  try {
    const r = decode(entry.value) as LeaseRecord;
    return typeof r?.holder === "string" && typeof r.term === "number" ? r : undefined;
  } catch {
    return undefined;
  }
}

/** One contender for the lease at `key`. Times are passed in, so callers may use a virtual clock. */
export class KvLease {
  readonly #kv: KV;
  readonly #key: string;
  readonly #holder: string;
  readonly #leaseMs: number;
  #term = 0;
  #revision = 0;
  #held = false;
  #record: LeaseRecord | undefined;
  #observed: { revision: number; since: number } | undefined;

  constructor(kv: KV, key: string, holder: string, leaseMs: number) {
    this.#kv = kv;
    this.#key = key;
    this.#holder = holder;
    this.#leaseMs = leaseMs;
  }

  /** This contender held the lease at its last successful write. */
  get held(): boolean {
    return this.#held;
  }

  /** The term this contender holds (or last held). */
  get term(): number {
    return this.#term;
  }

  /**
   * Renews the lease when held, takes it when absent or expired, and otherwise reports the holder.
   * Throws only on a transport error (then the caller cannot know: it must not act as leader past
   * the expiry of its last renewal).
   */
  async ensure(at: number): Promise<LeaseView> {
    if (this.#held) {
      // The common path: one compare-and-set on the revision we wrote last.
      const renewed = await this.#write({ ...this.#record!, expiresAt: at + this.#leaseMs, renewedAt: at }, this.#revision);
      if (renewed) return this.#view(true, false);
    }
    const entry = await this.#kv.get(this.#key);
    const current = readRecord(entry);
    if (!current) {
      // Absent, deleted, or unreadable (written by hand or by a newer version): taken on the
      // stored revision, since create() would fail on an existing key and no one would ever lead.
      const record = { v: PROTOCOL_VERSION, holder: this.#holder, term: this.#term + 1, expiresAt: at + this.#leaseMs, renewedAt: at };
      return this.#view(await this.#write(record, entry?.revision ?? 0), true);
    }
    const revision = entry!.revision;
    if (current.holder === this.#holder && current.term === this.#term && this.#term > 0) {
      // Ours (a renewal whose answer was lost, or a standby moment): renew on what is stored.
      return this.#view(await this.#write({ ...current, expiresAt: at + this.#leaseMs, renewedAt: at }, revision), false);
    }
    if (this.#observed?.revision !== revision) this.#observed = { revision, since: at };
    // By the holder's `expiresAt` only with slack: a reader whose clock runs ahead (by less than
    // the slack) must not take a lease its holder is renewing. A dead holder is still noticed
    // within a lease by the revision standing still on the reader's own clock.
    const expired = current.expiresAt + clockSlackMs(this.#leaseMs) <= at || at - this.#observed.since >= this.#leaseMs;
    if (expired) {
      const record = { v: PROTOCOL_VERSION, holder: this.#holder, term: current.term + 1, expiresAt: at + this.#leaseMs, renewedAt: at };
      if (await this.#write(record, revision)) return this.#view(true, true);
      return { leader: false, acquired: false, holder: undefined, term: current.term, expiresAt: undefined };
    }
    this.#held = false;
    return { leader: false, acquired: false, holder: current.holder || undefined, term: current.term, expiresAt: current.expiresAt };
  }

  /** Gives the lease up (expiresAt 0), so another contender takes it at its next look. */
  async release(at: number): Promise<void> {
    if (!this.#held) return;
    this.#held = false;
    await this.#write({ ...this.#record!, holder: "", expiresAt: 0, renewedAt: at }, this.#revision).catch(() => false);
    this.#held = false;
  }

  /** Forgets the lease without writing (a process that died would do no more). */
  abandon(): void {
    this.#held = false;
  }

  async #write(record: LeaseRecord, revision: number): Promise<boolean> {
    try {
      this.#revision = revision === 0
        ? await this.#kv.create(this.#key, encode(record))
        : await this.#kv.update(this.#key, encode(record), revision);
    } catch (err) {
      if (!isCasConflict(err)) throw err;
      this.#held = false;
      return false;
    }
    this.#record = record;
    this.#term = record.term;
    this.#held = record.holder === this.#holder;
    return true;
  }

  #view(leader: boolean, acquired: boolean): LeaseView {
    if (!leader) return { leader: false, acquired: false, holder: undefined, term: this.#term, expiresAt: undefined };
    return { leader: true, acquired, holder: this.#holder, term: this.#term, expiresAt: this.#record!.expiresAt };
  }
}
