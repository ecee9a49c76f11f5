/**
 * Where a task goes: the call's `queue`, else the signature's, else the routes (settings and a
 * code function), else the first segment of its name (when `routeByFirstSegment`), else `default`.
 */
import { assertToken, CelerityError, DEFAULT_QUEUE } from "../protocol/mod.ts";
import type { AnySignature } from "../signatures/mod.ts";
import type { Settings } from "../settings/mod.ts";

/** A route in code: return a queue name, or undefined to let the next rule decide. */
export type RouteFunction = (task: string, args: unknown) => string | undefined;

/** Which rule chose the queue. */
export type RouteSource = "call" | "signature" | "route" | "function" | "first-segment" | "default";

/** A routing decision. */
export interface Route {
  queue: string;
  source: RouteSource;
}

/** A task was sent to a queue nothing serves or declares. */
export class UnknownQueueError extends CelerityError {
  override name = "UnknownQueueError";
  constructor(readonly task: string, readonly queue: string) {
    super(
      `task "${task}" would go to queue "${queue}", which no worker serves and no setting declares: ` +
        `start a worker for it (celerity worker -Q ${queue}), declare it (settings: queues: { ${queue}: {} }), or route the task elsewhere`,
    );
  }
}

interface GlobRoute {
  pattern: string;
  regex: RegExp;
  queue: string;
}

/** Resolves queues for task names; built once per client from its settings. */
export class Router {
  readonly #exact = new Map<string, string>();
  readonly #globs: GlobRoute[] = [];
  readonly #declared = new Set<string>([DEFAULT_QUEUE]);

  constructor(
    private readonly settings: Pick<Settings, "routes" | "routeByFirstSegment" | "queues">,
    private readonly fn?: RouteFunction,
  ) {
    for (const [pattern, queue] of Object.entries(settings.routes ?? {})) {
      this.#declared.add(queue);
      if (pattern.includes("*")) {
        // Celery's routes use fnmatch: `*` matches any run of characters, dots included.
        const source = pattern.split("*").map((p) => p.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*");
        this.#globs.push({ pattern, regex: new RegExp(`^${source}$`), queue });
      } else {
        this.#exact.set(pattern, queue);
      }
    }
    // The most specific glob (most literal characters) wins.
    this.#globs.sort((a, b) => b.pattern.replace(/\*/g, "").length - a.pattern.replace(/\*/g, "").length);
    for (const queue of Object.keys(settings.queues ?? {})) this.#declared.add(queue);
  }

  /** The queue of task `name` sent with `sig` (optional), `args` and an optional per-call queue. */
  route(name: string, sig?: AnySignature, callQueue?: string, args?: unknown): Route {
    if (callQueue !== undefined) return { queue: callQueue, source: "call" };
    if (sig?.options.queue !== undefined) return { queue: sig.options.queue, source: "signature" };
    const exact = this.#exact.get(name);
    if (exact !== undefined) return { queue: exact, source: "route" };
    for (const g of this.#globs) if (g.regex.test(name)) return { queue: g.queue, source: "route" };
    if (this.fn) {
      const q = this.fn(name, args);
      if (q !== undefined) {
        assertToken("queue", q);
        return { queue: q, source: "function" };
      }
    }
    if (this.settings.routeByFirstSegment && name.includes(".")) return { queue: name.slice(0, name.indexOf(".")), source: "first-segment" };
    return { queue: DEFAULT_QUEUE, source: "default" };
  }

  /**
   * Whether sending to `route` needs proof that someone serves the queue. A signature is a shared
   * contract (its worker computes the same queue) and routes and declarations are an operator's
   * word; a string typed at a call site, or a name-derived queue without a signature, is checked.
   */
  needsCheck(route: Route, typed: boolean): boolean {
    if (this.#declared.has(route.queue)) return false;
    if (route.source === "call") return true;
    return route.source === "first-segment" && !typed;
  }

  /**
   * Declares `queue` as an operator's word (as settings' `queues` do): sends to it are not checked
   * for a consumer. Beat declares its schedules' queues: a schedule is configuration, and its
   * ticks must wait in the stream for workers that start later, as Celery's and BullMQ's do.
   */
  declare(queue: string): void {
    assertToken("queue", queue);
    this.#declared.add(queue);
  }

  /** Queues named by settings (declared queues and route targets) plus `default`. */
  get declared(): ReadonlySet<string> {
    return this.#declared;
  }
}
