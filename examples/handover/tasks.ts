/**
 * The hand-over tasks: `submit` invokes the service and hands the job URL on; `poll` checks the URL
 * and, while the job runs, asks to be retried later (`ctx.retry({ delay })`: the task waits in
 * JetStream, no worker slot is held); once done it fans out one `annotate` job per homologue and
 * a `notify` job that "emails" (writes a file) when every annotation finished.
 */
import { appendFileSync } from "node:fs";
import { join } from "node:path";
import * as v from "valibot";
import { signature } from "../../sdk/client/mod.ts";
import type { Worker } from "../../sdk/worker/mod.ts";
import { defineWorkflow, registerWorkflowTasks } from "../../sdk/workflow/mod.ts";

const Request = v.object({ service: v.string(), sequence: v.string(), email: v.string() });
const Submitted = v.object({ url: v.string(), email: v.string() });
const Done = v.object({ email: v.string(), length: v.number(), homologues: v.array(v.string()) });
const Annotation = v.object({ email: v.string(), homologue: v.string(), note: v.string() });

export const submit = signature("handover.submit", { args: Request, result: Submitted });
export const poll = signature("handover.poll", { args: Submitted, result: Done, retries: 20 });
export const annotate = signature("handover.annotate", { args: v.object({ email: v.string(), homologue: v.string() }), result: Annotation });
export const notify = signature("handover.notify", { args: v.array(Annotation), result: v.string() });

export const handover = defineWorkflow({
  name: "handover.analysis",
  stages: {
    submit: { task: submit, next: ["poll"] },
    // The follow-up tasks: one per homologue the service found.
    poll: { task: poll, next: ["annotate"], split: (done) => (done as v.InferOutput<typeof Done>).homologues.map((homologue) => ({ email: (done as v.InferOutput<typeof Done>).email, homologue })) },
    annotate: { task: annotate, next: ["notify"] },
    // Once every annotation of the request finished: one notification.
    notify: { task: notify, group: { by: "root" } },
  },
});

/** Implements the tasks on `worker`; notifications are written to `<mailDir>/outbox.txt`. */
export function register(worker: Worker, mailDir: string): Worker {
  worker
    .implement(submit, async ({ service, sequence, email }) => {
      const res = await fetch(`${service}/jobs`, { method: "POST", body: JSON.stringify({ sequence }) });
      if (res.status !== 202) throw new Error(`service refused the job: HTTP ${res.status}`);
      const { url } = (await res.json()) as { url: string };
      return { url: new URL(url, service).href, email };
    })
    .implement(poll, async ({ url, email }, ctx) => {
      const res = await fetch(url);
      if (!res.ok) throw new Error(`polling ${url}: HTTP ${res.status}`);
      const body = (await res.json()) as { status: string; result?: { length: number; homologues: string[] } };
      if (body.status !== "done") ctx.retry({ delay: 0.2, reason: `${url} is ${body.status}` });
      return { email, ...body.result! };
    })
    .implement(annotate, ({ email, homologue }) => ({ email, homologue, note: `annotated ${homologue}` }))
    .implement(notify, (annotations) => {
      const to = annotations[0]!.email;
      const mail = `To: ${to}\nSubject: your analysis is ready\n\n${annotations.map((a) => a.note).sort().join("\n")}\n\n`;
      appendFileSync(join(mailDir, "outbox.txt"), mail);
      return to;
    });
  return registerWorkflowTasks(worker, { workflows: [handover] });
}
