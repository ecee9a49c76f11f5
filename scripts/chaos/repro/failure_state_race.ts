/**
 * Repro: a task that FAILS after about stateWriteDelay can end with a stale STARTED record stored
 * after its FAILURE record (the sweep's state write races #deadLetterAfterRun, which neither marks
 * the flight as finalizing nor waits for a pending state write).
 *
 *   node --import tsx scripts/chaos/repro/failure_state_race.ts
 */
import { drain, rig, sleep, verdict } from "./common.ts";
import { work } from "../signatures.ts";

const r = await rig((w) =>
  w.implement(work, async ({ n, sleepMs }) => {
    await sleep(sleepMs ?? 0);
    throw new Error(`boom ${n}`);
  }), { concurrency: 50, stateWriteDelayMs: 50 });
try {
  const ids: string[] = [];
  for (let i = 0; i < 500; i++) ids.push((await r.client.send(work, { n: i, sleepMs: 40 + (i % 20) })).id);
  await drain(r.client, 30_000);
  await sleep(500);
  const states = new Map<string, number>();
  for (const id of ids) {
    const s = (await r.client.getRecord(id))?.state ?? "none";
    states.set(s, (states.get(s) ?? 0) + 1);
  }
  const stale = [...states].filter(([s]) => s !== "FAILURE").reduce((n, [, k]) => n + k, 0);
  verdict(stale > 0, `500 failing tasks, all acked and dead-lettered; stored states ${JSON.stringify(Object.fromEntries(states))}`);
} finally {
  await r.close();
}
