#!/usr/bin/env bash
# Boots the node guest once and runs a command in it:
#   hack/node/boot.sh [--timeout SECONDS] SCRIPT [ARGS...]
# runs `bash SCRIPT ARGS` in the guest (SCRIPT relative to the checkout,
# which the guest sees read-only at the same path, over 9p), streams its
# output, and exits with its exit code: 125 if the guest never reported one
# (no boot, a hang past the timeout). The root disk is a snapshot of the
# cached image: every boot starts pristine and writes nothing back.
# Env: BUNTIME_NODE_DIR (image cache), BUNTIME_NODE_OUT (keep the guest's
# console log and output there), BUNTIME_NODE_ENV (NAME=VALUE ... exported
# in the guest), NODE_MEM (MB, default 2048), NODE_CPUS (2).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
limit=1500
if [ "${1:-}" = --timeout ]; then limit=$2; shift 2; fi
[ $# -ge 1 ] || { echo "usage: hack/node/boot.sh [--timeout S] SCRIPT [ARGS...]" >&2; exit 2; }
bash "$node_repo/hack/node/build-image.sh"
qemu=$(command -v qemu-system-x86_64)

run=$(mktemp -d "${TMPDIR:-/var/tmp}/buntime-node.XXXXXX")
io=$run/io
mkdir -p "$io"
qpid=
tailpid=
cleanup() {
  [ -n "$tailpid" ] && kill "$tailpid" 2>/dev/null || true
  [ -n "$qpid" ] && kill "$qpid" 2>/dev/null || true
  if [ -n "${BUNTIME_NODE_OUT:-}" ]; then
    mkdir -p "$BUNTIME_NODE_OUT" && cp -f "$io"/out "$run"/console.log "$BUNTIME_NODE_OUT"/ 2>/dev/null || true
  fi
  rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

{
  printf 'export BUNTIME_NODE_TEST=1 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n'
  printf 'export NODE_IO=/node %s\n' "${BUNTIME_NODE_ENV:-}"
  printf 'cd %q\n' "$node_repo"
  printf 'exec bash'
  printf ' %q' "$@"
  printf '\n'
} >"$io/cmd.sh"
: >"$io/out"

# Sparse: ~1.1 GB on disk while the guest runs, removed after.
zstd -q -d "$node_image/root.ext4.zst" -o "$run/root.ext4"

echo "node: booting the guest (QEMU TCG; ~30-70 s before the command starts)" >&2
"$qemu" -accel tcg,thread=multi -cpu max -m "${NODE_MEM:-2048}" -smp "${NODE_CPUS:-2}" \
  -nodefaults -display none -no-reboot -nic none \
  -serial "file:$run/console.log" \
  -kernel "$node_image/vmlinux" -initrd "$node_image/initrd.img" \
  -append "root=/dev/vda rw console=ttyS0 systemd.unified_cgroup_hierarchy=1 quiet buntime.node=1 buntime.src=$node_repo buntime.timeout=$limit" \
  -drive "file=$run/root.ext4,format=raw,if=virtio,snapshot=on" \
  -virtfs "local,path=$io,mount_tag=io,security_model=passthrough,id=io" \
  -virtfs "local,path=$node_repo,mount_tag=src,security_model=passthrough,readonly=on,id=src" &
qpid=$!
tail -n +1 -F "$io/out" 2>/dev/null &
tailpid=$!
# The guest enforces `limit` on the command; this bounds boot and shutdown.
deadline=$((SECONDS + limit + 300))
while kill -0 "$qpid" 2>/dev/null; do
  if [ $SECONDS -ge $deadline ]; then
    echo "node: the guest did not finish in $((limit + 300)) s: stopped" >&2
    kill "$qpid" 2>/dev/null || true
    break
  fi
  sleep 1
done
wait "$qpid" 2>/dev/null || true
qpid=
sleep 1
kill "$tailpid" 2>/dev/null || true
wait "$tailpid" 2>/dev/null || true
tailpid=
if [ -s "$io/rc" ]; then
  rc=$(cat "$io/rc")
  echo "node: the guest command exited $rc" >&2
  exit "$rc"
fi
echo "node: the guest never reported an exit code; its console:" >&2
tail -n 40 "$run/console.log" >&2 || true
exit 125
