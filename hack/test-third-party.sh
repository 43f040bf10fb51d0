#!/usr/bin/env bash
# The vendored crates' own unit tests (third_party/libcgroups,
# third_party/libcontainer: their crates.io release + our patch series, with
# their upstream Cargo.lock and dev-dependencies), so a patch that breaks
# what upstream tests shows up here. hack/test.sh runs it.
#
# Cargo takes a manifest under this repository for a member of its
# workspace even when `exclude`d (the [patch] paths), so each crate is
# tested from a copy outside it (kept between runs, see sync_tree). Build output goes to target/third_party. One test at
# a time: libcontainer's tests fork from the test process, and in parallel
# with other tests that once hung here (seccomp::tests / seccomp_listener).
#
# Tests skipped, each only where it cannot pass for a reason of the host
# and not of the code (the same tests fail on the pristine crates there):
#   libcgroups systemd::dbus_native::dbus::tests::test_dbus_connection_new,
#     ::test_dbus_function_calls, ::test_dbus_function_calls_errors,
#     systemd::manager::tests::test_task_addition and
#     ::test_error_thrown_if_process_never_added_to_cgroup: they talk to a
#     D-Bus session bus (skipped when DBUS_SESSION_BUS_ADDRESS is unset).
#   libcontainer tty::tests::test_setup_console and
#     ::test_verify_ptmx_handle_with_real_pty: they need /dev/ptmx on a
#     devpts mount (skipped when it is not, e.g. a VM whose /dev is tmpfs).
#   libcontainer utils::tests::test_userns_spec_validation: it expects a
#     rootless caller (skipped as root).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
copies="${TMPDIR:-/tmp}/buntime-third-party"
mkdir -p "$copies"

skips_for() {
  case $1 in
  libcgroups)
    if [ -z "${DBUS_SESSION_BUS_ADDRESS:-}" ]; then
      echo "--skip systemd::dbus_native::dbus::tests::test_dbus_connection_new"
      echo "--skip systemd::dbus_native::dbus::tests::test_dbus_function_calls"
      echo "--skip systemd::dbus_native::dbus::tests::test_dbus_function_calls_errors"
      echo "--skip systemd::manager::tests::test_task_addition"
      echo "--skip systemd::manager::tests::test_error_thrown_if_process_never_added_to_cgroup"
    fi
    ;;
  libcontainer)
    if [ "$(stat -f -c %T "$(readlink -f /dev/ptmx)" 2>/dev/null)" != devpts ]; then
      echo "--skip tty::tests::test_setup_console"
      echo "--skip tty::tests::test_verify_ptmx_handle_with_real_pty"
    fi
    if [ "$(id -u)" = 0 ]; then
      echo "--skip utils::tests::test_userns_spec_validation"
    fi
    ;;
  esac
}

# Makes $2 a copy of $1, rewriting only the files whose content differs:
# cargo judges a path crate fresh by mtimes, so an unchanged file keeps its
# copy's mtime (no rebuild) and a changed one gets a new one (rebuild).
sync_tree() {
  local src=$1 dst=$2 f
  mkdir -p "$dst"
  while IFS= read -r f; do
    if ! cmp -s "$src/$f" "$dst/$f"; then
      mkdir -p "$(dirname "$dst/$f")"
      cp "$src/$f" "$dst/$f"
    fi
  done < <(cd "$src" && find . -type f)
  while IFS= read -r f; do
    [ -e "$src/$f" ] || rm -f "$dst/$f"
  done < <(cd "$dst" && find . -type f)
}

for crate in libcgroups libcontainer; do
  sync_tree "third_party/$crate" "$copies/$crate"
  # shellcheck disable=SC2046 # one word per flag and test name
  cargo test --quiet --locked --lib \
    --manifest-path "$copies/$crate/Cargo.toml" \
    --target-dir "$PWD/target/third_party" \
    -- --exact --test-threads=1 $(skips_for "$crate")
done
