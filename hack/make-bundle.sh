#!/usr/bin/env bash
# Makes a busybox-static OCI bundle: DIR/rootfs with busybox and its applets,
# DIR/config.json from `buntime-runc spec`, adjusted to run ARGS (default: sh).
# Usage: hack/make-bundle.sh DIR [ARGS...]
# Env: SECCOMP=1 adds a tiny observable seccomp profile; TERMINAL=1 sets
# process.terminal; HOSTROOT=1 makes the rootfs of the host's runtime
# directories (/usr, /lib, /lib64, /bin, /sbin, /etc) bound read-only
# instead of busybox, so host programs (python3, curl) run inside.
set -euo pipefail
dir=${1:?usage: make-bundle.sh DIR [ARGS...]}
shift
# Debian's busybox-static installs a statically linked /bin/busybox.
busybox=${BUSYBOX:-/bin/busybox}
[ -x "$busybox" ] || { echo "make-bundle: $busybox missing (apt-get install busybox-static)" >&2; exit 1; }
mkdir -p "$dir/rootfs/bin" "$dir/rootfs/proc" "$dir/rootfs/sys" "$dir/rootfs/dev" \
  "$dir/rootfs/tmp" "$dir/rootfs/etc" "$dir/rootfs/root"
if [ "${HOSTROOT:-}" = 1 ]; then
  # Merged-/usr hosts have /bin -> usr/bin etc.: mirror those links; real
  # directories are bind-mounted by config.json.
  rm -rf "$dir/rootfs/bin"
  for d in bin lib lib64 sbin usr; do
    if [ -L "/$d" ]; then ln -sfn "$(readlink "/$d")" "$dir/rootfs/$d"
    elif [ -d "/$d" ]; then mkdir -p "$dir/rootfs/$d"; fi
  done
else
  cp "$busybox" "$dir/rootfs/bin/busybox"
  for applet in $("$dir/rootfs/bin/busybox" --list); do
    [ -e "$dir/rootfs/bin/$applet" ] || ln -s busybox "$dir/rootfs/bin/$applet"
  done
fi
if [ "${HOSTROOT:-}" != 1 ]; then
  echo "root:x:0:0:root:/root:/bin/sh" > "$dir/rootfs/etc/passwd"
  echo "root:x:0:" > "$dir/rootfs/etc/group"
fi
args_json='["sh"]'
if [ $# -gt 0 ]; then
  args_json=$(/usr/bin/python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "$@")
fi
/usr/bin/python3 - "$dir/config.json" "$args_json" <<'PY'
import json, sys
path, args = sys.argv[1], json.loads(sys.argv[2])
spec = {
  "ociVersion": "1.0.2",
  "process": {
    "terminal": False,
    "user": {"uid": 0, "gid": 0},
    "args": args,
    "env": ["PATH=/bin", "TERM=xterm"],
    "cwd": "/",
    "capabilities": {k: ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
                     for k in ("bounding", "effective", "permitted")},
    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
    "noNewPrivileges": True,
  },
  "root": {"path": "rootfs", "readonly": True},
  "hostname": "buntime-test",
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs",
     "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "nodev", "mode=1777"]},
  ],
  "linux": {
    "resources": {"devices": [{"allow": False, "access": "rwm"}]},
    "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
    "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
    "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
  },
}
import os
if os.environ.get("SECCOMP") == "1":
    # A small profile that tests can observe: mkdir fails with EPERM.
    spec["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }
if os.environ.get("HOSTROOT") == "1":
    for d in ("/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc"):
        if os.path.lexists(d) and not os.path.islink(d):
            spec["mounts"].append({"destination": d, "type": "bind", "source": d,
                                   "options": ["rbind", "ro", "nosuid", "nodev"]})
    spec["process"]["env"] = ["PATH=/usr/local/bin:/usr/bin:/bin", "TERM=xterm", "HOME=/tmp"]
if os.environ.get("TERMINAL") == "1":
    spec["process"]["terminal"] = True
with open(path, "w") as f:
    json.dump(spec, f, indent=2)
PY
