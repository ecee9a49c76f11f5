/**
 * Workflow definitions: a named graph of stages, each a task (a signature or a task name), defined
 * in TypeScript ({@link defineWorkflow}) or loaded from plain data / YAML ({@link loadWorkflow},
 * {@link parseWorkflowYaml}). A definition compiles to a {@link Workflow} whose plain-data form
 * ({@link WorkflowData}) is stored with every run, so any process can continue a run.
 */
import * as v from "valibot";
import { parse as parseYaml } from "yaml";
import { assertTaskName, ProtocolError } from "../protocol/mod.ts";
import { isSignature, type AnySignature, type TaskOptions } from "../signatures/mod.ts";

/** How a group stage gathers objects: every object of the run, per root object, or by a key. */
export type GroupBy = "workflow" | "root" | ((object: unknown) => string | number);

/** A stage in TypeScript. */
export interface StageInput {
  /** The task run for each job of the stage: a signature (typed, its options apply) or a task name. */
  task: AnySignature | string;
  /** Stages that receive this stage's result (or the elements of it, with `split`). */
  next?: readonly string[];
  /**
   * One downstream job per element: `true` when the result is an array, or a function returning
   * the elements from the result.
   */
  split?: boolean | ((result: unknown) => readonly unknown[]);
  /**
   * Wait for the objects arriving at this stage, then run ONE job with their array. `true` means
   * `{ by: "root" }`: all objects descending from the same started object. `size` sends a job for
   * every `size` objects (and the rest once nothing more can arrive).
   */
  group?: true | { by?: GroupBy; size?: number };
  /** The queue of this stage's tasks (default: the signature's, else routing). */
  queue?: string;
}

/** A workflow in TypeScript. */
export interface WorkflowInput {
  /** Names the workflow (a task-name-like token: letters, digits, `_`, `-`, dots). */
  name: string;
  /** The stages, by name; the first stages are those no stage names in `next`. */
  stages: Record<string, StageInput>;
  /**
   * The queue of the internal tasks that move jobs between stages (`celerity.workflow.*`). A
   * worker with {@link registerWorkflowTasks} for this queue must run. Default `default`.
   */
  queue?: string;
}

/** The plain-data (JSON/YAML) form of a stage. */
export interface StageData {
  task: string;
  next?: string[];
  /** In data, split means "the result is an array: one downstream job per element". `"function"` marks a TypeScript split. */
  split?: boolean | "function";
  /** `"root"`, `"workflow"`, or `"function"` for a TypeScript key function. */
  group?: { by: "root" | "workflow" | "function"; size?: number };
  queue?: string;
  /** The signature's options (retries, time limits, …), applied when sent by name. */
  options?: TaskOptions;
}

/** The plain-data form of a workflow (what YAML holds and what each run stores). */
export interface WorkflowData {
  name: string;
  queue?: string;
  stages: Record<string, StageData>;
}

/** A compiled stage. */
export interface Stage {
  readonly name: string;
  readonly task: string;
  readonly signature?: AnySignature;
  readonly queue?: string;
  readonly options?: TaskOptions;
  readonly next: readonly string[];
  readonly split?: true | ((result: unknown) => readonly unknown[]);
  readonly group?: { readonly by: GroupBy; readonly size?: number };
}

/** A compiled workflow. */
export interface Workflow {
  readonly kind: "celerity.workflow";
  readonly name: string;
  /** Queue of the internal `celerity.workflow.*` tasks. */
  readonly queue: string;
  readonly stages: Readonly<Record<string, Stage>>;
  /** Stages no stage leads to: every started object gets one job in each. */
  readonly first: readonly string[];
  /** The plain-data form, stored with each run. */
  readonly data: WorkflowData;
}

const TOKEN = /^[A-Za-z0-9_-]+$/;
const NAME = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;

/** Definitions compiled in this process, by name (a worker uses them for stage functions). */
const registry = new Map<string, Workflow>();

/**
 * Defines a workflow in TypeScript (and registers it in this process, so a worker that imports
 * the module applies its `split` and `group.by` functions).
 *
 * @example
 * ```ts
 * const wf = defineWorkflow({
 *   name: "scan",
 *   stages: {
 *     ingest: { task: ingest, next: ["process"], split: true },
 *     process: { task: process, next: ["record"] },
 *     record: { task: record, group: { by: "root" } },
 *   },
 * });
 * ```
 */
export function defineWorkflow(input: WorkflowInput): Workflow {
  const wf = compileWorkflow(input);
  registry.set(wf.name, wf);
  return wf;
}

/** The definition registered under `name` in this process, if any. */
export function registeredWorkflow(name: string): Workflow | undefined {
  return registry.get(name);
}

/** Registers a compiled definition (done by defineWorkflow and registerWorkflowTasks). */
export function registerWorkflow(wf: Workflow): void {
  registry.set(wf.name, wf);
}

