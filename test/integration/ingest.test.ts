/**
 * Remote ingest against a real nats-server with a small max_payload: a 6 MB input travels through
 * the object store, the task reads the exact bytes back, re-running sends one task and uploads
 * once, and an ingest interrupted by a server restart completes when run again.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as v from "valibot";
import { NatsServer } from "../../sdk/testing/mod.ts";
import { signature, type Client } from "../../sdk/client/mod.ts";
import { ingest, objectRefSchema, objectStore, openObject, readObject, type IngestProgress, type ObjectRef } from "../../sdk/ingest/mod.ts";
import { client, freshNamespace, worker } from "./helpers.ts";

const MAX_PAYLOAD = 256 * 1024;
const SIZE = 6 * 1024 * 1024 + 123;
let server: NatsServer;

before(async () => {
  server = await NatsServer.start({ maxPayload: MAX_PAYLOAD });
});
after(async () => {
  await server?.stop();
});

function input(size = SIZE, seed = 1): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(size);
  let x = seed * 2654435761;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = i % 97 === 96 ? 10 : 32 + ((x >>> 16) % 90);
  }
  return out;
}
const sha = (b: Uint8Array) => `SHA-256=${createHash("sha256").update(b).digest("base64url")}=`;
const digestSig = signature("ingest.digest", { args: v.object({ ref: objectRefSchema }), result: v.object({ size: v.number(), digest: v.string() }) });

async function taskCount(c: Client): Promise<number> {
  const jsm = await c.jsm();
  return (await jsm.streams.info(c.names.tasksStream)).state.messages;
}

test("ingest - a 6 MB input larger than max_payload reaches the task by reference, bytes exact", async () => {
  const ns = freshNamespace("ing");
  await using c = await client(server, ns);
  const data = input();
  assert.ok(data.length > MAX_PAYLOAD * 20);
  const w = worker(server, ns).implement(digestSig, async ({ ref }, ctx) => {
    const bytes = await readObject(ctx.client, ref);
    return { size: bytes.length, digest: sha(bytes) };
  });
  await w.start();
  try {
    const reports: IngestProgress[] = [];
    const started = Date.now();
    const { ref, handle, uploaded, sent } = await ingest(c, { file: new Blob([data]), name: "data/one.bin", signature: digestSig, onProgress: (p) => reports.push(p) });
    assert.equal(uploaded, true);
    assert.equal(sent, true);
    assert.deepEqual(ref, { bucket: `${ns}_ingest`, name: "data/one.bin", size: data.length, digest: sha(data) });
    const result = await handle.result({ timeout: 20_000 });
    assert.deepEqual(result, { size: data.length, digest: sha(data) });
    console.log(`# ${data.length} bytes ingested and read back in ${Date.now() - started} ms`);
    const uploads = reports.filter((p) => p.phase === "uploading");
    assert.ok(uploads.length > 10, "progress while uploading");
    assert.equal(uploads.at(-1)!.bytes, data.length, "upload progress reaches 100%");
    assert.deepEqual(reports.at(-1), { phase: "done", bytes: data.length, total: data.length });
    assert.ok(reports.every((p, i) => i === 0 || p.phase !== reports[i - 1]!.phase || p.bytes >= reports[i - 1]!.bytes), "monotonic within a phase");
  } finally {
    await w.close();
  }
});

test("ingest - running twice uploads once and sends one task; a stale ref is refused", async () => {
  const ns = freshNamespace("ing");
  await using c = await client(server, ns);
  await c.ensureTopology();
  const data = input(1024 * 1024, 2);
  const first = await ingest(c, { file: new Blob([data]), name: "twice.bin", task: "ingest.twice" });
  const os = await objectStore(c, `${ns}_ingest`);
  const revision = (await os.info("twice.bin"))!.revision;
  const reports: IngestProgress[] = [];
  const second = await ingest(c, { file: new Blob([data]), name: "twice.bin", task: "ingest.twice", onProgress: (p) => reports.push(p) });
  assert.equal(first.uploaded, true);
  assert.equal(second.uploaded, false);
  assert.equal(second.sent, false);
  assert.equal(second.handle.id, first.handle.id);
  assert.deepEqual(second.ref, first.ref);
  assert.equal(reports.at(-1)!.skipped, true);
  assert.equal(reports.at(-1)!.bytes, data.length);
  assert.ok((await os.info("twice.bin"))!.revision >= revision, "not re-uploaded");
  assert.equal(await taskCount(c), 1);

  // The same name with new content is a new upload and a new task; the old ref no longer opens.
  const changed = input(1024 * 1024, 3);
  const third = await ingest(c, { file: new Blob([changed]), name: "twice.bin", task: "ingest.twice" });
  assert.equal(third.uploaded, true);
  assert.notEqual(third.handle.id, first.handle.id);
  assert.equal(await taskCount(c), 2);
  await assert.rejects(openObject(c, first.ref), /was replaced/);
  const bad: ObjectRef = { ...third.ref, name: "missing.bin" };
  await assert.rejects(openObject(c, bad), /not found/);
});

test("ingest - a server restart mid-upload: re-running completes with one task and the exact bytes", async () => {
  const ns = freshNamespace("ing");
  await using c = await client(server, ns);
  await c.ensureTopology();
  const data = input(SIZE, 4);
  let restart: Promise<void> | undefined;
  const first = await ingest(c, {
    file: new Blob([data]),
    name: "restart.bin",
    task: "ingest.restart",
    onProgress: (p) => {
      if (p.phase === "uploading" && p.bytes > data.length / 3 && !restart) restart = server.restart();
    },
  }).then((r) => ({ ok: true as const, r }), (err: Error) => ({ ok: false as const, err }));
  assert.ok(restart, "the server restarted during the upload");
  await restart;
  console.log(`# first attempt: ${first.ok ? "completed across the restart" : `failed: ${first.err.message}`}`);

  const reports: IngestProgress[] = [];
  const again = await ingest(c, { file: new Blob([data]), name: "restart.bin", task: "ingest.restart", onProgress: (p) => reports.push(p) });
  assert.equal(reports.at(-1)!.phase, "done");
  assert.equal(reports.at(-1)!.bytes, data.length);
  assert.equal(again.ref.digest, sha(data));
  if (first.ok) assert.equal(again.uploaded, false);
  assert.equal(await taskCount(c), 1, "one task");
  assert.deepEqual(await readObject(c, again.ref), data);
});

test("ingest - a stream with no known digest is uploaded; a re-run still sends one task", async () => {
  const ns = freshNamespace("ing");
  await using c = await client(server, ns);
  await c.ensureTopology();
  const data = input(700 * 1024, 5);
  const a = await ingest(c, { stream: new Blob([data]).stream(), name: "s.bin", task: "ingest.stream", args: (ref) => ({ input: ref, mode: "x" }) });
  const b = await ingest(c, { stream: new Blob([data]).stream(), name: "s.bin", task: "ingest.stream" });
  assert.equal(a.uploaded, true);
  assert.equal(b.uploaded, true);
  assert.equal(b.sent, false);
  assert.equal(a.handle.id, b.handle.id);
  assert.equal(await taskCount(c), 1);
  assert.deepEqual(await readObject(c, b.ref), data);
});

test("ingest - the CLI uploads a file, prints the task id and text progress, and waits for the result", async () => {
  const { main } = await import("../../sdk/cli/mod.ts");
  const { mkdtempSync, writeFileSync, rmSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const ns = freshNamespace("ing");
  const dir = mkdtempSync(join(tmpdir(), "celerity-ingest-"));
  const data = input(2 * 1024 * 1024, 6);
  writeFileSync(join(dir, "in.txt"), data);
  const w = worker(server, ns).implement(digestSig, async ({ ref }, ctx) => {
    const bytes = await readObject(ctx.client, ref);
    return { size: bytes.length, digest: sha(bytes) };
  });
  await w.start();
  try {
    const stdout: string[] = [];
    const stderr: string[] = [];
    const io = { out: (t: string) => void stdout.push(t), err: (t: string) => void stderr.push(t) };
    const argv = ["ingest", join(dir, "in.txt"), "--task", "ingest.digest", "--servers", server.url, "--namespace", ns, "--wait", "20000"];
    assert.equal(await main(argv, io), 0, stderr.join("\n"));
    assert.match(stdout[0]!, /^key-[0-9a-f]{16}$/);
    assert.deepEqual(JSON.parse(stdout[1]!), { size: data.length, digest: sha(data) });
    assert.ok(stderr.some((l) => /^uploading .*100% 2\.0 MiB\/2\.0 MiB/.test(l)), stderr.join("\n"));
    assert.ok(stderr.some((l) => /^done/.test(l)));
    const again: string[] = [];
    assert.equal(await main(argv.slice(0, -2), { out: (t) => void again.push(t), err: () => {} }), 0);
    assert.equal(again[0], stdout[0], "same task id on a re-run");
    assert.equal(await main(["ingest", join(dir, "in.txt"), "--servers", server.url], io), 2);
  } finally {
    await w.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("ingest - examples/ingest/main.ts runs end to end on its embedded server", async () => {
  const { spawnSync } = await import("node:child_process");
  const { fileURLToPath } = await import("node:url");
  const root = fileURLToPath(new URL("../..", import.meta.url));
  const env = { ...process.env };
  delete env.CELERITY_SERVERS;
  delete env.NATS_URL;
  delete env.CELERITY_SETTINGS;
  const r = spawnSync(process.execPath, ["--import", "tsx", "examples/ingest/main.ts", "--mb", "4"], { cwd: root, env, encoding: "utf8", timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
  assert.equal(out.lines, out.expectedLines);
  assert.ok(out.bytes >= 4 * 1024 * 1024);
  assert.match(r.stderr, /uploading 100%/);
});
