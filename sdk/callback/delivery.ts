/**
 * What both ways of delivering a report share (direct.ts for plain connections, over_nats.ts
 * through nats.js): the prepared messages, the error types, deadlines and the give-up messages.
 */
import { CelerityError, type TaskEvent } from "../protocol/mod.ts";
import type { Settings } from "../settings/mod.ts";

/** The report could not be delivered before the deadline (unreachable server, no acknowledgement, refused). */
export class DeliveryError extends CelerityError {
  override name = "DeliveryError";
}

/** The report itself is wrong (bad id, unknown task, invalid arguments): retrying cannot help. */
export class ReportError extends CelerityError {
  override name = "ReportError";
}

/** One report, encoded and ready to publish. */
export interface Prepared {
  id: string;
  /** For messages: "SUCCESS of task <id>". */
  what: string;
  event: TaskEvent;
  subject: string;
  body: Uint8Array;
  headers?: Record<string, string>;
  /**
   * Results and tasks are stored by JetStream and wait for its acknowledgement; progress is only
   * published, and delivered once a PING sent after it is answered.
   */
  stored: boolean;
}

/** Everything a delivery needs: the report, where its event goes, the settings and the clock. */
export interface Delivery {
  prepared: Prepared;
  /** The task event (for monitors), or undefined when settings turn events off. */
  event?: { subject: string; body: Uint8Array };
  settings: Settings;
  started: number;
  deadline: number;
  deadlineMs: number;
}

/** What {@link report} did. */
export interface ReportOutcome {
  /** The task id reported on, or the id of the task sent. */
  id: string;
  /** Connection attempts it took (0 over a connection the caller passed). */
  attempts: number;
  /** Milliseconds from start to the server's last acknowledgement. */
  ms: number;
}

/** How long to wait for one acknowledgement before trying again. */
export function ackTimeoutMs(settings: Settings): number {
  return Math.min(settings.requestTimeout, 5_000);
}

/** Wrong credentials or permissions will not fix themselves: such a refusal is not retried. */
export function isLoginRefusal(message: string): boolean {
  return /authori[sz]ation|authentication|permission|credentials|nkey|jwt/i.test(message);
}

/** The one-line reason for giving up on connecting. */
export function couldNotConnect(servers: string[], deadlineMs: number, attempts: number, last: Error | undefined): string {
  return `could not connect to ${servers.join(",")} within ${deadlineMs} ms (${attempts} attempts): ${oneLine(last?.message ?? "no answer")}`;
}

/** The one-line reason for giving up on an acknowledgement. */
export function notAcknowledged(d: Delivery): string {
  return `the server did not acknowledge ${d.prepared.what} within ${d.deadlineMs} ms`;
}

/**
 * Waits for the report's `required` acknowledgement until the deadline, then gives the task event
 * (for monitors: best effort) at most a moment more. Both ways of delivering end here.
 */
export async function settle(d: Delivery, required: Promise<unknown>, event: Promise<unknown> | undefined): Promise<void> {
  event?.catch(() => {});
  await withDeadline(required, d.deadline, () => notAcknowledged(d));
  if (event) await withDeadline(event, Math.min(Date.now() + 2_000, d.deadline), () => "event not acknowledged").catch(() => {});
}

/** Races `p` against the deadline; the loser is ignored. */
export function withDeadline<T>(p: Promise<T>, deadline: number, message: () => string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DeliveryError(message())), Math.max(0, deadline - Date.now()));
  });
  return Promise.race([p, expired]).finally(() => clearTimeout(timer));
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Collapses whitespace so a reason fits on one line. */
export function oneLine(text: string): string {
  return text.replace(/\s+/g, " ").trim();
}
