/**
 * Delivering a report over a nats.js connection the caller passes (`report(…, { connection })`),
 * e.g. from a process that is already connected. report.ts imports this file only then; the
 * one-file callback never does and carries no nats.js (see direct.ts for why).
 */
import { headers as natsHeaders, type NatsConnection } from "@nats-io/nats-core";
import { AckedPublisher } from "../client/mod.ts";
import {
  ackTimeoutMs,
  DeliveryError,
  oneLine,
  settle,
  type Delivery,
  type ReportOutcome,
} from "./delivery.ts";

/** Delivers over `nc`, which is left open. */
export async function deliverOverNats(d: Delivery, nc: NatsConnection): Promise<ReportOutcome> {
  const publisher = new AckedPublisher(nc, { ackTimeoutMs: ackTimeoutMs(d.settings), deadlineMs: Math.max(1, d.deadline - Date.now()) });
  const { prepared } = d;
  try {
    let required: Promise<unknown>;
    if (prepared.stored) {
      let h;
      if (prepared.headers) {
        h = natsHeaders();
        for (const [k, v] of Object.entries(prepared.headers)) h.set(k, v);
      }
      required = publisher.publish(prepared.subject, prepared.body, h);
    } else {
      nc.publish(prepared.subject, prepared.body);
      required = nc.flush();
    }
    await settle(d, required, d.event ? publisher.publish(d.event.subject, d.event.body) : undefined);
    return { id: prepared.id, attempts: 0, ms: Date.now() - d.started };
  } catch (err) {
    if (err instanceof DeliveryError) throw err;
    throw new DeliveryError(`could not deliver ${prepared.what}: ${oneLine((err as Error).message)}`, { cause: err });
  } finally {
    publisher.close();
  }
}
