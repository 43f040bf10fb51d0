#!/usr/bin/env bash
# Measures what a buntime sandbox costs beyond its container: the
# supervisor's memory (RSS, PSS, peak) and CPU, at idle and under proxy
# load, for the RuntimeClass's overhead.podFixed
# (integration/kubernetes/README.md has the numbers).
#
# A busybox container runs under the built-in engine default (network
# mode `pod`, the bundle's own network namespace): a web server on the
# container's loopback and, for the load phase, a client fetching from it
# through the container's allow-list proxy as fast as it can (every
# request a proxy decision, an audit line, a relayed connection).
#
# Usage (root): hack/measure-overhead.sh [SECONDS]   (default 10 per phase)
# Env: RUNC=path to buntime-runc (default target/debug/buntime-runc;
#      use a release build for numbers: cargo build --release).
set -euo pipefail
secs=${1:-10}
here=$(cd "$(dirname "$0")/.." && pwd)
runc=${RUNC:-$here/target/debug/buntime-runc}
work=$(mktemp -d /tmp/buntime-overhead.XXXXXX)
root=$work/state
etc=$work/etc          # no default.json: the built-in engine default
mkdir -p "$etc"
id=overhead-$$
cleanup() {
  BUNTIME_ETC=$etc "$runc" --root "$root" delete --force "$id" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# The container serves a 64 KiB file on 127.0.0.1:8080 and, when
# /tmp/load exists, fetches it in a loop through its proxy ($HTTP_PROXY).
script='mkdir -p /tmp/www; head -c 65536 /dev/zero > /tmp/www/f;
httpd -p 127.0.0.1:8080 -h /tmp/www;
while :; do
  if [ -e /tmp/load ]; then wget -q -O /dev/null http://127.0.0.1:8080/f && echo ok >> /tmp/count;
  else sleep 0.2; fi
done'
"$here/hack/make-bundle.sh" "$work/bundle" sh -c "$script" >/dev/null
BUNTIME_ETC=$etc "$runc" --root "$root" run --detach --bundle "$work/bundle" "$id" </dev/null >/dev/null

sup=$(BUNTIME_ETC=$etc "$runc" --root "$root" state "$id" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["annotations"].get("buntime.dev/supervisor-pid",""))' 2>/dev/null || true)
if [ -z "$sup" ]; then
  # The supervisor is the runtime's child named buntime-runc whose
  # command line says "supervise"; found through the container's state dir.
  sup=$(pgrep -f "supervise.*$id" | head -1 || true)
fi
[ -n "$sup" ] || { echo "measure-overhead: no supervisor found for $id" >&2; exit 1; }
init=$(BUNTIME_ETC=$etc "$runc" --root "$root" state "$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
tick=$(getconf CLK_TCK)

cpu() { awk '{print $14 + $15}' "/proc/$sup/stat"; }        # utime+stime, ticks
kib() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$sup/status"; }
pss() { awk '$1 == "Pss:" {print $2}' "/proc/$sup/smaps_rollup"; }
phase() {
  local name=$1 c0 c1 threads
  c0=$(cpu); sleep "$secs"; c1=$(cpu)
  threads=$(awk '$1 == "Threads:" {print $2}' "/proc/$sup/status")
  awk -v n="$name" -v d=$((c1 - c0)) -v t="$tick" -v s="$secs" \
      -v rss="$(kib VmRSS)" -v pss="$(pss)" -v hwm="$(kib VmHWM)" -v th="$threads" 'BEGIN {
    printf "%-5s supervisor CPU %6.1f millicores   RSS %6.1f MiB   PSS %6.1f MiB   peak RSS %6.1f MiB   threads %s\n",
      n, 1000 * d / t / s, rss / 1024, pss / 1024, hwm / 1024, th }'
}

echo "supervisor pid $sup, container init $init, $secs s a phase, $(nproc) CPUs"
sleep 2
phase idle
nsenter -t "$init" -m touch /tmp/load
phase load
n=$(nsenter -t "$init" -m sh -c 'wc -l < /tmp/count' 2>/dev/null || echo 0)
echo "load: $n requests through the proxy in $secs s ($((n / secs))/s)"
