/**
 * Typed task contracts. A module of signatures is plain data plus schemas: import it from a client,
 * a notebook, an HPC callback and a worker alike.
 *
 * @example
 * ```ts
 * import * as v from "valibot";
 * import { signature } from "celerity/signatures";
 * export const add = signature("math.add", {
 *   args: v.object({ a: v.number(), b: v.number() }),
 *   result: v.number(),
 * });
 * ```
 * @module
 */
export {
  type AnySignature,
  type ArgsInput,
  type ArgsOutput,
  checkTaskOptions,
  etaOf,
  isSignature,
  isStandardSchema,
  type ResultInput,
  type ResultOutput,
  type Signature,
  signature,
  type SignatureDefinition,
  taskMessage,
  type TaskMessageFields,
  type TaskOptions,
  validate,
  type Validation,
} from "./signature.ts";
export type { StandardSchemaV1 } from "./standard_schema.ts";
