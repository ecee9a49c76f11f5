/** Shared set-up of the repro scripts: one throw-away nats-server, an in-process worker, a client. */
import { NatsServer } from "../../../sdk/testing/mod.ts";
import { connect, type Client } from "../../../sdk/client/mod.ts";
import { Worker, type WorkerOptions } from "../../../sdk/worker/mod.ts";

export interface Rig {
  server: NatsServer;
  client: Client;
  worker: Worker;
  close(): Promise<void>;
}

/** Starts a server, a worker (`setup` implements its tasks) and a client in a fresh namespace. */
export async function rig(setup: (w: Worker) => void, workerOptions: WorkerOptions = {}): Promise<Rig> {
  const server = await NatsServer.start();
  const opts = { servers: [server.url], namespace: `repro${process.pid}x${Date.now().toString(36)}`, file: undefined };
  const worker = new Worker({ ...opts, logLevel: "silent", ...workerOptions });
  setup(worker);
  await worker.start();
  const client = await connect(opts);
  return {
    server,
    client,
    worker,
    async close() {
      await Promise.race([worker.close({ graceMs: 0 }), new Promise((r) => setTimeout(r, 5000))]);
      await Promise.race([client.close(), new Promise((r) => setTimeout(r, 5000))]);
      await server.stop();
    },
  };
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Waits until the tasks stream is empty or `ms` passes; returns the messages left. */
export async function drain(client: Client, ms: number): Promise<number> {
  const jsm = await client.jsm();
  const until = Date.now() + ms;
  for (;;) {
    const left = (await jsm.streams.info(client.names.tasksStream)).state.messages;
    if (left === 0 || Date.now() > until) return left;
    await sleep(100);
  }
}

/** Prints the verdict and sets the exit code: 1 when the bug shows. */
export function verdict(bug: boolean, text: string): void {
  console.log(`${bug ? "BUG" : "OK "}: ${text}`);
  process.exitCode = bug ? 1 : 0;
}
