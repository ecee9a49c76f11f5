# shellcheck shell=bash
# Celerity as a setup of ../shared/peers/run.sh, measured in the same run as BullMQ and Celery:
#
#   cd ../shared/peers
#   EXTRA_SUITE=/path/to/celerity/scripts/peers-suite.sh SETUPS="bullmq-redis celerity" ./run.sh --no-install
#
# run.sh sources this file and calls suite_celerity with its helpers (start_group, free_port, step,
# meta, log, stop_setup_groups) and knobs (N, LAT_N, LAT_WARMUP, COLD_RUNS, REPS, IDLE_REPS,
# IDLE_SETTLE, WORK, HERE). The suite starts its own nats-server with JetStream (file storage
# under $WORK) on a free loopback port, runs Celerity's bench subcommands against it (each prints
# JSON lines in the peers' format on stdout, which step appends to the results) and stops the
# server's process group. Same workloads and boundaries as the BullMQ suite; see docs/benchmarks.md.

CELERITY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Runs scripts/bench.ts from the project (tsx and the SDK's dependencies resolve from there): for
# waiting and building only.
celerity_bench() {
  (cd "$CELERITY_ROOT" && node --import tsx scripts/bench.ts "$@")
}

# Runs a measuring step with the bundled bench (.bench/build/bench.mjs, written by `build`): the
# tsx loader slows down even code it did not compile, so no measured process runs under it.
celerity_measure() {
  (cd "$CELERITY_ROOT" && node .bench/build/bench.mjs "$@")
}

suite_celerity() {
  local port url pgid r c
  port=$(free_port)
  mkdir -p "$WORK/nats"
  start_group nats-server -a 127.0.0.1 -p "$port" -js -sd "$WORK/nats"
  pgid=$LAST_PGID
  url="nats://127.0.0.1:$port"
  # start_group's setsid execs nats-server, so the group id is its pid: the drain and enqueue records
  # then carry the server's CPU per task.
  CURRENT_SETUP="celerity | NATS JetStream"
  if ! celerity_bench wait --servers "$url" 2>>"$LOG"; then
    log "nats-server did not start on $url"
    meta kind=failed setup=celerity reason="nats-server did not start"
    stop_setup_groups "$pgid"
    return 0
  fi
  log "nats-server $(nats-server --version 2>/dev/null | grep -o '[0-9][0-9.]*' | head -1) on 127.0.0.1:$port (JetStream, file storage in $WORK/nats)"
  # dist/, the worker and the one-shot bundles, once (the measured processes run plain JavaScript).
  if ! celerity_bench build >>"$LOG" 2>&1; then
    log "celerity: build failed (see $LOG)"
    meta kind=failed setup=celerity reason="build failed"
    stop_setup_groups "$pgid"
    return 0
  fi
  for r in $(seq 1 "$REPS"); do
    log "celerity rep $r/$REPS: drain c=1 (after the send() loop), drain c=50 (after 1000 in flight), send() 100 in flight, latency"
    step celerity_measure drain --servers "$url" --server-pid "$pgid" --concurrency 1 --n "$N" --rep "$r" || true
    step celerity_measure drain --servers "$url" --server-pid "$pgid" --concurrency 50 --n "$N" --rep "$r" || true
    step celerity_measure enqueue --servers "$url" --server-pid "$pgid" --mode p100 --n "$N" --rep "$r" || true
    step celerity_measure latency --servers "$url" --n "$LAT_N" --warmup "$LAT_WARMUP" --rep "$r" || true
  done
  # One-shot processes, timed by the peers' own lib/proc.js; the subcommand checks afterwards that
  # the tasks stream holds exactly COLD_RUNS+1 tasks per variant (a failed check fails the step).
  log "celerity cold start x$COLD_RUNS per variant"
  step celerity_measure coldstart --servers "$url" --runs "$COLD_RUNS" --warmup 1 --proc "$HERE/lib/proc.js" || true
  log "celerity idle memory"
  for r in $(seq 1 "$IDLE_REPS"); do
    for c in 1 50; do
      step celerity_measure idlemem --servers "$url" --concurrency "$c" --settle "$IDLE_SETTLE" --rep "$r" --proc "$HERE/lib/proc.js" || true
    done
  done
  stop_setup_groups "$pgid"
}
