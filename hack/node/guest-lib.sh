# Assertions for the node's engine scripts (podman.sh, containerd.sh).
fail() { echo "FAIL: $*" >&2; exit 1; }
expect_eq() { [ "$1" = "$2" ] || fail "$3: expected '$2', got '$1'"; echo "ok: $3"; }
expect_match() { [[ $1 =~ $2 ]] || fail "$3: '$1' does not match /$2/"; echo "ok: $3"; }
# The cgroup a host pid is in (cgroup v2: one line, 0::PATH).
cgroup_of() { sed -n 's/^0:://p' "/proc/$1/cgroup"; }
# Waits up to $1 s for the command to succeed.
wait_for() {
  local n=$1
  shift
  for _ in $(seq "$n"); do "$@" && return 0; sleep 1; done
  return 1
}
# A busybox root filesystem (hack/make-bundle.sh) in $1/rootfs.
busybox_rootfs() { bash hack/make-bundle.sh "$1" sh >/dev/null && echo "$1/rootfs"; }
unit_gone() { [ "$(systemctl show -P ActiveState "$1")" != active ] && [ ! -d "/sys/fs/cgroup/$2" ]; }
