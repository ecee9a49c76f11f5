/**
 * A stand-in for a remote analysis service (Ensembl's pattern): POST /jobs starts a job and answers
 * 202 with its URL; GET /jobs/<id> answers `{ status: "running" }` until the job is done (after
 * `polls` looks), then `{ status: "done", result }`. Listens on 127.0.0.1 only.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

export interface Service {
  url: string;
  /** Requests seen, for the example's report. */
  stats: { submitted: number; polled: number };
  close(): Promise<void>;
}

export async function startService(options: { polls?: number } = {}): Promise<Service> {
  const polls = options.polls ?? 3;
  const jobs = new Map<string, { input: { sequence: string }; looks: number }>();
  const stats = { submitted: 0, polled: 0 };
  let next = 0;
  const server: Server = createServer((req, res) => {
    const reply = (code: number, body: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(code, { "content-type": "application/json", ...headers });
      res.end(JSON.stringify(body));
    };
    if (req.method === "POST" && req.url === "/jobs") {
      let body = "";
      req.on("data", (c) => (body += c));
      req.on("end", () => {
        const id = `job${++next}`;
        jobs.set(id, { input: JSON.parse(body), looks: 0 });
        stats.submitted++;
        reply(202, { id, url: `/jobs/${id}` }, { location: `/jobs/${id}` });
      });
      return;
    }
    const m = req.method === "GET" ? /^\/jobs\/(\w+)$/.exec(req.url ?? "") : null;
    const job = m ? jobs.get(m[1]!) : undefined;
    if (!job) return reply(404, { error: "no such job" });
    stats.polled++;
    if (++job.looks < polls) return reply(200, { status: "running" });
    const seq = job.input.sequence;
    // "Homologues": one follow-up per distinct base of the sequence.
    reply(200, { status: "done", result: { length: seq.length, homologues: [...new Set(seq)].sort().map((b) => `${b}-${seq.split(b).length - 1}`) } });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    stats,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
