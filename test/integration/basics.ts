/**
 * The part of ./helpers.ts that does not load the Worker: a fresh namespace, a client on the test
 * server, polling. Files that test pieces below the Worker (the priority puller) import this alone.
 */
import type { NatsServer } from "../../sdk/testing/mod.ts";
import { connect, type Client, type ConnectOptions } from "../../sdk/client/mod.ts";

let counter = 0;
/** A namespace no other test uses. */
export function freshNamespace(prefix = "t"): string {
  return `${prefix}${process.pid}x${++counter}${Math.random().toString(36).slice(2, 6)}`;
}

/** Options every test client/worker gets: the test server, a fresh namespace, no settings file. */
export function testOptions(server: NatsServer, namespace: string): ConnectOptions {
  return { servers: [server.url], namespace, file: undefined };
}

/** Connects a client to the test server in `namespace`. */
export function client(server: NatsServer, namespace: string, extra: ConnectOptions = {}): Promise<Client> {
  return connect({ ...testOptions(server, namespace), ...extra });
}

/** Polls `check` until it returns a truthy value or `timeoutMs` passes. */
export async function eventually<T>(check: () => Promise<T> | T, timeoutMs = 10_000, what = "condition"): Promise<NonNullable<T>> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < until) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ""}`);
}
