#!/usr/bin/env bash
# The test suite: unit, policy, IPC and real-container tests. Needs root
# (containers, cgroups, namespaces). Fails if a test leaves anything behind.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if [ "$(id -u)" != 0 ]; then
  echo "hack/test.sh: the container tests need root" >&2
  exit 1
fi

# --workspace: also crates/test-worker's binary, which the container tests
# copy into their bundles (tests/common/mod.rs finds it in target/debug/).
cargo build --workspace
# The workers' own checks: the Python worker's unit tests (system Python,
# the interpreter `buntime run` uses) and the Bun worker's strict type-check
# (typescript from npm, kept under target/).
/usr/bin/python3 workers/python/tests/test_worker.py
/usr/bin/python3 workers/python/tests/test_doorbell.py
TSC_DIR="$PWD/target/bun-tsc" bash workers/bun/check.sh
# third_party: the vendored crates are crates.io + their patch series, and
# their own unit tests pass (seconds once built; the first run builds their
# dev-dependencies into target/third_party).
bash hack/check-patches.sh
bash hack/test-third-party.sh
# Tests that would skip for lack of a tool or kernel feature fail instead.
export BUNTIME_TEST_STRICT=1
cargo test --workspace -- --test-threads=4

# Nothing left behind by the tests: containers, mounts, bundles, cgroups.
leftover=$(grep -c 'buntime-test-' /proc/self/mountinfo || true)
if [ "$leftover" != 0 ]; then
  echo "hack/test.sh: $leftover test mounts left behind" >&2
  grep 'buntime-test-' /proc/self/mountinfo >&2
  exit 1
fi
# `buntime run` bundles on a memory filesystem (src/sandbox/scratch.rs),
# but not those of a run still going on.
for b in /dev/shm/buntime-bundle-run-*; do
  [ -e "$b" ] || continue
  pid=${b#/dev/shm/buntime-bundle-run-}
  pid=${pid%%-*}
  if [ ! -d "/proc/$pid" ]; then
    echo "hack/test.sh: bundle left behind: $b" >&2
    exit 1
  fi
done
for ctl in memory pids freezer; do
  d=/sys/fs/cgroup/$ctl/buntime
  # user-UID: subtrees delegated by `buntime setup-user` (kept; what is
  # inside them must be gone).
  if [ -d "$d" ] && [ -n "$(find "$d" -mindepth 1 -maxdepth 2 -type d ! -name 'user-*' -print -quit)" ]; then
    echo "hack/test.sh: cgroups left under $d:" >&2
    find "$d" -mindepth 1 -maxdepth 2 -type d ! -name 'user-*' >&2
    exit 1
  fi
done
echo "hack/test.sh: nothing left behind"
