/**
 * The msgpackr codec behind `encode()`/`decode()` (sdk/protocol/envelope.ts) and the fallback of
 * MessagePackWriter (sdk/protocol/writer.ts), in a module of its own so that neither imports the
 * other.
 *
 * `useRecords: false` keeps it standard MessagePack; Dates travel as the standard timestamp
 * extension (-1); Maps become maps and are read back as plain objects; `undefined` becomes nil
 * (not msgpackr's private extension). 64-bit integers decode as numbers when they fit a double
 * exactly and as BigInt only beyond that, so a Python or Go client's int64 `sentAt` reads as a
 * number.
 */
import { Packr } from "msgpackr";

const packr = new Packr({
  useRecords: false,
  mapsAsObjects: true,
  moreTypes: false,
  // "auto" is implemented by msgpackr (unpack.js) but missing from its .d.ts.
  int64AsType: "auto" as "number",
  encodeUndefinedAsNil: true,
});

/**
 * msgpackr's own encoding of `value`. Prefer `encode()`: msgpackr 2.1.3 writes a typed array other
 * than Uint8Array (Float64Array, Int16Array, …) as `bin` of the right length holding one byte per
 * element and then uninitialised memory, which `encode()` avoids (it writes every object itself but
 * Date, Error, RegExp, ArrayBuffer and Map/Set subclasses).
 */
export function msgpackrPack(value: unknown): Uint8Array {
  return packr.pack(value);
}

/** msgpackr's decoding of `bytes` (throws what msgpackr throws). */
export function msgpackrUnpack(bytes: Uint8Array): unknown {
  return packr.unpack(bytes);
}
