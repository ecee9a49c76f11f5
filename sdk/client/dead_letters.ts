/**
 * The dead-letter stream from the SDK: list, show, replay and purge (what `celerity dlq` runs).
 * A dead letter keeps the original message bytes and headers plus the reason, the detail, the
 * original subject and sequence, the time and the worker (see docs/protocol.md).
 */
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/nats-core";
import type { JetStreamManager, StoredMsg } from "@nats-io/jetstream";
import { decodeTaskMessage, HEADER, type Names, type TaskMessage } from "../protocol/mod.ts";
import type { AckedPublisher } from "./publisher.ts";

/** One dead-lettered message. */
export interface DeadLetter {
  /** Sequence in the dead-letter stream: what `show`, `replay` and `delete` take. */
  seq: number;
  queue: string;
  reason: string;
  detail: string;
  /** Epoch ms when it was dead-lettered. */
  at: number;
  worker: string;
  /** Where the message was published originally, and its sequence there. */
  originalSubject: string;
  originalSequence?: number;
  /** Task id and name when the message could be read. */
  id?: string;
  task?: string;
  /** The decoded task message, when it decodes. */
  message?: TaskMessage;
  headers: Record<string, string>;
  /** The original body, byte for byte. */
  data: Uint8Array;
}

/** Filters of {@link DeadLetters.list}. */
export interface DeadLetterFilter {
  queue?: string;
  reason?: string;
  task?: string;
  /** At most this many (default 100). */
  limit?: number;
}

/** What a client needs to work with dead letters. */
interface DeadLetterHost {
  readonly names: Names;
  readonly publisher: AckedPublisher;
  jsm(): Promise<JetStreamManager>;
}

function headerRecord(h: MsgHdrs | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (h) for (const [k, v] of h) out[k] = v.join(", ");
  return out;
}

function toDeadLetter(names: Names, m: StoredMsg): DeadLetter {
  const h = m.header;
  const get = (k: string) => h?.get(k) || undefined;
  let message: TaskMessage | undefined;
  try {
    message = decodeTaskMessage(m.data);
  } catch {
    message = undefined;
  }
  const dlqPrefix = names.dlqWildcard.slice(0, -1);
  const seqText = get(HEADER.dlqSequence);
  const letter: DeadLetter = {
    seq: m.seq,
    queue: m.subject.startsWith(dlqPrefix) ? m.subject.slice(dlqPrefix.length) : m.subject,
    reason: get(HEADER.dlqReason) ?? "unknown",
    detail: get(HEADER.dlqDetail) ?? "",
    at: Number(get(HEADER.dlqAt) ?? m.time.getTime()),
    worker: get(HEADER.dlqWorker) ?? "",
    originalSubject: get(HEADER.dlqSubject) ?? "",
    headers: headerRecord(h),
    data: m.data,
  };
  if (seqText) letter.originalSequence = Number(seqText);
  const id = message?.id ?? get(HEADER.id) ?? get(HEADER.msgId);
  if (id) letter.id = id;
  const task = message?.task ?? get(HEADER.task);
  if (task) letter.task = task;
  if (message) letter.message = message;
  return letter;
}

/** Dead letters of one namespace. Get it as `client.deadLetters`. */
export class DeadLetters {
  constructor(private readonly host: DeadLetterHost) {}

  /** Dead letters oldest first, filtered. */
  async list(filter: DeadLetterFilter = {}): Promise<DeadLetter[]> {
    const jsm = await this.host.jsm();
    const stream = this.host.names.dlqStream;
    const info = await jsm.streams.info(stream);
    const limit = filter.limit ?? 100;
    const out: DeadLetter[] = [];
    if (info.state.messages === 0) return out;
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && out.length < limit; seq++) {
      const m = await this.#get(jsm, seq);
      if (!m) continue;
      const letter = toDeadLetter(this.host.names, m);
      if (filter.queue && letter.queue !== filter.queue) continue;
      if (filter.reason && letter.reason !== filter.reason) continue;
      if (filter.task && letter.task !== filter.task) continue;
      out.push(letter);
    }
    return out;
  }

  /** One dead letter by its sequence, or undefined. */
  async get(seq: number): Promise<DeadLetter | undefined> {
    const m = await this.#get(await this.host.jsm(), seq);
    return m ? toDeadLetter(this.host.names, m) : undefined;
  }

  /**
   * Publishes the original message again to its original subject (same id, same body), then
   * removes the dead letter. Returns the replayed letter. A replay repeated within the dedupe
   * window is stored once.
   */
  async replay(seq: number): Promise<DeadLetter> {
    const letter = await this.get(seq);
    if (!letter) throw new Error(`no dead letter with sequence ${seq} in ${this.host.names.dlqStream}`);
    const subject = letter.originalSubject || this.host.names.taskSubject(letter.queue);
    const h = natsHeaders();
    const original = (await this.#get(await this.host.jsm(), seq))?.header;
    if (original) {
      for (const [k, values] of original) {
        if (k.startsWith("Celerity-Dlq-") || k === HEADER.msgId) continue;
        for (const v of values) h.append(k, v);
      }
    }
    // A fresh dedupe id: the original id is probably still inside the tasks stream's window.
    h.set(HEADER.msgId, `replay.${letter.id ?? "x"}.${seq}`);
    await this.host.publisher.publish(subject, letter.data, h);
    await this.delete(seq);
    return letter;
  }

  /** Removes one dead letter. */
  async delete(seq: number): Promise<boolean> {
    const jsm = await this.host.jsm();
    return jsm.streams.deleteMessage(this.host.names.dlqStream, seq, false);
  }

  /** Removes every dead letter (of one queue, when given). Returns how many were removed. */
  async purge(options: { queue?: string } = {}): Promise<number> {
    const jsm = await this.host.jsm();
    const opts = options.queue ? { filter: this.host.names.dlqSubject(options.queue) } : undefined;
    const r = await jsm.streams.purge(this.host.names.dlqStream, opts);
    return r.purged;
  }

  async #get(jsm: JetStreamManager, seq: number): Promise<StoredMsg | undefined> {
    try {
      return (await jsm.streams.getMessage(this.host.names.dlqStream, { seq })) ?? undefined;
    } catch (err) {
      if (/no message found|not found|404|deleted/i.test((err as Error).message)) return undefined;
      throw err;
    }
  }
}
