/**
 * `celerity schema --signatures <module>`: the task contracts of a signatures module as JSON
 * Schema, for clients in other languages (docs/contracts.md).
 */
import { existsSync, statSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import process from "node:process";
import { pathToFileURL } from "node:url";
import { toJsonSchema, type JsonSchema } from "@valibot/to-json-schema";
import { PROTOCOL_VERSION } from "../protocol/mod.ts";
import { isSignature, type AnySignature, type TaskOptions } from "../signatures/mod.ts";
import { CONNECTION_HELP, noPositionals, parseCommand } from "./args.ts";
import { CliError, EXIT, UsageError, type Command, type Io } from "./io.ts";

/** One task in the contracts document. */
export interface TaskContract {
  /** The signature's queue, when it sets one. */
  queue?: string;
  /** The signature's other default options. */
  options: Omit<TaskOptions, "queue">;
  /** JSON Schema (draft-07) of the arguments as they travel (the schema's input type). */
  args: JsonSchema;
  /** JSON Schema (draft-07) of the result as it is stored (the result schema's input type). */
  result: JsonSchema;
  /** Why a schema is `{}` or less strict than the TypeScript one. */
  notes?: string[];
}

/** The document `celerity schema` writes. */
export interface ContractsDocument {
  protocol: number;
  namespace?: string;
  tasks: Record<string, TaskContract>;
}

type AnySchema = Parameters<typeof toJsonSchema>[0];

/** True when a valibot schema tree has a transformation anywhere (its JSON Schema stops before it). */
function hasTransform(node: unknown, seen = new Set<unknown>()): boolean {
  if (typeof node !== "object" || node === null || seen.has(node)) return false;
  seen.add(node);
  if ((node as { kind?: unknown }).kind === "transformation") return true;
  for (const value of Object.values(node)) {
    if (typeof value === "object" && value !== null && hasTransform(value, seen)) return true;
  }
  return false;
}

/**
 * JSON Schema of one Standard Schema. Valibot schemas are converted with @valibot/to-json-schema
 * in `typeMode: "input"`: the wire carries the input type (clients send unparsed args, workers store
 * the handler's return value), and a pipeline is described up to its first transformation
 * (validations after it are left out, with a note). Parts JSON Schema cannot express (dates,
 * bigints, custom checks) become `{}` with a note. Other vendors become `{}` with a note.
 */
export function jsonSchemaOf(schema: unknown, where: string, notes: string[]): JsonSchema {
  if (schema === undefined) {
    notes.push(`${where}: no schema (anything is accepted)`);
    return {};
  }
  const vendor = (schema as { "~standard"?: { vendor?: unknown } })["~standard"]?.vendor;
  if (vendor !== "valibot") {
    notes.push(`${where}: a ${JSON.stringify(vendor)} Standard Schema cannot be converted; {} accepts anything, the worker still validates`);
    return {};
  }
  if (hasTransform(schema)) notes.push(`${where}: has transformations; described up to the first one in each pipeline (checks after it are enforced by the worker only)`);
  try {
    return toJsonSchema(schema as AnySchema, { typeMode: "input", errorMode: "throw" });
  } catch (err) {
    notes.push(`${where}: partly not expressible in JSON Schema (${(err as Error).message}); those parts are {}`);
    return toJsonSchema(schema as AnySchema, { typeMode: "input", errorMode: "ignore" });
  }
}

/** The contract of one signature. */
export function taskContract(sig: AnySignature): TaskContract {
  const notes: string[] = [];
  const { queue, ...options } = sig.options;
  const contract: TaskContract = {
    ...(queue !== undefined ? { queue } : {}),
    options,
    args: jsonSchemaOf(sig.args, "args", notes),
    result: jsonSchemaOf(sig.result, "result", notes),
  };
  if (notes.length) contract.notes = notes;
  return contract;
}

/**
 * Every signature a module exports: directly, or inside an exported plain object or array (one
 * level, e.g. `export const tasks = { add, resize }`). Two different signatures with one name fail.
 */
export function findSignatures(mod: Record<string, unknown>): AnySignature[] {
  const found = new Map<string, AnySignature>();
  const add = (value: unknown, where: string) => {
    if (!isSignature(value)) return;
    const prior = found.get(value.name);
    if (prior && prior !== value) throw new CliError(`two different signatures are named "${value.name}" (the second in export ${where})`);
    found.set(value.name, value);
  };
  for (const [key, value] of Object.entries(mod)) {
    add(value, key);
    if (!isSignature(value) && typeof value === "object" && value !== null && (Array.isArray(value) || Object.getPrototypeOf(value) === Object.prototype)) {
      for (const [k, inner] of Object.entries(value)) add(inner, `${key}.${k}`);
    }
  }
  return [...found.values()];
}

/** The contracts document of a module's signatures, tasks sorted by name. */
export function contractsDocument(mod: Record<string, unknown>, namespace?: string): ContractsDocument {
  const sigs = findSignatures(mod).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return {
    protocol: PROTOCOL_VERSION,
    ...(namespace !== undefined ? { namespace } : {}),
    tasks: Object.fromEntries(sigs.map((s) => [s.name, taskContract(s)])),
  };
}

const TS_FILE = /\.(ts|mts|cts|tsx)$/i;

/** Imports a signatures module; registers tsx first for a .ts file when it is not active. */
async function importModule(spec: string): Promise<Record<string, unknown>> {
  const path = resolve(process.cwd(), spec);
  if (!existsSync(path) || !statSync(path).isFile()) throw new CliError(`signatures module ${spec} not found (looked for ${path})`, EXIT.usage);
  const loaderActive = import.meta.url.endsWith(".ts") || [...process.execArgv, process.env.NODE_OPTIONS ?? ""].some((a) => /\btsx\b/.test(a));
  if (TS_FILE.test(path) && !loaderActive) {
    try {
      const api = (await import("tsx/esm/api")) as { register?: () => unknown };
      api.register?.();
    } catch {
      throw new CliError(`signatures module ${spec} is TypeScript and tsx is not installed: install it (npm install --save-dev tsx) or compile the module to JavaScript`);
    }
  }
  try {
    return (await import(pathToFileURL(path).href)) as Record<string, unknown>;
  } catch (err) {
    throw new CliError(`cannot load signatures module ${spec}: ${err instanceof Error ? err.message : String(err)}`);
  }
}

export const schemaCommand: Command = {
  name: "schema",
  summary: "write the JSON Schema contracts of a signatures module (for clients in other languages)",
  usage: `Usage: celerity schema --signatures <module> [-o <file>]

Imports <module> (.ts or .js), finds every exported signature (also inside an exported object or
array), and writes {protocol, namespace?, tasks: {<name>: {queue?, options, args, result, notes?}}}
as JSON: args and result are JSON Schema (draft-07) of what travels on the wire. Valibot schemas
are converted; pipelines are described up to their first transformation; other Standard Schemas
become {} with a note. See docs/contracts.md.

Options:
  --signatures <module>  the module that exports signatures (required)
  -o, --output <file>    write to <file> instead of stdout
  --namespace <ns>       record the namespace in the document (nothing is connected)

${CONNECTION_HELP}

Example:
  celerity schema --signatures ./contracts.ts -o contracts.json

Exit codes:
  0  written
  1  the module failed to load or two signatures share a name
  2  bad usage: missing --signatures, module not found`,
  async run(argv: string[], io: Io): Promise<number> {
    const { values, positionals } = parseCommand(argv, {
      signatures: { type: "string" },
      output: { type: "string", short: "o" },
    });
    noPositionals(positionals);
    if (values.signatures === undefined) throw new UsageError("missing --signatures <module>");
    const mod = await importModule(values.signatures);
    const doc = contractsDocument(mod, values.namespace);
    if (Object.keys(doc.tasks).length === 0) io.err(`warning: ${values.signatures} exports no signatures`);
    const text = `${JSON.stringify(doc, null, 2)}\n`;
    if (values.output !== undefined) {
      writeFileSync(values.output, text);
      io.err(`wrote ${Object.keys(doc.tasks).length} task contract(s) to ${values.output}`);
    } else io.out(text);
    return EXIT.ok;
  },
};
