/**
 * Remote ingest: upload a large input to the JetStream object store, then send a task that carries
 * a reference to it. Idempotent and resumable: the object's name plus its content digest decide
 * whether the upload is needed again and which task id the send uses, so re-running an ingest
 * after a network loss neither uploads twice nor sends twice.
 */
import { Objm, StorageType, type ObjectInfo, type ObjectStore } from "@nats-io/obj";
import * as v from "valibot";
import { idempotentId, type Client, type SendOptions, type TaskHandle } from "../client/mod.ts";
import { isSignature, type AnySignature } from "../signatures/mod.ts";
import { objectDigest, Sha256 } from "./sha256.ts";

/** A reference to an uploaded input: what the ingest task receives. Plain data (MessagePack-safe). */
export interface ObjectRef {
  /** Object store bucket. */
  bucket: string;
  /** Object name in the bucket. */
  name: string;
  /** Size in bytes. */
  size: number;
  /** The object store's digest: `SHA-256=` + padded base64url of the content's SHA-256. */
  digest: string;
}

/** A valibot schema of {@link ObjectRef}, for ingest signatures: `args: v.object({ ref: objectRefSchema })`. */
export const objectRefSchema = v.object({
  bucket: v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]+$/)),
  name: v.pipe(v.string(), v.minLength(1)),
  size: v.pipe(v.number(), v.integer(), v.minValue(0)),
  digest: v.pipe(v.string(), v.startsWith("SHA-256=")),
});

/** One progress report of {@link ingest}. */
export interface IngestProgress {
  /** `hashing` the input, `uploading` it, `sending` the task, `done`. */
  phase: "hashing" | "uploading" | "sending" | "done";
  /** Bytes hashed or uploaded so far in this phase. */
  bytes: number;
  /** Size of the input when known. */
  total: number | undefined;
  /** True once the upload was skipped because the bucket already holds the same name and digest. */
  skipped?: boolean;
}

/** Options of {@link ingest}. Give exactly one of `file` / `stream` and one of `signature` / `task`. */
export interface IngestOptions<A = unknown> {
  /**
   * The input as a Blob: Node `await fs.openAsBlob(path)`, Bun `Bun.file(path)`, a browser `File`.
   * It is read twice (hash, then upload), so the upload is skipped when the object already exists.
   */
  file?: Blob;
  /**
   * The input as a stream (read once). Without `digest` it is always uploaded (the object store
   * replaces an object of the same name); the task id still comes from name + digest, so a re-run
   * does not send a second task.
   */
  stream?: ReadableStream<Uint8Array>;
  /** The stream's digest when known (`SHA-256=…`, as {@link digestOf} computes): lets a stream skip the upload too. */
  digest?: string;
  /** Object name in the bucket (e.g. the file's base name). */
  name: string;
  /** Object store bucket; default `<namespace>_ingest`, created if missing. */
  bucket?: string;
  /** The task to send, typed. */
  signature?: AnySignature;
  /** The task to send, by name (no schema). */
  task?: string;
  /** Builds the task's arguments from the reference; default `(ref) => ({ ref })`. */
  args?: (ref: ObjectRef) => A;
  /** Other send options (queue, priority, retries, …); the task id comes from name + digest. */
  send?: Omit<SendOptions, "id" | "idempotencyKey">;
  /** Called as the input is hashed and uploaded, and once with `phase: "done"`. */
  onProgress?: (progress: IngestProgress) => void;
}

/** What {@link ingest} did. */
export interface IngestResult {
  /** The reference the task received. */
  ref: ObjectRef;
  /** The task's handle (its id is derived from task, bucket, name and digest). */
  handle: TaskHandle<unknown>;
  /** False when an object with the same name and digest was already stored. */
  uploaded: boolean;
  /**
   * False when this ingest's task had been sent before (recorded on the object, or a result exists);
   * sends within the dedupe window are also dropped by JetStream, so this may be true for a duplicate it dropped.
   */
  sent: boolean;
}

/** The default ingest bucket of a client's namespace. */
export function ingestBucket(client: Client): string {
  return `${client.settings.namespace}_ingest`;
}

/** The idempotency key of one ingest: the task plus the object's bucket, name and digest. */
export function ingestKey(task: string, ref: Pick<ObjectRef, "bucket" | "name" | "digest">): string {
  return `ingest:${task}:${ref.bucket}/${ref.name}@${ref.digest}`;
}

