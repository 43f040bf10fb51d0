#!/usr/bin/env bash
# `make conformance RUNTIME_TOOLS=DIR`: the OCI runtime-tools validation suite
# (DIR: a checkout of github.com/opencontainers/runtime-tools) against
# buntime-runc and runc on this host, one program at a time, with a
# grant-everything node default for buntime-runc (so what is measured is the
# runtime, not a policy). Prints a table of each program's TAP counts for
# both runtimes and a total. Not part of `make test`: it needs the suite, Go
# and runc, and takes several minutes.
#
# Environment:
#   RUNTIME_TOOLS  the suite's checkout (required); built here with Go
#                  (vendored modules, no network) when its programs are missing
#   RUNTIME        buntime-runc to measure (default target/release/buntime-runc)
#   RUNC           the reference runtime (default: runc on PATH; RUNC=none skips it)
#   PROGRAMS       programs to run, e.g. "create kill" (default: all of validation/)
#   POLICY         the node default policy file for buntime-runc (default: the
#                  grant-everything policy written below)
#   PROGRAM_TIMEOUT  seconds one program may take (default 120)
#   OUT            where each program's TAP output and stderr are kept
#                  (default target/conformance)
#
# Each runtime gets its own state root, bundles go to a private TMPDIR, and
# everything (containers, state, bundles, the suite's cgroups) is removed on
# exit, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "hack/conformance.sh: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "the suite creates containers: run as root"
[ -n "${RUNTIME_TOOLS:-}" ] || die "set RUNTIME_TOOLS to a runtime-tools checkout (see docs/conformance.md)"
RT=$(cd "$RUNTIME_TOOLS" && pwd) || die "RUNTIME_TOOLS=$RUNTIME_TOOLS: no such directory"
[ -d "$RT/validation" ] || die "$RT has no validation/: not a runtime-tools checkout"
RUNTIME=$(readlink -f "${RUNTIME:-target/release/buntime-runc}")
[ -x "$RUNTIME" ] || die "no buntime-runc at $RUNTIME (cargo build --release --bin buntime-runc --bin buntime-supervisor, or RUNTIME=path)"
RUNC=${RUNC:-$(command -v runc || true)}
[ -n "$RUNC" ] || die "no runc on PATH (RUNC=path, or RUNC=none to measure buntime-runc alone)"
PROGRAM_TIMEOUT=${PROGRAM_TIMEOUT:-120}
OUT=${OUT:-target/conformance}

# --- the suite's programs ---------------------------------------------------
all_programs() {
  local d
  for d in "$RT"/validation/*/; do
    d=$(basename "$d")
    [ "$d" = util ] || echo "$d"
  done
}
PROGRAMS=${PROGRAMS:-$(all_programs | tr '\n' ' ')}

build_suite() {
  local missing=0 p
  [ -x "$RT/runtimetest" ] || missing=1
  for p in $PROGRAMS; do
    [ -f "$RT/validation/$p/$p.go" ] || die "no program validation/$p in $RT"
    [ -x "$RT/validation/$p/$p.t" ] || missing=1
  done
  [ "$missing" = 0 ] && return 0
  command -v go >/dev/null || die "the suite is not built and there is no Go (apt-get install -t bookworm-backports golang-go)"
  echo "building runtime-tools' runtimetest and validation programs (vendored modules, no network)..."
  GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local \
    make -C "$RT" runtimetest validation-executables >/dev/null
}
build_suite

# --- a private world, removed on exit ---------------------------------------
WORK=$(mktemp -d /tmp/buntime-conformance.XXXXXX)
REF=$(basename "$RUNC") # the reference runtime's name in the table
RUNTIMES="buntime-runc"
[ "$RUNC" = none ] || RUNTIMES="$RUNTIMES $REF"
mkdir -p "$WORK/bin" "$WORK/etc" "$WORK/tmp"
# Like /tmp itself: a container's mapped root (user namespace tests) must be
# able to walk to its bundle.
chmod 0755 "$WORK"
chmod 1777 "$WORK/tmp"
CGROUP_NAMES="cgrouptest testdir"
cgroups_before=$(ls -d /sys/fs/cgroup/*/cgrouptest /sys/fs/cgroup/*/testdir /sys/fs/cgroup/cgrouptest /sys/fs/cgroup/testdir 2>/dev/null || true)

delete_all() { # wrapper state-dir
  local w=$1 s=$2 c
  [ -d "$s" ] || return 0
  for c in "$s"/*/; do
    [ -d "$c" ] || continue
    c=$(basename "$c")
    "$w" delete --force "$c" >/dev/null 2>&1 || true
  done
}

