/**
 * AckedPublisher (sdk/client/publisher.ts) against a real nats-server, on the paths where no
 * acknowledgement comes: a message sent again after a topology repair is still timed out and
 * failed by the deadline, close() during a repair settles it at once, and a publisher that has
 * been acknowledged before treats a silence as a silence (no repair).
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { NatsServer } from "../../sdk/testing/mod.ts";
import { AckedPublisher, ConnectionClosedError, PublishError } from "../../sdk/client/mod.ts";

let server: NatsServer;
before(async () => {
  server = await NatsServer.start();
});
after(async () => {
  await server?.stop();
});

type Connection = Awaited<ReturnType<typeof connect>>;

/**
 * Runs `body` with a connection for the publisher, `subject` made silent by a core subscriber on
 * another connection that never answers (a publish there hears nothing at all), and closes both.
 */
async function withSilentSubject(subject: string, body: (nc: Connection) => Promise<void>): Promise<void> {
  const nc = await connect({ servers: server.url });
  const listener = await connect({ servers: server.url });
  try {
    listener.subscribe(subject, { callback: () => {} });
    await listener.flush();
    await body(nc);
  } finally {
    await nc.close();
    await listener.close();
  }
}

describe("publisher", () => {
  test("publisher - a message sent again after a failed repair is still timed out, and fails by the deadline", async () => {
    await withSilentSubject("silent.a", async (nc) => {
      let repairs = 0;
      const publisher = new AckedPublisher(nc, {
        ackTimeoutMs: 200,
        deadlineMs: 1500,
        onNoStream: () => {
          repairs++;
          // Not a permanent error (see isPermanentTopologyError): resent until the deadline.
          return Promise.reject(new Error("the topology request timed out"));
        },
      });
      const t0 = Date.now();
      await assert.rejects(
        Promise.race([
          publisher.publish("silent.a", new Uint8Array([1])),
          new Promise((_, reject) => setTimeout(() => reject(new Error("still pending after 8 s")), 8000)),
        ]),
        PublishError,
      );
      assert.ok(Date.now() - t0 < 5000, "failed near the deadline, not later");
      assert.equal(repairs, 1, "one repair for the first silence, plain resends after it");
      assert.equal(publisher.inFlight, 0);
      publisher.close();
    });
  });

  test("publisher - a message waiting for a repair counts as in flight, and close() settles it at once", async () => {
    await withSilentSubject("silent.b", async (nc) => {
      let repairing!: () => void;
      const publisher = new AckedPublisher(nc, {
        ackTimeoutMs: 200,
        onNoStream: () => new Promise<boolean>((resolve) => (repairing = () => resolve(true))),
      });
      const published = publisher.publish("silent.b", new Uint8Array([2]));
      published.catch(() => {});
      const until = Date.now() + 5000;
      while (repairing === undefined && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
      assert.ok(repairing, "the first silence started a repair");
      assert.equal(publisher.inFlight, 1, "the parked message is still in flight");
      let settled = false;
      void publisher.settle().then(() => (settled = true));
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(settled, false, "settle() waits for it");
      publisher.close();
      await assert.rejects(published, ConnectionClosedError);
      repairing(); // the repair ending after close() sends nothing
      assert.equal(publisher.inFlight, 0);
    });
  });

  test("publisher - once acknowledged, a silence is resent without a repair", async () => {
    await withSilentSubject("silent.c", async (nc) => {
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: "PUBTEST", subjects: ["stored.>"] });
      let repairs = 0;
      const publisher = new AckedPublisher(nc, {
        ackTimeoutMs: 200,
        deadlineMs: 1000,
        onNoStream: async () => {
          repairs++;
          return true;
        },
      });
      assert.equal((await publisher.publish("stored.x", new Uint8Array([3]))).stream, "PUBTEST");
      await assert.rejects(publisher.publish("silent.c", new Uint8Array([4])), PublishError);
      assert.equal(repairs, 0);
      publisher.close();
    });
  });
});
