#!/usr/bin/env bash
# The node test suite, run inside the guest by `make test-node`
# (hack/node/test.sh boots it): the runtime's test binaries (listed one per
# line in RUN_DIR/tests, with a name filter in RUN_DIR/filter), then podman
# and containerd with the systemd cgroup manager. Every section runs; the
# exit code is 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
run_dir=${1:-target/node-run}
failed=()
section() {
  local name=$1
  shift
  echo "=== node: $name"
  local t0=$SECONDS
  if "$@"; then
    echo "=== node: $name passed ($((SECONDS - t0)) s)"
  else
    echo "=== node: $name FAILED ($((SECONDS - t0)) s)"
    failed+=("$name")
  fi
}
# The guest must be the node it claims to be.
node_is_systemd_v2() {
  [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] && [ -d /run/systemd/system ] \
    && [ "$(ps -p 1 -o comm=)" = systemd ]
}
section "systemd and pure cgroup v2" node_is_systemd_v2
bash hack/node/install-guest.sh || failed+=("install")

run_tests() {
  local rc=0 t filter
  filter=$(cat "$run_dir/filter" 2>/dev/null || true)
  while read -r t; do
    [ -n "$t" ] || continue
    echo "--- $(basename "$t") $filter"
    # shellcheck disable=SC2086
    BUNTIME_TEST_STRICT=1 "$t" $filter --test-threads=2 || rc=1
  done <"$run_dir/tests"
  return $rc
}
[ -s "$run_dir/tests" ] && section "runtime tests (cargo test binaries)" run_tests
[ "${NODE_SKIP_ENGINES:-}" = 1 ] || {
  section "podman, systemd cgroup manager" bash hack/node/podman.sh
  section "containerd, SystemdCgroup = true" bash hack/node/containerd.sh
}
if [ ${#failed[@]} -gt 0 ]; then
  echo "=== node: FAILED: ${failed[*]}"
  exit 1
fi
echo "=== node: all passed"
