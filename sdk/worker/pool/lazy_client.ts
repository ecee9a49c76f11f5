/**
 * `ctx.client` in executors: connected on first use, closed when the executor exits. Connecting is
 * asynchronous while `ctx.client` is not, so until the connection is open `ctx.client` is a stand-in
 * whose promise-returning methods wait for it; plain members (`nc`, `settings`, `names`,
 * `publisher`) and the synchronous methods (`task`, `onProgress`) are available once connected.
 */
import type { Client } from "../../client/mod.ts";

/** Client methods that return promises: the stand-in forwards them once connected. */
const ASYNC_METHODS = new Set([
  "send", "call", "revoke", "status", "getRecord", "waitForRecord", "settleRecord", "ensureTopology", "jsm",
]);

export class LazyClient {
  readonly #options: Record<string, unknown>;
  readonly #given: Client | (() => Client) | undefined;
  #client: Client | undefined;
  #connecting: Promise<Client> | undefined;
  #standIn: Client | undefined;
  #closed = false;

  constructor(options: Record<string, unknown> = {}, given?: Client | (() => Client)) {
    this.#options = options;
    this.#given = given;
  }

  /** What `ctx.client` returns. Starts connecting on first call. */
  get(): Client {
    if (this.#given) return typeof this.#given === "function" ? this.#given() : this.#given;
    if (this.#client) return this.#client;
    void this.connect().catch(() => {});
    this.#standIn ??= this.#makeStandIn();
    return this.#standIn;
  }

  /** Opens the connection once (a failed attempt is retried by the next use). */
  connect(): Promise<Client> {
    if (this.#client) return Promise.resolve(this.#client);
    if (this.#closed) return Promise.reject(new Error("ctx.client is closed: the executor is exiting"));
    this.#connecting ??= (async () => {
      const { connect } = await import("../../client/mod.ts");
      const client = await connect(this.#options as never);
      if (this.#closed) {
        await client.close().catch(() => {});
        throw new Error("ctx.client is closed: the executor is exiting");
      }
      this.#client = client;
      return client;
    })();
    const attempt = this.#connecting;
    attempt.catch(() => {
      if (this.#connecting === attempt) this.#connecting = undefined;
    });
    return attempt;
  }

  #makeStandIn(): Client {
    const target = {};
    return new Proxy(target, {
      get: (_t, prop) => {
        const client = this.#client;
        if (client) {
          const value = Reflect.get(client, prop, client) as unknown;
          return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(client) : value;
        }
        if (typeof prop === "symbol" || prop === "then") return undefined;
        // The executor owns this connection: handlers closing it would break the next task.
        if (prop === "close") return async () => {};
        if (ASYNC_METHODS.has(prop)) {
          return (...args: unknown[]) => this.connect().then((c) => (Reflect.get(c, prop, c) as (...a: unknown[]) => unknown).apply(c, args));
        }
        throw new Error(`ctx.client.${prop} is not available until the executor's client has connected: await one of its async methods first (e.g. \`await ctx.client.ensureTopology()\`)`);
      },
    }) as Client;
  }

  /** Closes the connection if one was opened (the executor is exiting). */
  async close(): Promise<void> {
    this.#closed = true;
    const client = this.#client ?? (await this.#connecting?.catch(() => undefined));
    this.#client = undefined;
    if (client && !this.#given) await client.close().catch(() => {});
  }
}