rmdir_cgroups() {
  local n d
  for n in $CGROUP_NAMES; do
    for d in /sys/fs/cgroup/*/"$n" /sys/fs/cgroup/"$n"; do
      [ -d "$d" ] || continue
      # Only what this run created: an admin's cgroup of the same name stays.
      grep -qxF "$d" <<<"$cgroups_before" && continue
      find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
  done
}

cleanup() {
  set +e
  for r in $RUNTIMES; do delete_all "$WORK/bin/$r" "$WORK/state-$r"; done
  # Mounts a program left under its bundles (propagation tests), deepest first.
  awk -v w="$WORK" '$5 == w || index($5, w "/") == 1 { print $5 }' /proc/self/mountinfo |
    sort -r | while read -r m; do umount -l "$m"; done
  rm -rf --one-file-system "$WORK"
  rmdir_cgroups
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The suite runs `$RUNTIME <command> ...` with no way to pass global flags:
# wrappers give each runtime its own state root (and buntime-runc its node
# configuration), so nothing else on the host is seen or touched.
cat >"$WORK/bin/buntime-runc" <<EOF
#!/bin/sh
exec env -u TMPDIR BUNTIME_ETC="$WORK/etc" "$RUNTIME" --root "$WORK/state-buntime-runc" "\$@"
EOF
chmod +x "$WORK/bin/buntime-runc"
if [ "$RUNC" != none ]; then
  cat >"$WORK/bin/$REF" <<EOF
#!/bin/sh
exec env -u TMPDIR "$RUNC" --root "$WORK/state-$REF" "\$@"
EOF
  chmod +x "$WORK/bin/$REF"
fi

# The node default for buntime-runc: grant everything, keep the bundle's
# isolation (docs/conformance.md). `bundle` network mode and `landlock: off`
# are issue 20's; a build that does not know them gets the nearest older
# form (`host`: in OCI mode the bundle's namespace stays; Landlock best
# effort over rules that allow everything).
write_policy() { # netmode landlock(or "")
  local ll=""
  [ -n "$2" ] && ll=",
  \"landlock\": \"$2\""
  cat <<EOF
{
  "version": 1,
  "description": "Conformance: grant everything; the bundle decides.",
  "filesystem": { "read": ["/"], "write": ["/"], "exec": ["/"] },
  "network": { "mode": "$1" },
  "env": { "pass": ["*"] }$ll
}
EOF
}
if [ -n "${POLICY:-}" ]; then
  cp "$POLICY" "$WORK/etc/default.json"
else
  write_policy bundle off >"$WORK/etc/default.json"
  checker=$(dirname "$RUNTIME")/buntime
  if [ -x "$checker" ] && ! "$checker" policy check "$WORK/etc/default.json" >/dev/null 2>&1; then
    write_policy host "" >"$WORK/etc/default.json"
    "$checker" policy check "$WORK/etc/default.json" >/dev/null 2>&1 ||
      die "$checker refuses the grant-everything policy: $("$checker" policy check "$WORK/etc/default.json" 2>&1)"
    echo "note: this build knows neither network mode \"bundle\" nor landlock \"off\": using \"host\", Landlock best effort"
  fi
fi

# --- run --------------------------------------------------------------------
rm -rf "$OUT"
mkdir -p "$OUT"
cp "$WORK/etc/default.json" "$OUT/policy.json"

# TAP counts of one output: "ok notok skip plan diag" (top-level lines only;
# a runtimetest run inside a container prints its own TAP at top level too,
# and some programs print two streams one after the other: plans add up).
# diag: YAML diagnostics carrying an "error" key.
tap_counts() {
  awk '
    /^ok / { if (tolower($0) ~ /# skip/) s++; else o++ }
    /^not ok / { if (tolower($0) ~ /# todo/) o++; else n++ }
    /^1\.\.[0-9]+/ { sub(/^1\.\./, ""); p += $0 + 0 }
    /^    "error": / { d++ }
    END { printf "%d %d %d %d %d\n", o, n, s, p, d }' "$1"
}

# FAIL: non-zero exit, a `not ok`, fewer tests than planned, or no test
# passed but an "error" diagnostic was printed (how the hook programs report
# a failed lifecycle). SKIP: only `# SKIP` results. PASS otherwise, including
# `1..0` without an error: the hook programs print no test when all went well.
verdict() { # rc ok notok skip plan diag
  if [ "$1" != 0 ] || [ "$3" != 0 ] || [ $(($2 + $3 + $4)) -lt "$5" ] ||
    { [ "$2" = 0 ] && [ "$6" != 0 ]; }; then
    echo FAIL
  elif [ "$2" = 0 ] && [ "$4" != 0 ]; then
    echo SKIP
  else
    echo PASS
  fi
}

run_one() { # runtime program
  local r=$1 p=$2 dir="$OUT/$1" rc=0 c v
  mkdir -p "$dir"
  (cd "$RT" && TMPDIR="$WORK/tmp" RUNTIME="$WORK/bin/$r" \
    timeout --kill-after=10 "$PROGRAM_TIMEOUT" "validation/$p/$p.t") \
    >"$dir/$p.tap" 2>"$dir/$p.err" </dev/null || rc=$?
  # A program killed mid-way leaves its container: remove it before the next.
  delete_all "$WORK/bin/$r" "$WORK/state-$r"
  rmdir_cgroups
  read -r -a c < <(tap_counts "$dir/$p.tap")
  v=$(verdict "$rc" "${c[@]}")
  [ "$rc" = 124 ] && v="FAIL(timeout)"
  echo "$p $r $v $rc ${c[*]}" >>"$OUT/results"
  printf '%-6s %3d/%-3d %3d skip' "$v" "${c[0]}" "$((c[0] + c[1]))" "${c[2]}"
}

started=$(date +%s)
n=0
printf '%-36s' "program"
for r in $RUNTIMES; do printf ' | %-24s' "$r"; done
echo
printf '%-36s' ""
for r in $RUNTIMES; do printf ' | %-24s' "verdict ok/run skipped"; done
echo
for p in $PROGRAMS; do
  n=$((n + 1))
  printf '%-36s' "$p"
  for r in $RUNTIMES; do
    printf ' | '
    printf '%-24s' "$(run_one "$r" "$p"; true)"
  done
  echo
done
# run_one runs in a subshell (for the table's columns): count from the results file.
echo
for r in $RUNTIMES; do
  pass=$(awk -v r="$r" '$2 == r && $3 == "PASS"' "$OUT/results" | wc -l)
  skip=$(awk -v r="$r" '$2 == r && $3 == "SKIP"' "$OUT/results" | wc -l)
  printf 'total %-14s %2d of %d programs pass (%d more skip everything)\n' "$r" "$pass" "$n" "$skip"
done
echo "took $(($(date +%s) - started))s; TAP output and stderr per program in $OUT/"