const positiveInt = v.pipe(v.number(), v.integer(), v.minValue(1));
const StageSchema = v.strictObject({
  task: v.pipe(v.string(), v.minLength(1)),
  next: v.optional(v.array(v.string())),
  split: v.optional(v.union([v.boolean(), v.literal("function")])),
  group: v.optional(v.union([
    v.boolean(),
    v.literal("root"),
    v.literal("workflow"),
    v.strictObject({ by: v.optional(v.picklist(["root", "workflow", "function"])), size: v.optional(positiveInt) }),
  ])),
  queue: v.optional(v.string()),
  options: v.optional(v.record(v.string(), v.unknown())),
});

/** The valibot schema of a workflow in plain data (YAML, JSON). */
export const WorkflowSchema = v.strictObject({
  name: v.pipe(v.string(), v.minLength(1)),
  queue: v.optional(v.string()),
  stages: v.record(v.string(), StageSchema),
});

/**
 * A workflow from plain data (parsed YAML or JSON). Stage functions cannot be data: `split: true`
 * means the result is an array (one downstream job per element); `group: true` (or `"root"`)
 * means "wait for all jobs of this stage for the same started object, then one job with the
 * array"; `group: "workflow"` gathers the whole run.
 */
export function loadWorkflow(data: unknown, options: { register?: boolean } = {}): Workflow {
  const parsed = v.safeParse(WorkflowSchema, data);
  if (!parsed.success) {
    const issue = parsed.issues[0];
    const path = issue.path?.map((p) => String(p.key)).join(".") ?? "";
    throw new ProtocolError(`invalid workflow definition${path ? ` at ${path}` : ""}: ${issue.message}`);
  }
  const d = parsed.output;
  const stages: Record<string, StageInput> = {};
  for (const [name, s] of Object.entries(d.stages)) {
    if (s.split === "function" || (typeof s.group === "object" && s.group.by === "function")) {
      throw new ProtocolError(`workflow "${d.name}" stage "${name}" uses a TypeScript function: define it with defineWorkflow() in the worker's code`);
    }
    const stage: StageInput = { task: s.task };
    if (s.next) stage.next = s.next;
    if (s.split) stage.split = true;
    if (s.group !== undefined && s.group !== false) {
      const g = s.group === true ? { by: "root" as const } : typeof s.group === "string" ? { by: s.group } : { by: (s.group.by ?? "root") as "root" | "workflow", ...(s.group.size ? { size: s.group.size } : {}) };
      stage.group = g;
    }
    if (s.queue) stage.queue = s.queue;
    stages[name] = stage;
    if (s.options) (stage as { options?: TaskOptions }).options = s.options as TaskOptions;
  }
  const wf = compileWorkflow({ name: d.name, stages, ...(d.queue ? { queue: d.queue } : {}) });
  if (options.register) registry.set(wf.name, wf);
  return wf;
}

/** A workflow from YAML text (see {@link loadWorkflow}). */
export function parseWorkflowYaml(text: string, options: { register?: boolean } = {}): Workflow {
  return loadWorkflow(parseYaml(text), options);
}

/**
 * The definition a run should use: the one registered in this process under the run's name when
 * it has the run's stages (it carries signatures and functions), else the run's stored data.
 */
export function resolveWorkflow(data: WorkflowData): Workflow {
  const local = registry.get(data.name);
  if (local && Object.keys(data.stages).every((s) => local.stages[s]?.task === data.stages[s]!.task)) return local;
  const stages: Record<string, StageInput> = {};
  for (const [name, s] of Object.entries(data.stages)) {
    const stage: StageInput & { options?: TaskOptions } = { task: s.task, next: s.next ?? [] };
    if (s.split === true) stage.split = true;
    if (s.split === "function") {
      stage.split = () => {
        throw new ProtocolError(`workflow "${data.name}" stage "${name}" splits with a TypeScript function this process does not have: import the defineWorkflow() module in the worker running registerWorkflowTasks()`);
      };
    }
    if (s.group) {
      stage.group = s.group.by === "function"
        ? {
          by: () => {
            throw new ProtocolError(`workflow "${data.name}" stage "${name}" groups with a TypeScript key function this process does not have: import the defineWorkflow() module in the worker running registerWorkflowTasks()`);
          },
          ...(s.group.size ? { size: s.group.size } : {}),
        }
        : { by: s.group.by, ...(s.group.size ? { size: s.group.size } : {}) };
    }
    if (s.queue) stage.queue = s.queue;
    if (s.options) stage.options = s.options;
    stages[name] = stage;
  }
  return compileWorkflow({ name: data.name, stages, ...(data.queue ? { queue: data.queue } : {}) });
}

