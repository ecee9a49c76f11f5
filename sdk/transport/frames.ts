/**
 * Publishing a message as one protocol frame: the `PUB`/`HPUB` line, the headers and the payload
 * written into a shared buffer and handed to nats.js's protocol handler with the closing CRLF (a
 * payload over 4 KB follows the line and headers as a chunk of its own).
 *
 * `nc.publish()` builds the line as a string, encodes it with a TextEncoder (a new ArrayBuffer per
 * message), checks both subjects with a regular expression and queues four chunks that are
 * concatenated again at the next flush. On the send path that was about a tenth of the client's
 * CPU per task and a sixth of its garbage (`.bench` profiles, docs/benchmarks.md). The frame is
 * what nats.js itself would write, byte for byte (test/integration/frames.test.ts compares them).
 *
 * This reaches one step into nats.js (`nc.protocol.sendCommand`, the method its own publish ends
 * in). Whenever that is not there, or the case is not the plain one (closed or draining connection,
 * no headers support, too large, a subject with whitespace), `nc.publish()` does the work and
 * raises its own errors.
 */
import type { MsgHdrs, NatsConnection } from "@nats-io/nats-core";
import { SharedWriter } from "../protocol/mod.ts";

/** The part of nats.js's ProtocolHandler (nats-core 3.x) a frame needs. */
interface ProtocolHandlerLike {
  sendCommand(cmd: Uint8Array, ...payloads: Uint8Array[]): void;
  info?: { headers?: boolean; max_payload?: number };
  noMorePublishing?: boolean;
  outBytes: number;
  outMsgs: number;
}

/** nats.js's MsgHdrsImpl, and FixedHeaders (sdk/client/wire.ts), encode themselves; the MsgHdrs type does not say so. */
type EncodableHeaders = MsgHdrs & { encode(): Uint8Array };

const frames = new SharedWriter(64 * 1024);
/** What nats.js refuses in a subject (its whitespaceRegex). */
const WHITESPACE = /[ \n\r\t]/;
const CRLF = "\r\n";
const CRLF_BYTES = new Uint8Array([13, 10]);
/** Payloads up to this size are copied into the frame; larger ones are queued beside it. */
const INLINE_PAYLOAD = 4096;

function protocolOf(nc: NatsConnection): ProtocolHandlerLike | undefined {
  const p = (nc as unknown as { protocol?: ProtocolHandlerLike }).protocol;
  return p !== undefined && typeof p.sendCommand === "function" && typeof p.outMsgs === "number" ? p : undefined;
}

/** True when publishFrame() writes frames itself on `nc` (false: every publish goes through nc.publish). */
export function framesSupported(nc: NatsConnection): boolean {
  return protocolOf(nc) !== undefined;
}

/**
 * Publishes `data` to `subject` (with `reply` and `headers` when given), as `nc.publish()` would.
 * Throws what nc.publish() throws (closed connection, bad subject, max_payload exceeded).
 */
export function publishFrame(nc: NatsConnection, subject: string, data: Uint8Array, reply?: string, headers?: MsgHdrs): void {
  const p = protocolOf(nc);
  const info = p?.info;
  if (
    p === undefined || info === undefined || p.noMorePublishing || nc.isClosed() ||
    (headers !== undefined && (!info.headers || typeof (headers as Partial<EncodableHeaders>).encode !== "function")) ||
    subject.length === 0 || WHITESPACE.test(subject) || (reply !== undefined && (reply.length === 0 || WHITESPACE.test(reply)))
  ) {
    nc.publish(subject, data, reply === undefined ? (headers === undefined ? undefined : { headers }) : { reply, headers });
    return;
  }
  const h = (headers as EncodableHeaders | undefined)?.encode();
  const size = data.length + (h?.length ?? 0);
  if (info.max_payload !== undefined && size > info.max_payload) {
    nc.publish(subject, data, { reply, headers }); // throws nats.js's own "max_payload size exceeded"
    return;
  }
  const w = frames.acquire();
  let frame: Uint8Array;
  try {
    w.begin();
    w.ascii(h === undefined ? "PUB " : "HPUB ");
    w.ascii(subject);
    w.ascii(" ");
    if (reply !== undefined) {
      w.ascii(reply);
      w.ascii(" ");
    }
    if (h !== undefined) {
      w.decimal(h.length);
      w.ascii(" ");
    }
    w.decimal(size);
    w.ascii(CRLF);
    if (h !== undefined) w.bytes(h);
    if (data.length <= INLINE_PAYLOAD) w.bytes(data);
    frame = w.end();
  } finally {
    frames.release(w);
  }
  // nc.stats() counts these, as nc.publish() would.
  p.outBytes += size;
  p.outMsgs++;
  // The closing CRLF is always a chunk of its own, so nats.js never hands the transport a view of
  // the shared buffer: with two chunks or more it joins them into a new, exact buffer first. (A
  // lone view would be sent as is, and the WebSocket transport sends `frame.buffer`: all 64 KB.)
  // A large payload (an event batch, a big result) is a chunk of its own too: copied once, when
  // nats.js joins what is queued, instead of also into the shared buffer.
  if (data.length <= INLINE_PAYLOAD) p.sendCommand(frame, CRLF_BYTES);
  else p.sendCommand(frame, data, CRLF_BYTES);
}
