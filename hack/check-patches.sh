#!/usr/bin/env bash
# The vendored crates in third_party/ are their crates.io release plus the
# patch series in third_party/patches/<crate>/, nothing else: applies the
# series in order (no fuzz) to a pristine copy and compares the trees.
# The pristine sources come from cargo's registry (~/.cargo/registry/src,
# or the downloaded .crate); when neither is there, cargo fetches the crate.
# Besides the series, the vendored copy only adds LICENSE (youki's, not in
# the .crate) and drops cargo's own bookkeeping files.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
VERSION=0.7.0
CRATES="libcgroups libcontainer"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The crates.io source of $1-$VERSION, unpacked into $work/pristine/$1.
pristine() {
  local crate=$1 src
  src=$(ls -d "$HOME"/.cargo/registry/src/*/"$crate-$VERSION" 2>/dev/null | head -n1 || true)
  if [ -z "$src" ]; then
    local archive
    archive=$(ls "$HOME"/.cargo/registry/cache/*/"$crate-$VERSION.crate" 2>/dev/null | head -n1 || true)
    if [ -z "$archive" ]; then
      # Not downloaded yet (the [patch] means cargo never needed it).
      mkdir -p "$work/fetch/src"
      printf '[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\n%s = { version = "=%s", default-features = false }\n' \
        "$crate" "$VERSION" >"$work/fetch/Cargo.toml"
      echo 'fn main() {}' >"$work/fetch/src/main.rs"
      cargo fetch --quiet --manifest-path "$work/fetch/Cargo.toml"
      archive=$(ls "$HOME"/.cargo/registry/cache/*/"$crate-$VERSION.crate" | head -n1)
    fi
    mkdir -p "$work/unpacked"
    tar -xzf "$archive" -C "$work/unpacked"
    src="$work/unpacked/$crate-$VERSION"
  fi
  mkdir -p "$work/pristine"
  cp -R "$src" "$work/pristine/$crate"
}

status=0
for crate in $CRATES; do
  pristine "$crate"
  tree="$work/pristine/$crate"
  for p in third_party/patches/"$crate"/*.patch; do
    if ! patch --quiet --forward --fuzz=0 --no-backup-if-mismatch -p1 -d "$tree" <"$p" >"$work/patch.log" 2>&1; then
      echo "check-patches: $p does not apply to $crate $VERSION + the patches before it:" >&2
      cat "$work/patch.log" >&2
      exit 1
    fi
  done
  # cargo's bookkeeping in the registry copy, never vendored.
  rm -f "$tree/.cargo-ok" "$tree/.cargo_vcs_info.json" "$tree/Cargo.toml.orig"
  if ! diff -ru --exclude=target --exclude=LICENSE "$tree" "third_party/$crate" >"$work/diff"; then
    echo "check-patches: third_party/$crate differs from $crate $VERSION + third_party/patches/$crate:" >&2
    cat "$work/diff" >&2
    status=1
  elif [ ! -f "third_party/$crate/LICENSE" ]; then
    echo "check-patches: third_party/$crate/LICENSE is missing" >&2
    status=1
  else
    echo "check-patches: $crate = $VERSION + $(ls third_party/patches/"$crate"/*.patch | wc -l) patches"
  fi
done
exit $status
