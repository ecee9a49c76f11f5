/**
 * canvas.ts: work that follows work. A chain (each step gets the previous result), a group
 * (members in parallel, results in order) and a chord (a group whose results go to one more task).
 * What follows a task travels in its message and is sent by the worker that finishes it.
 *
 *   node --import tsx examples/scripts/canvas.ts [n]
 *   npx deno run -A examples/scripts/canvas.ts 10
 *   npx bun run examples/scripts/canvas.ts
 *
 * Needs a worker with the example tasks, started from the repository root with
 *   node bin/celerity.mjs worker -A examples/tasks/worker.ts -Q default,images
 * and the server in CELERITY_SERVERS (default nats://127.0.0.1:4222). `n` (default 4) is the
 * chord's size.
 */
import process from "node:process";
import { connect } from "../../sdk/client/mod.ts"; // "celerity" in your project
import { apply, call, chain, chord, group, map } from "../../sdk/canvas/mod.ts"; // "celerity/canvas"
import { add, double, total } from "../tasks/signatures.ts";

const n = Number(process.argv[2] ?? 4);
if (!Number.isInteger(n) || n < 1 || n > 1000) {
  console.error(`n must be an integer from 1 to 1000, got ${process.argv[2]}`);
  process.exit(2);
}
const wait = { timeout: 30_000 };

try {
  await using client = await connect();

  // chain: add(1, 2) = 3, then double(3) = 6, then double(6) = 12. A step without arguments
  // receives the previous result as its arguments. The handle's id is the last step's.
  const c = await apply(client, chain(call(add, { a: 1, b: 2 }), call(double), call(double)));
  console.log(`chain  double(double(add(1, 2)))  = ${await c.result(wait)}`);

  // group: members run in parallel; the result lists theirs in order.
  const g = await apply(client, group([call(add, { a: 1, b: 1 }), call(add, { a: 2, b: 2 }), call(double, 5)]));
  console.log(`group  [add(1, 1), add(2, 2), double(5)]  = ${JSON.stringify(await g.result(wait))}`);

  // chord: map() sends double(1) … double(n) in parallel; once all finished, total() receives
  // their results. Counted in JetStream: nothing polls, and this client may close meanwhile.
  const s = await apply(client, chord(map(double, Array.from({ length: n }, (_, i) => i + 1)), call(total)));
  console.log(`chord  total(map(double, 1..${n}))  = ${await s.result(wait)}`);
} catch (err) {
  console.error(`error: ${(err as Error).message}`);
  process.exitCode = 1;
}
