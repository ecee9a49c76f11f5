/**
 * Workflows: staged pipelines of tasks, recorded in JetStream and controlled from anywhere.
 * A workflow is a named graph of stages (each a task); objects move through it one job per object
 * per stage, split into many or grouped into one as they go. See docs/workflows.md.
 *
 * @example
 * ```ts
 * import { defineWorkflow, startWorkflow, registerWorkflowTasks, waitForRun } from "celerity/workflow";
 * const wf = defineWorkflow({ name: "scan", stages: { ingest: { task: ingest, next: ["record"] }, record: { task: record } } });
 * registerWorkflowTasks(worker.implement(ingest, ...).implement(record, ...));
 * const { runId } = await startWorkflow(client, wf, [{ id: 1 }, { id: 2 }]);
 * console.log(await waitForRun(client, runId));
 * ```
 * @module
 */
export {
  defineWorkflow,
  loadWorkflow,
  parseWorkflowYaml,
  registeredWorkflow,
  WorkflowSchema,
  type GroupBy,
  type Stage,
  type StageData,
  type StageInput,
  type Workflow,
  type WorkflowData,
  type WorkflowInput,
} from "./definition.ts";
export {
  ADVANCE_TASK,
  cancel,
  FAILED_TASK,
  forget,
  forgetFinished,
  jobs,
  pause,
  registerWorkflowTasks,
  resume,
  retry,
  runs,
  startWorkflow,
  status,
  waitForRun,
  type FailedJob,
  type Forgotten,
  type RunStatus,
  type StageStatus,
  type StartedRun,
  type StartOptions,
  type WorkflowTasksOptions,
  type WorkflowWorker,
} from "./engine.ts";
export { workflowBucket, type GroupRecord, type JobRecord, type JobState, type RunRecord, type RunState } from "./store.ts";
