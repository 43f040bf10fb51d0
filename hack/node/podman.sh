#!/usr/bin/env bash
# In the node guest: podman (Debian's 4.3) with its systemd cgroup manager
# runs containers through buntime-runc (`--runtime buntime`, the shipped
# integration/podman/containers.conf): each container lives in its own
# systemd scope (machine.slice/libpod-ID.scope) with its supervisor; run,
# exit codes, exec, pause/unpause, update, stats, stop and rm; nothing left.
set -euo pipefail
cd "$(dirname "$0")/../.."
. hack/node/guest-lib.sh
expect_eq "$(podman info --format '{{.Host.CgroupManager}}')" systemd "podman's cgroup manager"
expect_eq "$(podman info --format '{{.Host.CgroupsVersion}}')" v2 "podman's cgroups"
work=$(mktemp -d)
trap 'podman rm -af -t 0 >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
rootfs=$(busybox_rootfs "$work/bb")
tar -C "$rootfs" -c . | podman import -q - localhost/busybox:node >/dev/null
img=localhost/busybox:node
P=(podman --runtime buntime)

expect_eq "$("${P[@]}" run --rm --network none "$img" sh -c 'echo hello')" hello "run: output"
rc=0
"${P[@]}" run --rm --network none "$img" sh -c 'exit 3' || rc=$?
expect_eq "$rc" 3 "run: exit code"

id=$("${P[@]}" run -d --name node1 --network none "$img" sleep 1000)
expect_eq "$(podman inspect -f '{{.OCIRuntime}}' node1)" buntime "the container's runtime"
pid=$(podman inspect -f '{{.State.Pid}}' node1)
cg=$(cgroup_of "$pid")
unit=libpod-$id.scope
expect_eq "$cg" "/machine.slice/$unit" "the init is in its systemd scope"
expect_eq "$(systemctl show -P ActiveState "$unit")" active "systemd runs $unit"
sup=$(pgrep -f "supervise $id" | head -n1 || true)
[ -n "$sup" ] || fail "no supervisor for $id"
expect_eq "$(cgroup_of "$sup")" "$cg" "the supervisor is charged to the scope"

expect_eq "$(podman exec node1 sh -c 'echo in-exec')" in-exec "exec: output"
podman exec -d node1 sleep 1001 >/dev/null
wait_for 20 pgrep -f "^sleep 1001" >/dev/null || fail "exec -d: no sleep 1001"
expect_eq "$(cgroup_of "$(pgrep -f '^sleep 1001' | head -n1)")" "$cg" "exec: the process joins the scope"

podman pause node1 >/dev/null
expect_eq "$(podman inspect -f '{{.State.Status}}' node1)" paused "pause: status"
expect_eq "$(cat "/sys/fs/cgroup$cg/cgroup.freeze")" 1 "pause: the scope is frozen"
podman unpause node1 >/dev/null
expect_eq "$(podman inspect -f '{{.State.Status}}' node1)" running "unpause: status"
expect_eq "$(cat "/sys/fs/cgroup$cg/cgroup.freeze")" 0 "unpause: the scope is thawed"

if podman update --help >/dev/null 2>&1; then
  # podman 4.3's update has no --pids-limit.
  podman update --memory 64m --cpu-quota 50000 --cpu-period 100000 node1 >/dev/null
  expect_eq "$(cat "/sys/fs/cgroup$cg/memory.max")" 67108864 "update: memory.max"
  expect_eq "$(cat "/sys/fs/cgroup$cg/cpu.max")" "50000 100000" "update: cpu.max"
fi
pids=$(podman stats --no-stream --format '{{.PIDs}}' node1)
expect_match "$pids" '^[1-9][0-9]*$' "stats: pids"

podman stop -t 2 node1 >/dev/null
podman rm node1 >/dev/null
wait_for 20 unit_gone "$unit" "${cg#/}" || fail "$unit left behind"
echo "ok: stop and rm: $unit gone"
pgrep -f "supervise $id" >/dev/null && fail "supervisor of $id left behind"
echo "ok: no supervisor left"
