/**
 * The HPC callback's own protocol link (sdk/callback/direct.ts) against a real nats-server: what
 * the callback's end-to-end tests do not reach. Large answers arrive in many socket chunks, answers
 * with headers (HMSG) carry their status, a server error is reported, and close() rejects waiters.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect as natsConnect, type NatsConnection } from "@nats-io/transport-node";
import { headers } from "@nats-io/nats-core";
import { NatsServer } from "../../sdk/testing/mod.ts";
import { DirectLink } from "../../sdk/callback/direct.ts";

const BIG = 900 * 1024;
let server: NatsServer;
let responder: NatsConnection;
before(async () => {
  server = await NatsServer.start();
  responder = await natsConnect({ servers: server.url });
  // Echoes the request with 900 KB appended (under the 1 MB max_payload), so the answer spans many reads.
  responder.subscribe("echo.big", { callback: (_e, m) => void m.respond(new Uint8Array([...m.data, ...new Uint8Array(BIG).fill(7)])) });
  responder.subscribe("echo.status", {
    callback: (_e, m) => {
      const h = headers(409, "Conflict");
      h.set("X-Seen", m.headers?.get("X-Sent") ?? "none");
      m.respond(new TextEncoder().encode("refused"), { headers: h });
    },
  });
  await responder.flush();
});
after(async () => {
  await responder?.close();
  await server?.stop();
});

test("direct link - a 900 KB answer split across reads arrives whole, twice in a row", async () => {
  const link = await DirectLink.open(server.url, {}, 5_000);
  try {
    for (const marker of [1, 2]) {
      const reply = await link.request("echo.big", new Uint8Array([marker, 9]), undefined, 10_000);
      assert.equal(reply.status, 0);
      assert.equal(reply.data.length, 2 + BIG);
      assert.deepEqual([...reply.data.subarray(0, 3)], [marker, 9, 7]);
      assert.equal(reply.data[reply.data.length - 1], 7);
    }
  } finally {
    link.close();
  }
});

test("direct link - headers go out (HPUB) and an answer's status comes back (HMSG)", async () => {
  const link = await DirectLink.open(server.url, { name: "direct-link-test" }, 5_000);
  try {
    const reply = await link.request("echo.status", new TextEncoder().encode("x"), { "X-Sent": "yes" }, 5_000);
    assert.equal(reply.status, 409);
    assert.equal(new TextDecoder().decode(reply.data), "refused");
    // No one listens: the server answers 503 itself (no_responders in CONNECT).
    const none = await link.request("nobody.here", new Uint8Array(1), undefined, 5_000);
    assert.equal(none.status, 503);
  } finally {
    link.close();
  }
});

test("direct link - a refused login and a closed link reject with the reason", async () => {
  await using secured = await NatsServer.start({ extraConfig: `authorization { token: "s3cret" }` });
  await assert.rejects(DirectLink.open(secured.url, { token: "wrong" }, 5_000), /authorization violation/i);
  const link = await DirectLink.open(secured.url, { token: "s3cret" }, 5_000);
  // A subscriber that never answers keeps the request waiting (no 503) until the link closes.
  const listener = await natsConnect({ servers: secured.url, token: "s3cret" });
  listener.subscribe("silent", { callback: () => {} });
  await listener.flush();
  const waiting = link.request("silent", new Uint8Array(1), undefined, 60_000);
  await link.flush(5_000);
  link.close();
  await assert.rejects(waiting, /connection closed/);
  await assert.rejects(link.flush(1_000), /connection closed/);
  await listener.close();
});

test("direct link - a permissions violation fails what waits at once, with the server's words", async () => {
  await using guarded = await NatsServer.start({
    extraConfig: `authorization { users = [ { user: "job", password: "pw", permissions: { publish: { deny: ["forbidden.>"] } } } ] }`,
  });
  const link = await DirectLink.open(`nats://job:pw@127.0.0.1:${new URL(guarded.url).port}`, {}, 5_000);
  try {
    await assert.rejects(link.request("forbidden.x", new Uint8Array(1), undefined, 30_000), /permissions violation for publish to "?forbidden\.x"?/i);
  } finally {
    link.close();
  }
});
