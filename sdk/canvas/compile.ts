/**
 * Turns a canvas into its wire form: normalised (chains flattened; a group or chord followed by
 * more steps becomes a chord whose body carries them), every task id assigned up front from the
 * canvas's id, and the arguments that are already known checked against their schemas.
 */
import { assertTaskId, InvalidArgumentsError, ProtocolError, type SchemaIssue } from "../protocol/mod.ts";
import { validate, type AnySignature, type TaskOptions, type Validation } from "../signatures/mod.ts";
import { compact, isValidated, type Call, type Canvas, type ChordErrorPolicy } from "./shapes.ts";

/** A call's options on the wire (the id travels beside them). */
export interface WireOptions extends TaskOptions {
  countdown?: number;
  eta?: number;
  meta?: Record<string, unknown>;
}

/** A call on the wire: the user's call with its id and without its signature. */
export interface CallNode {
  kind: "call";
  /** Absent only in callbacks given to `send()` through `link()`: then derived from the parent's id. */
  id?: string;
  task: string;
  args?: unknown;
  immutable?: true;
  options?: WireOptions;
  link?: Node[];
  linkError?: Node[];
}
/** Steps on the wire: every step but the last is a call (normalisation guarantees it). */
export interface ChainNode {
  kind: "chain";
  steps: Node[];
}
/** A group on the wire. */
export interface GroupNode {
  kind: "group";
  id: string;
  members: Node[];
}
/** A chord on the wire: its header is launched at once, its body when the last member finished. */
export interface ChordNode {
  kind: "chord";
  id: string;
  header: Node[];
  body: Node;
  onError: ChordErrorPolicy;
  /** Sent once with a ChordError when members failed under policy "fail". */
  linkError?: Node[];
}
/** Any canvas on the wire. */
export type Node = CallNode | ChainNode | GroupNode | ChordNode;

/** What apply() needs to build handles: the id'd tree with each call's signature. */
export type Plan =
  | { kind: "task"; id: string; task: string; signature?: AnySignature }
  | { kind: "chain"; first: Plan; last: Plan }
  | { kind: "group"; id: string; members: Plan[] }
  | { kind: "chord"; id: string; header: Plan[]; body: Plan };

/** The result of {@link compile}. */
export interface Compiled {
  node: Node;
  plan: Plan;
  /** Whether any chord is inside (then the chord bucket must exist before sending). */
  hasChord: boolean;
}

// The working tree: wire fields plus what never travels (signatures, the user's call, its id).
type N = CallN | ChainN | GroupN | ChordN;
interface CallN {
  kind: "call";
  id?: string;
  userId?: string;
  task: string;
  args?: unknown;
  immutable?: true;
  options: WireOptions;
  link: N[];
  linkError: N[];
  sig?: AnySignature;
  src: Call;
}
interface ChainN {
  kind: "chain";
  steps: N[];
}
interface GroupN {
  kind: "group";
  id?: string;
  userId?: string;
  members: N[];
}
interface ChordN {
  kind: "chord";
  id?: string;
  userId?: string;
  header: N[];
  body: N;
  onError: ChordErrorPolicy;
  linkError: N[];
}

/**
 * Compiles `canvas` under id `rootId`. Throws ProtocolError for a shape that cannot run (a chord
 * member ending in a group, a task id used twice, an id too long) and InvalidArgumentsError for
 * known arguments their schema refuses (asynchronous schemas resolve the returned promise).
 */
export function compile(canvas: Canvas, rootId: string): Compiled | Promise<Compiled> {
  const n = normalise(canvas);
  checkTails(n);
  const seen = new Set<string>();
  assign(n, rootId, seen);
  const pending: { task: string; check: Validation<unknown> | Promise<Validation<unknown>> }[] = [];
  collectChecks(n, false, pending);
  const done = (): Compiled => ({ node: toWire(n), plan: toPlan(n), hasChord: containsChord(n) });
  const firstFailure = (results: { task: string; check: Validation<unknown> }[]) => {
    const bad = results.find((r) => !r.check.ok);
    if (bad) throw new InvalidArgumentsError(bad.task, (bad.check as { issues: SchemaIssue[] }).issues);
  };
  if (pending.some((p) => p.check instanceof Promise)) {
    return Promise.all(pending.map(async (p) => ({ task: p.task, check: await p.check }))).then((r) => {
      firstFailure(r);
      return done();
    });
  }
  firstFailure(pending as { task: string; check: Validation<unknown> }[]);
  return done();
}

/**
 * Wire form of a callback given to `send()` through `link()`/`linkError()`: calls only (their ids
 * derive from the parent's at send time, so nothing else needs one up front).
 */
