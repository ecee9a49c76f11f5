/**
 * The runtime edge of the client and worker: sockets, files, environment, host identity and
 * signals. Everything else in sdk/ is runtime-neutral; this file is what Node, Deno and Bun share
 * through their `node:` compatibility (measured: @nats-io/transport-node runs unmodified on all three).
 * @module
 */
import { connect as natsConnect } from "@nats-io/transport-node";
import { credsAuthenticator, nkeyAuthenticator, type ConnectionOptions, type NatsConnection } from "@nats-io/nats-core";
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import process from "node:process";
import type { Settings } from "../settings/mod.ts";

/** Reads a UTF-8 file synchronously (settings are read once at start-up). */
export function readTextFile(path: string): string {
  return readFileSync(path, "utf8");
}

/** The process environment as plain strings. */
export function environment(): Record<string, string | undefined> {
  return process.env;
}

/** Host name and process id, for worker identity. */
export function hostIdentity(): { host: string; pid: number } {
  return { host: hostname(), pid: process.pid };
}

/** Memory of this process in bytes (for worker stats and memory limits). */
export function processMemory(): { rss: number; heapUsed: number } {
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed };
}

/** Calls `handler` on SIGINT/SIGTERM; returns a function that removes the hooks. */
export function onTerminationSignals(handler: (signal: string) => void): () => void {
  const listener = (signal: NodeJS.Signals) => handler(signal);
  process.on("SIGINT", listener);
  process.on("SIGTERM", listener);
  return () => {
    process.off("SIGINT", listener);
    process.off("SIGTERM", listener);
  };
}

/** Translates resolved settings into nats.js connection options. */
export function connectionOptions(settings: Settings): ConnectionOptions {
  const opts: ConnectionOptions = {
    servers: settings.servers && settings.servers.length > 0 ? settings.servers : ["nats://127.0.0.1:4222"],
    timeout: settings.connectTimeout,
    maxReconnectAttempts: settings.reconnect.maxAttempts,
    reconnectTimeWait: settings.reconnect.waitMs,
    reconnectJitter: settings.reconnect.jitterMs,
    // Fail fast when no server answers at start (a clear error beats a silent wait); once
    // connected, reconnects follow the reconnect policy above.
    waitOnFirstConnect: false,
  };
  if (settings.name) opts.name = settings.name;
  if (settings.user !== undefined) opts.user = settings.user;
  if (settings.pass !== undefined) opts.pass = settings.pass;
  if (settings.token !== undefined) opts.token = settings.token;
  const seed = settings.nkeySeed ?? (settings.nkeyFile ? readTextFile(settings.nkeyFile).trim() : undefined);
  if (seed) opts.authenticator = nkeyAuthenticator(new TextEncoder().encode(seed));
  if (settings.credsFile) opts.authenticator = credsAuthenticator(new TextEncoder().encode(readTextFile(settings.credsFile)));
  if (settings.tls) {
    const tls = settings.tls === true ? {} : settings.tls;
    opts.tls = {
      ...(tls.caFile ? { caFile: tls.caFile } : {}),
      ...(tls.certFile ? { certFile: tls.certFile } : {}),
      ...(tls.keyFile ? { keyFile: tls.keyFile } : {}),
      ...(tls.handshakeFirst ? { handshakeFirst: true } : {}),
    };
  }
  return opts;
}

/** Opens a NATS connection for the given settings. */
export function openConnection(settings: Settings): Promise<NatsConnection> {
  return natsConnect(connectionOptions(settings));
}