function compileWorkflow(input: WorkflowInput): Workflow {
  if (typeof input !== "object" || input === null) throw new ProtocolError("defineWorkflow() takes { name, stages }");
  const name = input.name;
  if (typeof name !== "string" || !NAME.test(name)) throw new ProtocolError(`workflow name ${JSON.stringify(name)} is invalid: use letters, digits, _ and -, in parts separated by dots`);
  const where = `workflow "${name}"`;
  const entries = Object.entries(input.stages ?? {});
  if (!entries.length) throw new ProtocolError(`${where} has no stages`);
  const stages: Record<string, Stage> = {};
  const data: WorkflowData = { name, stages: {}, ...(input.queue ? { queue: input.queue } : {}) };
  for (const [sname, s] of entries) {
    if (!TOKEN.test(sname)) throw new ProtocolError(`${where}: stage name ${JSON.stringify(sname)} is invalid: use letters, digits, _ and -`);
    if (typeof s !== "object" || s === null) throw new ProtocolError(`${where} stage "${sname}" must be an object with a task`);
    const sig = isSignature(s.task) ? s.task : undefined;
    const task = sig ? sig.name : s.task;
    if (typeof task !== "string") throw new ProtocolError(`${where} stage "${sname}": task must be a signature or a task name`);
    assertTaskName(task as string);
    const next = [...(s.next ?? [])];
    for (const n of next) if (!entries.some(([k]) => k === n)) throw new ProtocolError(`${where} stage "${sname}": next stage "${n}" is not defined`);
    let split: Stage["split"];
    if (s.split === true) split = true;
    else if (typeof s.split === "function") split = s.split;
    else if (s.split !== undefined && s.split !== false) throw new ProtocolError(`${where} stage "${sname}": split must be true or a function`);
    let group: Stage["group"];
    if (s.group !== undefined) {
      const g = s.group === true ? {} : s.group;
      if (typeof g !== "object" || g === null) throw new ProtocolError(`${where} stage "${sname}": group must be true or { by?, size? }`);
      const by = g.by ?? "root";
      if (by !== "root" && by !== "workflow" && typeof by !== "function") throw new ProtocolError(`${where} stage "${sname}": group.by must be "root", "workflow" or a function`);
      if (g.size !== undefined && (!Number.isInteger(g.size) || g.size < 1)) throw new ProtocolError(`${where} stage "${sname}": group.size must be a positive integer`);
      group = Object.freeze({ by, ...(g.size !== undefined ? { size: g.size } : {}) });
    }
    const queue = s.queue ?? sig?.options.queue;
    const options = sig ? { ...sig.options } : (s as { options?: TaskOptions }).options;
    stages[sname] = Object.freeze({
      name: sname,
      task: task as string,
      next: Object.freeze(next),
      ...(sig ? { signature: sig } : {}),
      ...(queue ? { queue } : {}),
      ...(options && Object.keys(options).length ? { options } : {}),
      ...(split ? { split } : {}),
      ...(group ? { group } : {}),
    });
    const sd: StageData = { task: task as string };
    if (next.length) sd.next = next;
    if (split) sd.split = split === true ? true : "function";
    if (group) sd.group = { by: typeof group.by === "function" ? "function" : group.by, ...(group.size ? { size: group.size } : {}) };
    if (queue) sd.queue = queue;
    if (options && Object.keys(options).length) sd.options = { ...options } as TaskOptions;
    data.stages[sname] = sd;
  }
  const incoming = new Set(Object.values(stages).flatMap((s) => s.next));
  const first = Object.keys(stages).filter((s) => !incoming.has(s));
  if (!first.length) throw new ProtocolError(`${where} has no first stage (every stage is some stage's next: a cycle)`);
  // No cycles: a depth-first walk from every stage.
  const state = new Map<string, 1 | 2>();
  const visit = (s: string, path: string[]): void => {
    if (state.get(s) === 2) return;
    if (state.get(s) === 1) throw new ProtocolError(`${where} has a cycle: ${[...path, s].join(" → ")}`);
    state.set(s, 1);
    for (const n of stages[s]!.next) visit(n, [...path, s]);
    state.set(s, 2);
  };
  for (const s of Object.keys(stages)) visit(s, []);
  for (const f of first) if (stages[f]!.group) throw new ProtocolError(`${where}: first stage "${f}" cannot group (nothing arrives before it)`);
  if (input.queue !== undefined && !TOKEN.test(input.queue)) throw new ProtocolError(`${where}: queue ${JSON.stringify(input.queue)} is invalid`);
  return Object.freeze({ kind: "celerity.workflow", name, queue: input.queue ?? "default", stages: Object.freeze(stages), first: Object.freeze(first), data });
}

/** Stages from which `stage` can be reached (its ancestors). */
export function ancestors(wf: Workflow, stage: string): Set<string> {
  const out = new Set<string>();
  let grew = true;
  while (grew) {
    grew = false;
    for (const s of Object.values(wf.stages)) {
      if (out.has(s.name)) continue;
      if (s.next.some((n) => n === stage || out.has(n))) {
        out.add(s.name);
        grew = true;
      }
    }
  }
  return out;
}

/** Stages reachable from `stage` (its descendants). */
export function descendants(wf: Workflow, stage: string): Set<string> {
  const out = new Set<string>();
  const walk = (s: string) => {
    for (const n of wf.stages[s]!.next) {
      if (!out.has(n)) {
        out.add(n);
        walk(n);
      }
    }
  };
  walk(stage);
  return out;
}