export function callbackNode(c: Call): CallNode {
  if (c.link?.length || c.linkError?.length) {
    throw new ProtocolError(`link(): the callback "${c.task}" has callbacks of its own; send the whole canvas with apply() instead`);
  }
  const { id: _id, ...options } = c.options;
  return compact({ kind: "call" as const, task: c.task, args: c.args, immutable: c.immutable, options: Object.keys(options).length ? { ...options } : undefined });
}

function normalise(c: Canvas): N {
  let n: N;
  switch (c.kind) {
    case "call": {
      const { id, ...options } = c.options;
      n = { kind: "call", task: c.task, options: { ...options }, link: [], linkError: [], src: c };
      if (id !== undefined) n.userId = id;
      if (c.args !== undefined) n.args = c.args;
      if (c.immutable) n.immutable = true;
      if (c.signature) n.sig = c.signature;
      break;
    }
    case "chain": {
      if (!c.steps.length) throw new ProtocolError("chain() needs at least one step");
      const steps = c.steps.map(normalise).flatMap((s) => (s.kind === "chain" ? s.steps : [s]));
      // A chain's error callbacks cover every task in it; its link follows its last step.
      for (const s of steps) for (const l of c.linkError ?? []) addLinkError(s, l);
      for (const l of c.link ?? []) addLink(steps[steps.length - 1]!, l);
      return steps.reduceRight((acc, s) => seq(s, acc));
    }
    case "group": {
      n = { kind: "group", members: c.members.map(normalise) };
      if (c.options?.id !== undefined) n.userId = c.options.id;
      for (const m of n.members) {
        for (const l of c.linkError ?? []) addLinkError(m, l);
        for (const l of c.link ?? []) addLink(m, l);
      }
      return n;
    }
    case "chord": {
      const header = normalise(c.header);
      if (header.kind !== "group") throw new ProtocolError("chord() header must be a group");
      n = { kind: "chord", header: header.members, body: normalise(c.body), onError: c.options?.onError ?? "fail", linkError: [] };
      if (c.options?.id !== undefined) n.userId = c.options.id;
      else if (header.userId !== undefined) n.userId = header.userId;
      for (const l of c.linkError ?? []) addLinkError(n, l);
      for (const l of c.link ?? []) addLink(n, l);
      return n;
    }
    default:
      throw new ProtocolError(`not a canvas: kind ${JSON.stringify((c as { kind?: unknown }).kind)}`);
  }
  for (const l of c.link ?? []) addLink(n, l);
  for (const l of c.linkError ?? []) addLinkError(n, l);
  return n;
}

/** `a` then `b`: the shape every chain folds into (only calls precede the last step). */
function seq(a: N, b: N): N {
  switch (a.kind) {
    case "call":
      return { kind: "chain", steps: [a, ...(b.kind === "chain" ? b.steps : [b])] };
    case "chain": {
      const last = seq(a.steps[a.steps.length - 1]!, b);
      return { kind: "chain", steps: [...a.steps.slice(0, -1), ...(last.kind === "chain" ? last.steps : [last])] };
    }
    case "group": {
      // Celery's upgrade: a group followed by a step is a chord.
      const c: ChordN = { kind: "chord", header: a.members, body: b, onError: "fail", linkError: [] };
      if (a.userId !== undefined) c.userId = a.userId;
      return c;
    }
    case "chord":
      return { ...a, body: seq(a.body, b) };
  }
}

function addLink(n: N, l: Canvas): void {
  switch (n.kind) {
    case "call":
      n.link.push(normalise(l));
      return;
    case "chain":
      return addLink(n.steps[n.steps.length - 1]!, l);
    case "group":
      return n.members.forEach((m) => addLink(m, l));
    case "chord":
      return addLink(n.body, l);
  }
}

function addLinkError(n: N, l: Canvas): void {
  switch (n.kind) {
    case "call":
      n.linkError.push(normalise(l));
      return;
    case "chain":
      return n.steps.forEach((s) => addLinkError(s, l));
    case "group":
      return n.members.forEach((m) => addLinkError(m, l));
    case "chord":
      n.linkError.push(normalise(l));
      return addLinkError(n.body, l);
  }
}

/** What finishes a canvas: one task, or a group (which has no single last task). */
function tailKind(n: N): "task" | "group" {
  switch (n.kind) {
    case "call":
      return "task";
    case "chain":
      return tailKind(n.steps[n.steps.length - 1]!);
    case "group":
      return "group";
    case "chord":
      return tailKind(n.body);
  }
}

function checkTails(n: N): void {
  switch (n.kind) {
    case "call":
      n.link.forEach(checkTails);
      n.linkError.forEach(checkTails);
      return;
    case "chain":
      return n.steps.forEach(checkTails);
    case "group":
      return n.members.forEach(checkTails);
    case "chord":
      n.header.forEach((m, i) => {
        if (tailKind(m) === "group") {
          throw new ProtocolError(`chord header member ${i} ends in a group: a chord counts one result per member; end it with a chord (chord(group, collect)) or list those tasks in the header itself`);
        }
        checkTails(m);
      });
      checkTails(n.body);
      n.linkError.forEach(checkTails);
  }
}

