/** Parsing of JetStream's ack reply subjects, which carry the delivery count and sequences. */

/** What the server says about one delivered message. */
export interface DeliveryInfo {
  stream: string;
  consumer: string;
  /** How many times the server has delivered this message (1 on the first delivery). */
  deliveryCount: number;
  streamSequence: number;
  /** Epoch ms when the message was stored. */
  timestampMs: number;
  /** Messages still pending for the consumer after this one. */
  pending: number;
}

/**
 * Parses `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>` (nats-server 2.9)
 * and the longer form with domain and account hash (`$JS.ACK.<domain>.<hash>.<stream>….<token>`).
 * Returns undefined for anything else.
 */
export function parseAckSubject(reply: string | undefined): DeliveryInfo | undefined {
  if (!reply || !reply.startsWith("$JS.ACK.")) return undefined;
  const t = reply.split(".");
  let i: number;
  if (t.length === 9) i = 2;
  else if (t.length >= 12) i = 4;
  else return undefined;
  return {
    stream: t[i]!,
    consumer: t[i + 1]!,
    deliveryCount: Number(t[i + 2]),
    streamSequence: Number(t[i + 3]),
    timestampMs: Math.floor(Number(t[i + 5]) / 1e6),
    pending: Number(t[i + 6]),
  };
}

/** Ack bodies JetStream understands. */
export const ACK = {
  ack: "+ACK",
  /** Still working: resets the ack wait timer. */
  working: "+WPI",
  nak: "-NAK",
  /** Stop redelivering. On 2.9.10 send it without a reason: `+TERM <reason>` is not honoured there. */
  term: "+TERM",
} as const;
