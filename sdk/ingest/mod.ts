/**
 * Remote ingest: upload a large input to the JetStream object store and send a task that carries a
 * reference to it; workers read it back with {@link openObject}. Re-running an ingest after a
 * failure neither uploads twice nor sends twice (see docs/ingest.md).
 *
 * @example
 * ```ts
 * import { openAsBlob } from "node:fs";
 * import { connect } from "celerity";
 * import { ingest } from "celerity/ingest";
 * await using client = await connect();
 * const { handle } = await ingest(client, { file: await openAsBlob("big.csv"), name: "big.csv", task: "ingest.count_lines" });
 * console.log(await handle.result());
 * ```
 * @module
 */
export {
  digestOf,
  ingest,
  ingestBucket,
  ingestKey,
  objectRefSchema,
  objectStore,
  openObject,
  ObjectRefError,
  readObject,
  type IngestOptions,
  type IngestProgress,
  type IngestResult,
  type ObjectRef,
} from "./ingest.ts";
export { objectDigest, Sha256 } from "./sha256.ts";
