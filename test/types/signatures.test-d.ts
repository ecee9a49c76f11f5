/**
 * Type tests: compiled by `tsc` (test/unit/types.test.ts runs it), never executed. Each
 * `@ts-expect-error` must be an error, or tsc fails; each assignment must type-check.
 */
import * as v from "valibot";
import { signature, type ArgsInput, type ArgsOutput, type ResultOutput } from "../../sdk/signatures/mod.ts";
import type { Client } from "../../sdk/client/mod.ts";
import type { Worker } from "../../sdk/worker/mod.ts";

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function expectType<T extends true>(_: T): void {}

const resize = signature("images.resize", {
  args: v.object({ url: v.pipe(v.string(), v.url()), width: v.optional(v.number(), 100) }),
  result: v.object({ key: v.string(), bytes: v.number() }),
  queue: "images",
});
const when = signature("dates.when", {
  args: v.object({ at: v.pipe(v.string(), v.transform((s) => new Date(s))) }),
  result: v.pipe(v.number(), v.transform((n) => BigInt(n))),
});
const untyped = signature("misc.untyped");

// Inputs and outputs follow the schemas.
expectType<Equal<ArgsInput<typeof resize>, { url: string; width?: number | undefined }>>(true);
expectType<Equal<ArgsOutput<typeof resize>, { url: string; width: number }>>(true);
expectType<Equal<ArgsInput<typeof when>, { at: string }>>(true);
expectType<Equal<ArgsOutput<typeof when>, { at: Date }>>(true);
expectType<Equal<ResultOutput<typeof when>, bigint>>(true);
expectType<Equal<ArgsInput<typeof untyped>, unknown>>(true);
expectType<Equal<(typeof resize)["name"], "images.resize">>(true);

declare const client: Client;
async function clientSide() {
  const handle = await client.send(resize, { url: "https://example.org/a.png" });
  const r = await handle.result();
  expectType<Equal<typeof r, { key: string; bytes: number }>>(true);
  const n = await client.call(when, { at: "2026-01-01" });
  expectType<Equal<typeof n, bigint>>(true);
  // @ts-expect-error width must be a number
  await client.send(resize, { url: "x", width: "wide" });
  // @ts-expect-error url is required
  await client.call(resize, { width: 3 });
  // By name: anything goes, the result is unknown.
  const any = await client.call("misc.untyped", [1, 2, 3]);
  expectType<Equal<typeof any, unknown>>(true);
}

declare const worker: Worker;
function workerSide() {
  worker.implement(resize, async (args, ctx) => {
    expectType<Equal<typeof args, { url: string; width: number }>>(true);
    ctx.progress(0.5);
    return { key: args.url, bytes: args.width };
  });
  worker.implement(when, ({ at }) => at.getTime());
  // @ts-expect-error the result must match the result schema's input
  worker.implement(resize, () => ({ key: 1 }));
}
void clientSide;
void workerSide;
