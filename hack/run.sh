#!/usr/bin/env bash
# `make run`: the showcase script in a sandbox under the default policy,
# plus one allowed host: a local web server started here for the duration
# (the default policy has no network; --allow-net adds this one host).
set -euo pipefail
cd "$(dirname "$0")/.."
buntime=${BUNTIME:-target/release/buntime}
port=8765
/usr/bin/python3 -m http.server "$port" --bind 127.0.0.1 --directory examples >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
echo "== buntime run --allow-net=127.0.0.1:$port examples/showcase.py =="
set +e
"$buntime" run --allow-net="127.0.0.1:$port" examples/showcase.py
code=$?
set -e
echo "== exit code $code =="
echo "== buntime run examples/hello.ts =="
"$buntime" run examples/hello.ts || echo "(Bun missing: bash hack/install-bun.sh)"
