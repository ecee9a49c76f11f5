/**
 * `celerity schema`: the JSON Schema contracts of a signatures module, through the in-process CLI.
 * (An integration test because it imports a user module through the CLI, as a user would.)
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { main, type Io } from "../../sdk/cli/mod.ts";
import { contractsDocument } from "../../sdk/cli/schema.ts";

function capture(): Io & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { stdout, stderr, out: (t) => void stdout.push(t), err: (t) => void stderr.push(t) };
}

const root = new URL("../..", import.meta.url).pathname;
const MODULE = `
import * as v from "valibot";
import { signature } from "${root}sdk/signatures/mod.ts";

export const add = signature("math.add", {
  args: v.object({ a: v.number(), b: v.number() }),
  result: v.number(),
  retries: 2,
});

export const resize = signature("images.resize", {
  args: v.object({
    url: v.pipe(v.string(), v.url()),
    width: v.pipe(v.string(), v.transform(Number), v.number(), v.minValue(1)),
    format: v.optional(v.picklist(["png", "jpeg"])),
  }),
  result: v.object({ key: v.string(), bytes: v.optional(v.number()) }),
  queue: "images",
  timeLimit: 30,
});

const other = { "~standard": { version: 1, vendor: "other", validate: (value) => ({ value }) } };
export const tasks = { legacy: signature("legacy.run", { args: other }) };
export const notASignature = 42;
`;

test("schema - JSON Schema contracts of a signatures module: transforms, optional fields, other vendors", async () => {
  // Inside the project (under node_modules/.cache) so the module resolves valibot as a user's would.
  const cache = join(root, "node_modules", ".cache");
  mkdirSync(cache, { recursive: true });
  const dir = mkdtempSync(join(cache, "celerity-schema-"));
  try {
    const mod = join(dir, "contracts.ts");
    writeFileSync(mod, MODULE);
    const out = join(dir, "contracts.json");
    const io = capture();
    const code = await main(["schema", "--signatures", mod, "-o", out, "--namespace", "prod"], io);
    assert.equal(code, 0, io.stderr.join("\n"));
    assert.match(io.stderr.join("\n"), /wrote 3 task contract\(s\)/);
    const doc = JSON.parse(readFileSync(out, "utf8"));
    assert.equal(doc.protocol, 1);
    assert.equal(doc.namespace, "prod");
    assert.deepEqual(Object.keys(doc.tasks), ["images.resize", "legacy.run", "math.add"]);

    const add = doc.tasks["math.add"];
    assert.equal(add.queue, undefined);
    assert.deepEqual(add.options, { retries: 2 });
    assert.deepEqual(add.args, {
      $schema: "http://json-schema.org/draft-07/schema#",
      type: "object",
      properties: { a: { type: "number" }, b: { type: "number" } },
      required: ["a", "b"],
    });
    assert.deepEqual(add.result, { $schema: "http://json-schema.org/draft-07/schema#", type: "number" });
    assert.equal(add.notes, undefined);

    const resize = doc.tasks["images.resize"];
    assert.equal(resize.queue, "images");
    assert.deepEqual(resize.options, { timeLimit: 30 });
    // Input type: width travels as a string (the pipeline is described up to its transform).
    assert.deepEqual(resize.args.properties.width, { type: "string" });
    assert.deepEqual(resize.args.properties.url, { type: "string", format: "uri" });
    assert.deepEqual(resize.args.properties.format, { enum: ["png", "jpeg"], type: "string" });
    assert.deepEqual(resize.args.required, ["url", "width"], "optional fields are not required");
    assert.deepEqual(resize.result.required, ["key"]);
    assert.ok(resize.notes.some((n: string) => /args: has transformations/.test(n)), resize.notes);

    const legacy = doc.tasks["legacy.run"];
    assert.deepEqual(legacy.args, {});
    assert.deepEqual(legacy.result, {});
    assert.ok(legacy.notes.some((n: string) => /args: a "other" Standard Schema cannot be converted/.test(n)));
    assert.ok(legacy.notes.some((n: string) => /result: no schema/.test(n)));

    // Without -o: the same document on stdout.
    const io2 = capture();
    assert.equal(await main(["schema", "--signatures", mod], io2), 0);
    const printed = JSON.parse(io2.stdout.join(""));
    assert.deepEqual(printed.tasks, doc.tasks);
    assert.equal(printed.namespace, undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("schema - usage errors and duplicate names", async () => {
  const io = capture();
  assert.equal(await main(["schema"], io), 2);
  assert.match(io.stderr[0]!, /missing --signatures/);
  const io2 = capture();
  assert.equal(await main(["schema", "--signatures", "./nope.ts"], io2), 2);
  assert.match(io2.stderr[0]!, /not found/);
  const a = { kind: "celerity.signature", name: "x.y", args: undefined, result: undefined, options: {} };
  const b = { ...a };
  assert.throws(() => contractsDocument({ a, b }), /two different signatures are named "x.y"/);
  assert.deepEqual(contractsDocument({ a, again: a }).tasks["x.y"]!.options, {});
});