function assign(n: N, prefix: string, seen: Set<string>): void {
  const claim = (id: string) => {
    assertTaskId(id);
    if (seen.has(id)) throw new ProtocolError(`task id "${id}" is used twice in this canvas: ids must be unique (they are the dedupe keys)`);
    seen.add(id);
    return id;
  };
  switch (n.kind) {
    case "call": {
      const id = claim(n.userId ?? prefix);
      n.id = id;
      n.link.forEach((l, k) => assign(l, `${id}.l${k}`, seen));
      n.linkError.forEach((l, k) => assign(l, `${id}.e${k}`, seen));
      return;
    }
    case "chain":
      return n.steps.forEach((s, k) => assign(s, `${prefix}.${k}`, seen));
    case "group": {
      const id = n.userId ?? prefix;
      assertTaskId(id);
      n.id = id;
      return n.members.forEach((m, j) => assign(m, `${id}.${j}`, seen));
    }
    case "chord": {
      const id = claim(n.userId ?? prefix);
      n.id = id;
      n.header.forEach((m, j) => assign(m, `${id}.${j}`, seen));
      assign(n.body, `${id}.cb`, seen);
      n.linkError.forEach((l, k) => assign(l, `${id}.e${k}`, seen));
    }
  }
}

/** Checks each call whose arguments are known: it has no input (first position) or is immutable. */
function collectChecks(n: N, hasInput: boolean, out: { task: string; check: Validation<unknown> | Promise<Validation<unknown>> }[]): void {
  switch (n.kind) {
    case "call":
      if ((!hasInput || n.immutable) && n.sig && !isValidated(n.src)) out.push({ task: n.task, check: validate(n.sig.args, n.args) });
      n.link.forEach((l) => collectChecks(l, true, out));
      n.linkError.forEach((l) => collectChecks(l, true, out));
      return;
    case "chain":
      return n.steps.forEach((s, k) => collectChecks(s, k === 0 ? hasInput : true, out));
    case "group":
      return n.members.forEach((m) => collectChecks(m, hasInput, out));
    case "chord":
      n.header.forEach((m) => collectChecks(m, hasInput, out));
      collectChecks(n.body, true, out);
      n.linkError.forEach((l) => collectChecks(l, true, out));
  }
}

function containsChord(n: N): boolean {
  switch (n.kind) {
    case "call":
      return n.link.some(containsChord) || n.linkError.some(containsChord);
    case "chain":
      return n.steps.some(containsChord);
    case "group":
      return n.members.some(containsChord);
    case "chord":
      return true;
  }
}

function toWire(n: N): Node {
  switch (n.kind) {
    case "call": {
      const out: CallNode = { kind: "call", id: n.id!, task: n.task };
      if (n.args !== undefined) out.args = n.args;
      if (n.immutable) out.immutable = true;
      const options = compact(n.options);
      if (Object.keys(options).length) out.options = options;
      if (n.link.length) out.link = n.link.map(toWire);
      if (n.linkError.length) out.linkError = n.linkError.map(toWire);
      return out;
    }
    case "chain":
      return { kind: "chain", steps: n.steps.map(toWire) };
    case "group":
      return { kind: "group", id: n.id!, members: n.members.map(toWire) };
    case "chord": {
      const out: ChordNode = { kind: "chord", id: n.id!, header: n.header.map(toWire), body: toWire(n.body), onError: n.onError };
      if (n.linkError.length) out.linkError = n.linkError.map(toWire);
      return out;
    }
  }
}

function toPlan(n: N): Plan {
  switch (n.kind) {
    case "call":
      return n.sig ? { kind: "task", id: n.id!, task: n.task, signature: n.sig } : { kind: "task", id: n.id!, task: n.task };
    case "chain":
      return { kind: "chain", first: toPlan(n.steps[0]!), last: toPlan(n.steps[n.steps.length - 1]!) };
    case "group":
      return { kind: "group", id: n.id!, members: n.members.map(toPlan) };
    case "chord":
      return { kind: "chord", id: n.id!, header: n.header.map(toPlan), body: toPlan(n.body) };
  }
}

/** The calls that finish `node` (one, or one per member of a final group). */
export function tails(node: Node): (CallNode & { id: string })[] {
  switch (node.kind) {
    case "call":
      return [node as CallNode & { id: string }];
    case "chain":
      return tails(node.steps[node.steps.length - 1]!);
    case "group":
      return node.members.flatMap(tails);
    case "chord":
      return tails(node.body);
  }
}
