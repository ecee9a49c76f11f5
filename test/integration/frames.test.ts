/**
 * publishFrame (sdk/transport/frames.ts) against a real nats-server: the frame it hands to nats.js
 * is byte for byte what `nc.publish()` queues for the same message, subscribers receive the same
 * message, the connection's statistics count it, and every case it does not handle itself raises
 * nats.js's own error.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { headers as natsHeaders, type Msg, type NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { NatsServer } from "../../sdk/testing/mod.ts";
import { framesSupported, publishFrame } from "../../sdk/transport/mod.ts";
import { fixedHeaders } from "../../sdk/client/wire.ts";

let server: NatsServer;
before(async () => {
  server = await NatsServer.start();
});
after(async () => {
  await server?.stop();
});

interface Spied {
  /** Every chunk queued by one publish, concatenated. */
  sent: Uint8Array[];
}

/** Records what the protocol handler is given (the real handler still sends it). */
function spy(nc: NatsConnection): Spied {
  const protocol = (nc as unknown as { protocol: { sendCommand: (cmd: string | Uint8Array, ...payloads: Uint8Array[]) => void } }).protocol;
  const real = protocol.sendCommand.bind(protocol);
  const spied: Spied = { sent: [] };
  const te = new TextEncoder();
  protocol.sendCommand = (cmd, ...payloads) => {
    const parts = [typeof cmd === "string" ? te.encode(cmd) : cmd, ...payloads];
    const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      all.set(p, at);
      at += p.length;
    }
    spied.sent.push(all);
    real(cmd, ...payloads);
  };
  return spied;
}

function nextMessage(nc: NatsConnection, subject: string): Promise<Msg> {
  return new Promise((resolve) => {
    nc.subscribe(subject, { max: 1, callback: (_err, msg) => resolve(msg) });
  });
}