/** Object metadata key under which ingest records the task id it sent for the object's content. */
const SENT_KEY_PREFIX = "celerity-ingest-";

/** The SHA-256 digest of a Blob or stream in the object store's form (`SHA-256=…`). */
export async function digestOf(input: Blob | ReadableStream<Uint8Array>, onBytes?: (bytes: number) => void): Promise<string> {
  const sha = new Sha256();
  let bytes = 0;
  const reader = (input instanceof ReadableStream ? input : input.stream()).getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    sha.update(value);
    bytes += value.length;
    onBytes?.(bytes);
  }
  return objectDigest(sha.digest());
}

const stores = new WeakMap<Client, Map<string, Promise<ObjectStore>>>();

/** Opens (creating when missing: idempotent) the object store `bucket` on the client's connection. */
export function objectStore(client: Client, bucket: string): Promise<ObjectStore> {
  let byName = stores.get(client);
  if (!byName) stores.set(client, (byName = new Map()));
  let store = byName.get(bucket);
  if (!store) {
    const s = client.settings;
    // The client's JetStream context, so the API requests wait its `requestTimeout`.
    store = client.jsm().then((jsm) => new Objm(jsm.jetstream()).create(bucket, { storage: s.storage === "memory" ? StorageType.Memory : StorageType.File, replicas: s.replicas }));
    store.catch(() => byName!.delete(bucket));
    byName.set(bucket, store);
  }
  return store;
}

function refOf(bucket: string, info: ObjectInfo): ObjectRef {
  return { bucket, name: info.name, size: info.size, digest: info.digest };
}

/** Pieces handed to the object store at a time: progress then follows the upload closely. */
const PIECE = 64 * 1024;

/**
 * Re-chunks `source` into pieces of at most {@link PIECE} bytes, pulled one at a time, and reports
 * the bytes handed over: the object store pulls the next piece only after publishing a full chunk.
 */
function counting(source: ReadableStream<Uint8Array>, total: number | undefined, report: (p: IngestProgress) => void): ReadableStream<Uint8Array> {
  const reader = source.getReader();
  let pending: Uint8Array | undefined;
  let bytes = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      while (!pending || pending.length === 0) {
        const { done, value } = await reader.read();
        if (done) {
          controller.close();
          return;
        }
        pending = value;
      }
      const piece = pending.subarray(0, PIECE);
      pending = pending.subarray(piece.length);
      bytes += piece.length;
      controller.enqueue(piece);
      report({ phase: "uploading", bytes, total });
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}

/**
 * Uploads `file` / `stream` to the object store as `name` (skipped when the bucket already holds
 * `name` with the same digest), then sends the task with `args(ref)` and an idempotency key derived
 * from task + bucket + name + digest. Safe to re-run after any failure: it uploads what is missing
 * and sends at most one task per content.
 */
