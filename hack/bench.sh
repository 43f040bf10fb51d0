#!/usr/bin/env bash
# `make bench`: every benchmark, each comparing against its baseline in the
# same run (runc and a plain process; socketpair and pipe for the IPC ring).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash hack/install-bun.sh >/dev/null || true
cargo bench --workspace "$@"
