/**
 * The displaying helpers: tables, charts, and a progress bar that follows task handles live.
 */
import { STATE, type TaskState } from "../protocol/mod.ts";
import type { Client } from "../client/mod.ts";
import { surface, type ShowOptions } from "./display.ts";
import {
  renderChart,
  renderProgress,
  renderTable,
  textChart,
  textProgress,
  textTable,
  type ChartOptions,
  type ProgressState,
  type Row,
  type Series,
  type TableOptions,
} from "./render.ts";

/**
 * Displays rows as a table: HTML in a notebook, aligned text elsewhere. Resolves with nothing, so a
 * notebook does not echo the markup ({@link renderTable} gives the string).
 */
export async function table(rows: readonly Row[], options: TableOptions & ShowOptions = {}): Promise<void> {
  (await surface(options)).show(renderTable(rows, options), textTable(rows, options));
}

/** Displays a line chart: inline SVG in a notebook, sparklines elsewhere ({@link renderChart} gives the string). */
export async function chart(input: Series | readonly Series[] | readonly number[], options: ChartOptions & ShowOptions = {}): Promise<void> {
  (await surface(options)).show(renderChart(input, options), textChart(input, options));
}

/** What a progress bar can follow: anything with an id and a result() (a TaskHandle). */
export interface HandleLike {
  readonly id: string;
  result(options?: { timeout?: number }): Promise<unknown>;
}

/** How one followed task ended. */
export interface Settled {
  id: string;
  /** SUCCESS, FAILURE or REVOKED; PENDING (or the last known state) when waiting timed out. */
  state: TaskState;
  result?: unknown;
  /** The error message when it did not succeed. */
  error?: string;
}

/** Options of {@link progressBar} and {@link watch}. */
export interface ProgressOptions extends ShowOptions {
  label?: string;
  /** Milliseconds to wait for each task; default: until it finishes. */
  timeout?: number;
  /** Redraw at most this often (ms); default 100 in a notebook, 1000 in a terminal. */
  intervalMs?: number;
}

/** Turns a result() rejection into a final state, by the error's name (it may come from another copy of the SDK). */
function failedState(err: unknown): TaskState {
  const name = (err as { name?: string })?.name;
  if (name === "TaskRevokedError") return STATE.revoked;
  if (name === "ResultTimeoutError" || name === "ConnectionClosedError") return STATE.pending;
  return STATE.failure;
}

/** A progress bar on one display: update it by hand, or let {@link progressBar} follow handles. */
export class ProgressBar {
  #state: ProgressState;
  readonly #started = Date.now();
  readonly #show: (html: string, text: string) => void;
  readonly #intervalMs: number;
  #drawnAt = 0;
  #pending: ReturnType<typeof setTimeout> | undefined;
  /** Resolves with every followed task's outcome, in the order given (empty for a manual bar). */
  settled: Promise<Settled[]> = Promise.resolve([]);

  constructor(total: number, show: (html: string, text: string) => void, options: { label?: string; intervalMs?: number } = {}) {
    this.#state = { done: 0, total, failed: 0, ...(options.label !== undefined ? { label: options.label } : {}) };
    this.#show = show;
    this.#intervalMs = options.intervalMs ?? 100;
    this.#draw();
  }

  /** The counts shown now. */
  get state(): Readonly<ProgressState> {
    return { ...this.#state, elapsedMs: Date.now() - this.#started };
  }

  /** Sets the counts; redraws at most every `intervalMs`, and always when everything is done. */
  update(done: number, failed = this.#state.failed ?? 0, total = this.#state.total): void {
    this.#state = { ...this.#state, done, failed, total };
    if (done >= total) return this.#draw();
    const wait = this.#intervalMs - (Date.now() - this.#drawnAt);
    if (wait <= 0) this.#draw();
    else this.#pending ??= setTimeout(() => this.#draw(), wait);
  }

  #draw(): void {
    if (this.#pending !== undefined) clearTimeout(this.#pending);
    this.#pending = undefined;
    this.#drawnAt = Date.now();
    const s = { ...this.#state, elapsedMs: this.#drawnAt - this.#started };
    this.#show(renderProgress(s), textProgress(s));
  }
}

/**
 * Shows a progress bar. Given task handles, it follows their results live and `bar.settled`
 * resolves with how each ended; given `{done, total}`, it shows those counts and `bar.update()`
 * moves it.
 */
export async function progressBar(source: readonly HandleLike[] | { done: number; total: number }, options: ProgressOptions = {}): Promise<ProgressBar> {
  const out = await surface(options, true);
  const intervalMs = options.intervalMs ?? (out.rich ? 100 : 1000);
  const bar = new ProgressBar(Array.isArray(source) ? source.length : (source as { total: number }).total, (html, text) => out.show(html, text), {
    ...(options.label !== undefined ? { label: options.label } : {}),
    intervalMs,
  });
  if (!Array.isArray(source)) {
    const { done } = source as { done: number };
    if (done > 0) bar.update(done);
    return bar;
  }
  const handles = source as readonly HandleLike[];
  let done = 0;
  let failed = 0;
  const wait = options.timeout === undefined ? {} : { timeout: options.timeout };
  bar.settled = Promise.all(handles.map(async (h): Promise<Settled> => {
    let outcome: Settled;
    try {
      outcome = { id: h.id, state: STATE.success, result: await h.result(wait) };
    } catch (err) {
      outcome = { id: h.id, state: failedState(err), error: (err as Error)?.message ?? String(err) };
      failed++;
    }
    done++;
    bar.update(done, failed);
    return outcome;
  }));
  return bar;
}

/**
 * Follows tasks until all have finished, showing a live progress bar, and resolves with how each
 * ended (never rejects for a task's failure). Ids are turned into handles with `client.task(id)`;
 * a task still unfinished at `timeout` is reported with its current state from `client.status()`.
 */
export async function watch(
  client: Pick<Client, "task" | "status">,
  tasks: ReadonlyArray<HandleLike | string>,
  options: ProgressOptions = {},
): Promise<Settled[]> {
  const handles = tasks.map((t) => (typeof t === "string" ? client.task(t) : t));
  const bar = await progressBar(handles, { label: "tasks", ...options });
  const settled = await bar.settled;
  return Promise.all(settled.map(async (s) => (s.state === STATE.pending ? { ...s, state: (await client.status(s.id)).state } : s)));
}
