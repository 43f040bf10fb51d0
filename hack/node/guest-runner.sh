#!/bin/bash
# Runs in the node guest (installed by build-image.sh as
# /usr/local/sbin/buntime-node-run, started by buntime-node.service when the
# kernel command line has buntime.node=1). Mounts the host's shares (9p):
# `io` (read-write: cmd.sh in, out and rc out) at /node, and `src` (the
# host's checkout, read-only) at the path buntime.src= names, the same path
# as on the host, so the test binaries' compiled-in paths hold. Runs
# /node/cmd.sh once the system is up, writes its output to /node/out and
# its exit code to /node/rc, and powers off.
set -u
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p" | tail -n1; }
src=$(arg buntime.src)
limit=$(arg buntime.timeout)
modprobe -a 9p 9pnet_virtio || true
mkdir -p /node
opts=trans=virtio,version=9p2000.L,msize=1048576,cache=loose
if ! mount -t 9p -o "$opts" io /node; then
  echo "buntime-node: cannot mount the io share" >/dev/console
  systemctl poweroff -ff
fi
{
  # degraded is fine: the command decides what it needs.
  state=$(systemctl is-system-running --wait)
  echo "buntime-node: system $state after $(cut -d' ' -f1 /proc/uptime) s"
  if [ -n "$src" ]; then
    mkdir -p "$src" && mount -t 9p -o "$opts,ro" src "$src"
  fi
} >/node/out 2>&1
cd "${src:-/}"
timeout --kill-after=10 "${limit:-1500}" bash /node/cmd.sh >>/node/out 2>&1 </dev/null
rc=$?
echo "$rc" >/node/rc.tmp && mv /node/rc.tmp /node/rc
sync
systemctl poweroff -ff
