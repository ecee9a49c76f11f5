/**
 * Files, environment, host identity, memory and signals through node's API, which Node, Deno and
 * Bun all provide. No NATS code here: the one-file HPC callback imports this without evaluating nats.js.
 */
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import process from "node:process";

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
