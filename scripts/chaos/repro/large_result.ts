/**
 * Repro: records that cannot fit in max_payload. (1) A handler that returns a result larger than
 * max_payload: the result cannot be stored, the message is nak'd and comes straight back, and the
 * handler runs again and again. (2) Wrong arguments carrying a 400 KB string: the FAILURE record
 * quotes the value in error.message, error.stack and error.details, goes over max_payload and is
 * neither replied nor stored, so call() never learns the outcome.
 *
 *   node --import tsx scripts/chaos/repro/large_result.ts
 */
import * as v from "valibot";
import { signature } from "../../../sdk/signatures/mod.ts";
import { drain, rig, sleep, verdict } from "./common.ts";
import { work } from "../signatures.ts";

const big = signature("repro.big_result", { args: v.object({ bytes: v.number() }) });
let runs = 0;
const r = await rig((w) => {
  w.implement(big, ({ bytes }) => {
    runs++;
    return "r".repeat(bytes);
  });
  w.implement(work, ({ n }) => ({ n, pid: process.pid }));
});
try {
  const max = r.client.nc.info!.max_payload;
  const h = await r.client.send(big, { bytes: max + 1000 });
  const left = await drain(r.client, 5000);
  const rec = await r.client.getRecord(h.id);
  const state = rec?.state ?? "none";
  const bug1 = runs > 1 || state === "none";
  verdict(bug1, `(1) result of ${max + 1000} bytes: handler ran ${runs}× in 5 s, stored state ${state}${rec?.error ? ` (${rec.error.type})` : ""}, ${left} message(s) left in the work queue`);
  const bad = await r.client.send("chaos.work", { n: "y".repeat(400_000) });
  let outcome = "";
  try {
    await bad.result({ timeout: 5000 });
    outcome = "resolved?!";
  } catch (err) {
    outcome = (err as Error).name;
  }
  await sleep(200);
  const record = await r.client.getRecord(bad.id);
  verdict(!record, `(2) wrong args with a 400 KB string: result() ended with ${outcome}, stored record ${record ? record.state : "none"}`);
  if (bug1 || !record) process.exitCode = 1;
} finally {
  await r.close();
}
