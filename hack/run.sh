#!/usr/bin/env bash
# `make run`: a sample script in a sandbox under the default policy.
# `buntime run` (Python and Bun workers) is not built yet; until then this
# runs examples/sandbox-demo.sh in a busybox bundle through buntime-runc,
# which applies the default policy (read-only root, private /tmp, no
# network, no capabilities, seccomp, Landlock).
set -euo pipefail
cd "$(dirname "$0")/.."
runc=target/release/buntime-runc
work=$(mktemp -d /tmp/buntime-run.XXXXXX)
root="$work/state"
id="demo-$$"
cleanup() {
  "$runc" --root "$root" delete --force "$id" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
bash hack/make-bundle.sh "$work/bundle" sh /opt/demo.sh
mkdir -p "$work/bundle/rootfs/opt"
cp examples/sandbox-demo.sh "$work/bundle/rootfs/opt/demo.sh"
echo "== buntime-runc run (default policy) =="
set +e
"$runc" --root "$root" run --bundle "$work/bundle" "$id"
code=$?
set -e
echo "== exit code $code =="
echo "(buntime run with Python/Bun workers is not available yet: see issue 'The main job')"
