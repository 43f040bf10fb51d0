#!/usr/bin/env bash
# Type-checks the Bun worker (tsc, strict) and syntax-checks it with
# `bun build --no-bundle`. typescript and @types/bun (the version of the
# project's Bun) are installed from the npm registry into $TSC_DIR
# (default /tmp/buntime-bun-tsc), never into the repository.
# Usage: workers/bun/check.sh    Env: BUN (default .build/bun/bun), TSC_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bun=${BUN:-$root/.build/bun/bun}
tsc_dir=${TSC_DIR:-/tmp/buntime-bun-tsc}
[ -x "$bun" ] || { echo "check.sh: no Bun at $bun (hack/install-bun.sh)" >&2; exit 1; }
version=$("$bun" --version)
if [ ! -x "$tsc_dir/node_modules/.bin/tsc" ] || [ ! -d "$tsc_dir/node_modules/@types/bun" ]; then
  mkdir -p "$tsc_dir"
  npm install --prefix "$tsc_dir" --no-audit --no-fund --silent typescript "@types/bun@$version"
fi
cd "$here"
"$tsc_dir/node_modules/.bin/tsc" -p tsconfig.json --typeRoots "$tsc_dir/node_modules/@types"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$bun" build --no-bundle --target=bun --outdir "$out" ./*.ts ../../tests/fixtures/workers/bun_*.ts >/dev/null
echo "workers/bun: tsc (strict) and bun build OK"
