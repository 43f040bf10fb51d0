#!/usr/bin/env bash
# `make test-node`: the test suite on a real node, a Debian 12 guest with
# systemd as PID 1 and pure cgroup v2, in one QEMU boot (hack/node/README.md).
# Builds (debug) the binaries and the runtime's test binaries here; the
# guest sees them over 9p. Exit code: the guest suite's, 125 if the guest
# never reported one.
# Env: NODE_TESTS (cargo test targets, default below), NODE_TEST_FILTER (a
# test-name filter for them), NODE_SKIP_ENGINES=1 (no podman/containerd),
# NODE_TIMEOUT (seconds for the suite in the guest, default 1500).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
bash hack/node/install-host-deps.sh
bash hack/node/build-image.sh
tests=${NODE_TESTS:-runtime_lifecycle cgroup_systemd engine_cri}
# --workspace: also the test worker (crates/test-worker), which tests/common
# finds next to the binaries.
cargo build --workspace --bins
args=()
for t in $tests; do args+=(--test "$t"); done
mkdir -p target/node-run
cargo test --no-run "${args[@]}" --message-format=json \
  | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])
' >target/node-run/tests
echo "${NODE_TEST_FILTER:-}" >target/node-run/filter
BUNTIME_NODE_ENV="NODE_SKIP_ENGINES=${NODE_SKIP_ENGINES:-}" \
  exec bash hack/node/boot.sh --timeout "${NODE_TIMEOUT:-1500}" hack/node/suite.sh target/node-run
