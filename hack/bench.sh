#!/usr/bin/env bash
# `make bench`: every benchmark, each comparing against its baseline in the
# same run (runc and a plain process; socketpair and pipe for the IPC ring).
# docs/performance.md lists each bench's knobs. BENCH_QUICK=1 shortens the
# heavy parts (churn, density, broker, IPC, cold start) for a smoke run;
# variables already set win. DENSITY_N=0 skips the 200-sandbox density run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if [ "${BENCH_QUICK:-}" = 1 ]; then
  export CHURN_N=${CHURN_N:-20} CHURN_RUN_N=${CHURN_RUN_N:-12} CHURN_PAR=${CHURN_PAR:-1,4}
  export DENSITY_N=${DENSITY_N:-20} DENSITY_IDLE_S=${DENSITY_IDLE_S:-1}
  export BROKER_ROUNDS=${BROKER_ROUNDS:-300} COLDSTART_RUNS=${COLDSTART_RUNS:-10}
  export BUNTIME_IPC_BENCH_QUICK=${BUNTIME_IPC_BENCH_QUICK:-1}
fi
bash hack/install-bun.sh >/dev/null || true
# benches/broker.rs runs the test worker (crates/test-worker) in a
# container: cargo bench builds no plain binary of it, so build it first.
cargo build --release -p buntime-test-worker
# Each bench appends its rows of issue 23's table here; printed at the end.
export BENCH_SUMMARY="$PWD/target/bench-summary.jsonl"
mkdir -p target && : >"$BENCH_SUMMARY"
rc=0
cargo bench --workspace "$@" || rc=$?
/usr/bin/python3 hack/bench-summary.py "$BENCH_SUMMARY"
exit "$rc"