describe("frames", () => {
  test("publishFrame - the frame is what nc.publish() writes, and subscribers receive the same message", async () => {
    const nc = await connect({ servers: server.url });
    const listener = await connect({ servers: server.url });
    try {
      assert.equal(framesSupported(nc), true);
      const spied = spy(nc);
      const h = natsHeaders();
      h.set("Nats-Msg-Id", "abc-1");
      h.append("X-Multi", "one");
      h.append("X-Multi", "two");
      const cases: Array<{ subject: string; data: Uint8Array; reply?: string; headers?: () => ReturnType<typeof natsHeaders> }> = [
        { subject: "frames.plain", data: new TextEncoder().encode("hello") },
        { subject: "frames.empty", data: new Uint8Array(0) },
        { subject: "frames.reply", data: new Uint8Array([1, 2, 3]), reply: "_INBOX.frames.1" },
        { subject: "frames.headers", data: new Uint8Array([9, 8, 7]), headers: () => h },
        { subject: "frames.both", data: new Uint8Array(300).fill(5), reply: "_INBOX.frames.2", headers: () => h },
        { subject: "frames.fixed", data: new Uint8Array([4]), reply: "_INBOX.frames.3", headers: () => fixedHeaders("Nats-Msg-Id", "id-2", "Celerity-Task", "t.x") as ReturnType<typeof natsHeaders> },
        { subject: "frames.ünïcode.subject", data: new Uint8Array([6]) },
        // Over 4 KB the payload is queued as a chunk of its own, after the line and headers.
        { subject: "frames.large", data: new Uint8Array(10_000).fill(3), reply: "_INBOX.frames.4", headers: () => h },
        { subject: "frames.large.plain", data: new Uint8Array(4097).fill(2) },
      ];
      for (const c of cases) {
        await listener.flush();
        const viaNats = nextMessage(listener, c.subject);
        await listener.flush();
        nc.publish(c.subject, c.data, { reply: c.reply, headers: c.headers?.() });
        const expected = spied.sent.at(-1)!;
        const a = await viaNats;

        const viaFrame = nextMessage(listener, c.subject);
        await listener.flush();
        const stats0 = nc.stats();
        publishFrame(nc, c.subject, c.data, c.reply, c.headers?.());
        const stats1 = nc.stats();
        assert.deepEqual(spied.sent.at(-1), expected, `${c.subject}: the same bytes as nc.publish()`);
        assert.equal(stats1.outMsgs - stats0.outMsgs, 1, `${c.subject}: counted as one message`);
        assert.equal(stats1.outBytes - stats0.outBytes, expected.length - (expected.indexOf(10) + 1) - 2, `${c.subject}: counted as headers + payload`);
        const b = await viaFrame;
        assert.equal(b.subject, a.subject);
        assert.deepEqual(b.data, a.data);
        assert.equal(b.reply, a.reply);
        assert.deepEqual(b.headers ? [...b.headers] : undefined, a.headers ? [...a.headers] : undefined);
      }
    } finally {
      await nc.close();
      await listener.close();
    }
  });

  test("publishFrame - the transport is never handed a view of the shared buffer (a WebSocket sends frame.buffer whole)", async () => {
    const nc = await connect({ servers: server.url });
    try {
      const transport = (nc as unknown as { protocol: { transport: { send: (frame: Uint8Array) => void } } }).protocol.transport;
      const real = transport.send.bind(transport);
      const written: Uint8Array[] = [];
      transport.send = (frame) => {
        written.push(frame);
        real(frame);
      };
      // Each alone in its flush: one small frame, then one with a large payload and headers.
      // (setImmediate: nats.js flushes what is queued on a microtask; nc.flush() would queue a PING beside it.)
      publishFrame(nc, "frames.alone", new Uint8Array([1, 2, 3]), "_INBOX.alone.1");
      await new Promise((resolve) => setImmediate(resolve));
      await nc.flush();
      const h = natsHeaders();
      h.set("Nats-Msg-Id", "alone-2");
      publishFrame(nc, "frames.alone", new Uint8Array(5000).fill(9), undefined, h);
      await new Promise((resolve) => setImmediate(resolve));
      await nc.flush();
      const frames = written.filter((b) => new TextDecoder().decode(b.subarray(0, 20)).includes("frames.alone"));
      assert.equal(frames.length, 2);
      for (const b of frames) {
        assert.equal(b.byteOffset, 0, "starts its buffer");
        assert.equal(b.byteLength, b.buffer.byteLength, "is its whole buffer");
      }
    } finally {
      await nc.close();
    }
  });

  test("publishFrame - what it does not handle raises nats.js's own errors", async () => {
    const nc = await connect({ servers: server.url });
    const max = nc.info!.max_payload;
    assert.throws(() => publishFrame(nc, "frames.with space", new Uint8Array(1)), /illegal subject/i);
    assert.throws(() => publishFrame(nc, "", new Uint8Array(1)), /illegal subject/i);
    assert.throws(() => publishFrame(nc, "frames.ok", new Uint8Array(1), "bad reply"), /illegal subject/i);
    assert.throws(() => publishFrame(nc, "frames.big", new Uint8Array(max + 1)), /max_payload/);
    const h = natsHeaders();
    h.set("X-Pad", "x".repeat(100));
    assert.throws(() => publishFrame(nc, "frames.big", new Uint8Array(max - 50), undefined, h), /max_payload/, "headers count toward max_payload");
    const draining = nc.drain();
    // nats.js refuses publishes once its subscriptions have drained (a few microtasks in).
    await new Promise((resolve) => setImmediate(resolve));
    assert.throws(() => publishFrame(nc, "frames.late", new Uint8Array(1)), /draining|closed/i);
    await draining;
    assert.throws(() => publishFrame(nc, "frames.late", new Uint8Array(1)), /closed/i);
  });

  test("publishFrame - frames published back to back, some larger than the shared buffer, all arrive whole", async () => {
    const nc = await connect({ servers: server.url });
    const listener = await connect({ servers: server.url });
    try {
      const got: Uint8Array[] = [];
      const done = new Promise<void>((resolve) => {
        listener.subscribe("frames.burst", {
          callback: (_err, msg) => {
            got.push(msg.data);
            if (got.length === 500) resolve();
          },
        });
      });
      await listener.flush();
      const sizes = Array.from({ length: 500 }, (_, i) => (i % 50 === 0 ? 200_000 : (i * 37) % 900));
      for (let i = 0; i < sizes.length; i++) publishFrame(nc, "frames.burst", new Uint8Array(sizes[i]!).fill(i % 251), `_INBOX.burst.${i}`);
      await done;
      for (let i = 0; i < sizes.length; i++) {
        assert.equal(got[i]!.length, sizes[i], `message ${i} has its length`);
        assert.ok(got[i]!.every((b) => b === i % 251), `message ${i} has its own bytes`);
      }
    } finally {
      await nc.close();
      await listener.close();
    }
  });
});
