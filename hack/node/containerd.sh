#!/usr/bin/env bash
# In the node guest: containerd (Debian's 1.6) with the shipped
# integration/containerd/config.toml turned to a systemd node (the `buntime`
# handler with `SystemdCgroup = true`), and containers run through the runc
# v2 shim with buntime-runc and the shim's SystemdCgroup option (what the
# handler sets; ctr's --runc-systemd-cgroup): each lives in its systemd scope;
# run, exit codes, exec, pause/resume, metrics, kill and delete; nothing left.
set -euo pipefail
cd "$(dirname "$0")/../.."
. hack/node/guest-lib.sh
sed -e 's/SystemdCgroup = false/SystemdCgroup = true/' integration/containerd/config.toml \
  >/etc/containerd/config.toml
grep -q 'SystemdCgroup = true' /etc/containerd/config.toml || fail "config.toml: no SystemdCgroup"
systemctl restart containerd
wait_for 30 ctr version >/dev/null || fail "containerd did not come back"
dump=$(containerd config dump)
expect_match "$dump" 'runtimes\.buntime\.options\]' "containerd loads the buntime handler"
expect_match "$dump" 'BinaryName = "/usr/local/bin/buntime-runc"' "the handler's BinaryName"
expect_match "$(sed -n '/runtimes\.buntime\.options\]/,/^$/p' <<<"$dump")" 'SystemdCgroup = true' \
  "the handler's SystemdCgroup"

work=$(mktemp -d)
C=(ctr -n buntime-node)
cleanup() {
  for c in $("${C[@]}" containers ls -q 2>/dev/null); do
    "${C[@]}" task kill -s KILL "$c" >/dev/null 2>&1 || true
    "${C[@]}" task delete -f "$c" >/dev/null 2>&1 || true
    "${C[@]}" containers delete "$c" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
rootfs=$(busybox_rootfs "$work/bb")
python3 integration/containerd/make-oci-archive.py "$rootfs" localhost/busybox:node "$work/img.tar" sh
"${C[@]}" images import "$work/img.tar" >/dev/null
img=localhost/busybox:node
run=("${C[@]}" run --runc-binary /usr/local/bin/buntime-runc --runc-systemd-cgroup)

expect_eq "$("${run[@]}" --rm --cgroup system.slice:buntime-node:once "$img" once sh -c 'echo hello')" \
  hello "run: output"
rc=0
"${run[@]}" --rm --cgroup system.slice:buntime-node:exit3 "$img" exit3 sh -c 'exit 3' || rc=$?
expect_eq "$rc" 3 "run: exit code"

"${run[@]}" -d --cgroup system.slice:buntime-node:c1 "$img" c1 sleep 1000 >/dev/null
wait_for 20 sh -c "${C[*]} task ls | grep -q '^c1 .*RUNNING'" || fail "c1 not running"
pid=$("${C[@]}" task ls | awk '$1 == "c1" { print $2 }')
cg=$(cgroup_of "$pid")
unit=buntime-node-c1.scope
expect_eq "$cg" "/system.slice/$unit" "the init is in its systemd scope"
expect_eq "$(systemctl show -P ActiveState "$unit")" active "systemd runs $unit"
sup=$(pgrep -f "supervise c1" | head -n1 || true)
[ -n "$sup" ] || fail "no supervisor for c1"
expect_eq "$(cgroup_of "$sup")" "$cg" "the supervisor is charged to the scope"

expect_eq "$("${C[@]}" task exec --exec-id e1 c1 sh -c 'echo in-exec')" in-exec "exec: output"
"${C[@]}" task exec -d --exec-id e2 c1 sleep 1001
wait_for 20 pgrep -f "^sleep 1001" >/dev/null || fail "exec -d: no sleep 1001"
expect_eq "$(cgroup_of "$(pgrep -f '^sleep 1001' | head -n1)")" "$cg" "exec: the process joins the scope"

"${C[@]}" task pause c1
expect_match "$("${C[@]}" task ls | awk '$1 == "c1"')" PAUSED "pause: status"
expect_eq "$(cat "/sys/fs/cgroup$cg/cgroup.freeze")" 1 "pause: the scope is frozen"
"${C[@]}" task resume c1
expect_match "$("${C[@]}" task ls | awk '$1 == "c1"')" RUNNING "resume: status"

metrics=$("${C[@]}" task metrics c1)
expect_match "$metrics" 'pids\.current +[1-9]' "metrics: pids"

"${C[@]}" task kill -s KILL c1
wait_for 20 sh -c "${C[*]} task ls | grep -q '^c1 .*STOPPED'" || fail "c1 not stopped"
"${C[@]}" task delete c1 >/dev/null
"${C[@]}" containers delete c1
wait_for 20 unit_gone "$unit" "${cg#/}" || fail "$unit left behind"
echo "ok: kill and delete: $unit gone"
pgrep -f "supervise c1" >/dev/null && fail "supervisor of c1 left behind"
echo "ok: no supervisor left"