export async function ingest<A = unknown>(client: Client, options: IngestOptions<A>): Promise<IngestResult> {
  const { file, stream, name, onProgress } = options;
  if ((file === undefined) === (stream === undefined)) throw new TypeError("ingest: give exactly one of `file` or `stream`");
  if (typeof name !== "string" || name === "") throw new TypeError("ingest: `name` must be a non-empty string");
  const sig = options.signature;
  if (sig !== undefined && !isSignature(sig)) throw new TypeError("ingest: `signature` is not a signature");
  if ((sig === undefined) === (options.task === undefined)) throw new TypeError("ingest: give exactly one of `signature` or `task`");
  const task = sig ? sig.name : options.task!;
  const bucket = options.bucket ?? ingestBucket(client);
  const report = onProgress ?? (() => {});
  const total = file ? file.size : undefined;

  const os = await objectStore(client, bucket);
  let digest = options.digest;
  if (file) digest = await digestOf(file, (bytes) => report({ phase: "hashing", bytes, total }));
  const previous = await os.info(name);
  let info: ObjectInfo;
  let uploaded = false;
  if (previous && !previous.deleted && digest !== undefined && previous.digest === digest) {
    info = previous;
    report({ phase: "uploading", bytes: info.size, total: info.size, skipped: true });
    stream?.cancel().catch(() => {});
  } else {
    const source = file ? file.stream() : stream!;
    // Keep the previous object's metadata: its "sent" marks name task ids derived from digests, so
    // they stay right when the same content is uploaded again (a stream without a digest).
    const meta = previous?.metadata && !previous.deleted ? { name, metadata: previous.metadata } : { name };
    info = await os.put(meta, counting(source, total, report), { timeout: client.settings.requestTimeout });
    uploaded = true;
    if (digest !== undefined && info.digest !== digest) {
      throw new Error(`ingest: the input changed while it was uploaded (digest ${digest} before, ${info.digest} stored)`);
    }
  }
  const ref = refOf(bucket, info);

  report({ phase: "sending", bytes: ref.size, total: ref.size });
  const id = idempotentId(ingestKey(task, ref));
  const sentKey = `${SENT_KEY_PREFIX}${id}`;
  // Sent before (beyond the dedupe window too): recorded on the object, or a result already exists.
  const sentBefore = info.metadata?.[sentKey] === task || (await client.getRecord(id)) !== undefined;
  let handle: TaskHandle<unknown>;
  if (sentBefore) {
    handle = sig ? client.task(id, sig) : client.task(id);
  } else {
    const args = options.args ? options.args(ref) : { ref };
    const sendOptions: SendOptions = { ...options.send, idempotencyKey: ingestKey(task, ref) };
    handle = sig ? await client.send(sig, args as never, sendOptions) : await client.send(task, args, sendOptions);
    try {
      await os.update(name, { name, ...(info.description ? { description: info.description } : {}), ...(info.headers ? { headers: info.headers } : {}), metadata: { ...info.metadata, [sentKey]: task } });
    } catch {
      // Only a hint for re-runs after the dedupe window: the send itself is done.
    }
  }
  report({ phase: "done", bytes: ref.size, total: ref.size, ...(uploaded ? {} : { skipped: true }) });
  return { ref, handle, uploaded, sent: !sentBefore };
}

/** Thrown by {@link openObject} when the stored object is missing or is not the referenced content. */
export class ObjectRefError extends Error {
  override name = "ObjectRefError";
}

/**
 * Opens the referenced object for reading. Checks that the stored object has the reference's
 * digest and size (it was not replaced); the stream errors at its end if the bytes read do not
 * hash to that digest.
 */
export async function openObject(client: Client, ref: ObjectRef): Promise<ReadableStream<Uint8Array>> {
  const parsed = v.safeParse(objectRefSchema, ref);
  if (!parsed.success) throw new ObjectRefError(`not an object reference: ${parsed.issues.map((i) => i.message).join("; ")}`);
  const os = await objectStore(client, ref.bucket);
  const result = await os.get(ref.name);
  if (!result) throw new ObjectRefError(`object ${JSON.stringify(ref.name)} not found in bucket ${ref.bucket}`);
  if (result.info.digest !== ref.digest || result.info.size !== ref.size) {
    await result.data.cancel().catch(() => {});
    throw new ObjectRefError(`object ${JSON.stringify(ref.name)} in bucket ${ref.bucket} was replaced: stored ${result.info.digest} (${result.info.size} bytes), referenced ${ref.digest} (${ref.size} bytes)`);
  }
  // The object store checks the stored digest as it streams; check ours too, and the size.
  const sha = new Sha256();
  let bytes = 0;
  return result.data.pipeThrough(new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      sha.update(chunk);
      bytes += chunk.length;
      controller.enqueue(chunk);
    },
    flush(controller) {
      const got = objectDigest(sha.digest());
      if (got !== ref.digest || bytes !== ref.size) controller.error(new ObjectRefError(`object ${JSON.stringify(ref.name)}: read ${bytes} bytes hashing to ${got}, expected ${ref.size} bytes hashing to ${ref.digest}`));
    },
  }));
}

/** Reads the referenced object whole (digest checked). For inputs that fit in memory. */
export async function readObject(client: Client, ref: ObjectRef): Promise<Uint8Array> {
  const out = new Uint8Array(ref.size);
  let offset = 0;
  const reader = (await openObject(client, ref)).getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (offset + value.length > out.length) throw new ObjectRefError(`object ${JSON.stringify(ref.name)} is larger than its reference says`);
    out.set(value, offset);
    offset += value.length;
  }
  return out;
}
