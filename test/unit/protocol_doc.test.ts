/**
 * Keeps docs/protocol.md honest: every header, dead-letter reason, state, event type, ack body,
 * name and stream configuration the code uses must appear in it, with the code's exact values.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { ACK, DEFAULT_QUEUE, DLQ_REASON, EVENT, HEADER, names, PROTOCOL_VERSION, STATE } from "../../sdk/protocol/mod.ts";
import { streamConfigs } from "../../sdk/client/mod.ts";

const doc = readFileSync(new URL("../../docs/protocol.md", import.meta.url), "utf8");
const n = names("celerity");
const configs = streamConfigs(n, {
  resultExpires: 86400,
  eventsMaxAge: 86400,
  eventsMaxBytes: 1073741824,
  dlqMaxAge: 2592000,
  replicas: 1,
  storage: "file",
});

/** The values that docs/protocol.md does not show as inline code. */
function missing(values: readonly string[]): string[] {
  return values.filter((v) => !doc.includes(`\`${v}\``));
}

/** A markdown table's rows as cell arrays (cells trimmed, outer pipes dropped). */
function tableRows(lines: string[]): string[][] {
  return lines.map((line) => line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim()));
}

/** The stream-configuration table: the first table whose header names every stream. */
function streamTable(): { header: string[]; rows: string[][] } {
  const lines = doc.split("\n");
  const streamNames = configs.map((c) => c.name!);
  const start = lines.findIndex((l) => l.startsWith("|") && streamNames.every((s) => l.includes(`\`${s}\``)));
  assert.ok(start >= 0, `docs/protocol.md has no table whose header names every stream (${streamNames.join(", ")})`);
  let end = start;
  while (end < lines.length && lines[end]!.startsWith("|")) end++;
  const [header, _separator, ...rows] = tableRows(lines.slice(start, end));
  return { header: header!, rows };
}

test("docs - protocol.md names every header the code uses", () => {
  assert.deepEqual(missing(Object.values(HEADER)), []);
});

test("docs - protocol.md names every dead-letter reason the code uses", () => {
  assert.deepEqual(missing(Object.values(DLQ_REASON)), []);
});

test("docs - protocol.md names every task state", () => {
  assert.deepEqual(missing(Object.values(STATE)), []);
});

test("docs - protocol.md names every event type", () => {
  assert.deepEqual(missing(Object.values(EVENT)), []);
});

test("docs - protocol.md names every ack body the worker may send", () => {
  assert.deepEqual(missing(Object.values(ACK)), []);
});

test("docs - protocol.md states the current protocol version", () => {
  const m = /`PROTOCOL_VERSION` is `(\d+)`/.exec(doc);
  assert.ok(m, "docs/protocol.md should say: `PROTOCOL_VERSION` is `<n>`");
  assert.equal(Number(m[1]), PROTOCOL_VERSION);
});

test("docs - protocol.md names every stream, bucket, consumer and wildcard of the namespace celerity", () => {
  // Every plain string names() returns, so a new stream or bucket cannot go undocumented.
  const strings = Object.entries(n).filter(([key, value]) => key !== "namespace" && typeof value === "string").map(([, value]) => value as string);
  assert.ok(strings.length >= 8, "sanity: names() returns the stream and bucket names");
  const buckets = Object.entries(n).filter(([key]) => key.endsWith("Bucket")).map(([, value]) => `KV_${value as string}`);
  assert.deepEqual(missing([...strings, ...buckets]), []);
});

test("docs - protocol.md names the subjects and consumers of the namespace celerity", () => {
  const q = DEFAULT_QUEUE;
  const expected = [
    n.taskSubject(q, 0),
    n.taskSubject("<queue>", 0).replace(/0$/, "<priority>"),
    n.queueFilter(q),
    n.queueFilter("<queue>"),
    n.queueConsumer(q),
    n.queueConsumer("<queue>"),
    n.eventsSubject("task"),
    n.eventsSubject("worker"),
    n.dlqSubject(q),
    n.dlqSubject("<queue>"),
    n.resultSubject("<id>"),
    n.progressSubject("<id>"),
    n.scheduledSubject(q),
    n.scheduledSubject("<queue>"),
    n.revokedSubject("<id>"),
    `$JS.API.CONSUMER.MSG.NEXT.${n.tasksStream}.${n.queueConsumer(q)}`,
    `$JS.API.CONSUMER.MSG.NEXT.${n.scheduledStream}.${n.schedulerConsumer}`,
  ];
  assert.deepEqual(missing(expected), []);
});

test("docs - protocol.md shows every field of every stream configuration with the code's value", () => {
  const { header, rows } = streamTable();
  const problems: string[] = [];
  for (const config of configs) {
    const column = header.findIndex((h) => h === `\`${config.name}\``);
    if (column < 0) {
      problems.push(`stream table has no column for ${config.name}`);
      continue;
    }
    for (const [field, value] of Object.entries(config)) {
      if (field === "name" || value === undefined) continue;
      const row = rows.find((r) => r[0]!.startsWith(`\`${field}\``));
      if (!row) {
        problems.push(`stream table has no row for \`${field}\``);
        continue;
      }
      const cell = row[column] ?? "";
      const shown = Array.isArray(value) ? value.map(String) : [String(value)];
      for (const v of shown) {
        if (!cell.includes(`\`${v}\``)) problems.push(`${config.name}.${field}: the table shows "${cell}", the code has \`${v}\``);
      }
    }
  }
  assert.deepEqual(problems, []);
});

test("docs - protocol.md names the string values of the stream configurations (retention, discard, storage)", () => {
  const values = new Set<string>();
  for (const config of configs) {
    for (const value of Object.values(config)) if (typeof value === "string") values.add(value);
  }
  assert.ok(values.has("workqueue") && values.has("limits"), "sanity: the configs have retention values");
  assert.deepEqual(missing([...values]), []);
});
