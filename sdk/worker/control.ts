/**
 * Remote control of a worker, and its entry in the registry of live workers.
 *
 * - Registry: every `lease/3` the worker writes its state to the workers bucket (key = worker id).
 *   The bucket's max age is the lease, so a worker that dies disappears when its lease ends.
 * - Control: every worker listens on `<ns>.control.<verb>`; a request names its destination
 *   (worker ids, hosts or queues; none = all) and each addressed worker replies. The client
 *   gathers replies until its timeout.
 * - Discovery: the worker also answers the NATS services protocol (`$SRV.PING|INFO|STATS`, name
 *   `celerity-worker`), so `nats micro ls` and other standard tooling list it.
 */
import type { NatsConnection, Msg, Subscription } from "@nats-io/nats-core";
import {
  decode,
  encode,
  PROTOCOL_VERSION,
  type ControlReply,
  type ControlRequest,
  type Names,
  type WorkerIdentity,
} from "../protocol/mod.ts";

/** What the control server needs from its worker. */
export interface ControlHost {
  readonly identity: WorkerIdentity;
  /** Queues consumed now (for destination filtering). */
  queueNames(): string[];
  /** The registry entry and the answer to `stats`. */
  snapshot(): Record<string, unknown>;
  /** Runs one verb; throws for unknown verbs or bad arguments. */
  handle(verb: string, args: Record<string, unknown>): Promise<unknown> | unknown;
}

/** The NATS services protocol name workers announce. */
export const SERVICE_NAME = "celerity-worker";
/** Version reported to `$SRV.INFO`. */
export const SERVICE_VERSION = "0.1.0";

/** Serves control requests, the registry heartbeat and service discovery for one worker. */
export class ControlServer {
  readonly #subs: Subscription[] = [];
  #timer: ReturnType<typeof setInterval> | undefined;
  readonly #startedAt = new Date().toISOString();

  constructor(
    private readonly nc: NatsConnection,
    private readonly names: Names,
    private readonly host: ControlHost,
    private readonly publish: (subject: string, data: Uint8Array) => Promise<unknown>,
    private readonly leaseSeconds: number,
  ) {}

  /** Starts listening and beating. */
  async start(): Promise<void> {
    this.#subs.push(this.nc.subscribe(this.names.controlSubject(">"), { callback: (_e, m) => void this.#onControl(m) }));
    const id = this.host.identity.id;
    for (const verb of ["PING", "INFO", "STATS"]) {
      for (const subject of [`$SRV.${verb}`, `$SRV.${verb}.${SERVICE_NAME}`, `$SRV.${verb}.${SERVICE_NAME}.${id}`]) {
        this.#subs.push(this.nc.subscribe(subject, { callback: (_e, m) => this.#onService(verb, m) }));
      }
    }
    await this.beat();
    this.#timer = setInterval(() => void this.beat().catch(() => {}), (this.leaseSeconds * 1000) / 3);
  }

  /** Writes the registry entry now. */
  beat(): Promise<unknown> {
    const entry = { v: PROTOCOL_VERSION, ...this.host.snapshot(), heartbeatAt: Date.now() };
    return this.publish(`$KV.${this.names.workersBucket}.${this.host.identity.id}`, encode(entry));
  }

  /** Stops listening and beating. */
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    if (!this.nc.isClosed()) for (const s of this.#subs) s.unsubscribe();
  }

  #addressed(req: ControlRequest): boolean {
    const d = req.destination;
    if (!d) return true;
    const me = this.host.identity;
    if (d.workers?.length && !d.workers.includes(me.id)) return false;
    if (d.hosts?.length && !d.hosts.includes(me.host)) return false;
    if (d.queues?.length && !d.queues.some((q) => this.host.queueNames().includes(q))) return false;
    return true;
  }

  async #onControl(m: Msg): Promise<void> {
    let req: ControlRequest;
    try {
      req = decode(m.data) as ControlRequest;
      if (typeof req?.verb !== "string") return;
    } catch {
      return; // not a control request: nothing to answer
    }
    if (!this.#addressed(req) || !m.reply) return;
    const reply: ControlReply = { v: PROTOCOL_VERSION, worker: this.host.identity.id, ok: true };
    try {
      reply.result = await this.host.handle(req.verb, req.args ?? {});
    } catch (err) {
      reply.ok = false;
      reply.error = (err as Error).message;
    }
    if (!this.nc.isClosed()) m.respond(encode(reply));
  }

  #onService(verb: string, m: Msg): void {
    const me = this.host.identity;
    const base = { name: SERVICE_NAME, id: me.id, version: SERVICE_VERSION, metadata: { host: me.host, pid: String(me.pid), queues: this.host.queueNames().join(",") } };
    let body: Record<string, unknown>;
    if (verb === "PING") body = { type: "io.nats.micro.v1.ping_response", ...base };
    else if (verb === "INFO") {
      body = {
        type: "io.nats.micro.v1.info_response",
        ...base,
        description: "Celerity worker: control by request on <ns>.control.<verb>",
        endpoints: [{ name: "control", subject: this.names.controlSubject(">"), metadata: null }],
      };
    } else {
      body = { type: "io.nats.micro.v1.stats_response", ...base, started: this.#startedAt, endpoints: [], data: this.host.snapshot() };
    }
    m.respond(JSON.stringify(body));
  }
}
