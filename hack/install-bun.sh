#!/usr/bin/env bash
# Install a pinned Bun (for the IPC benchmark's Bun client) under .build/bun,
# from npm. Idempotent: does nothing if that version is already there.
# Prints the path of the bun binary.
set -euo pipefail

BUN_VERSION="${BUN_VERSION:-1.4.5}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="$ROOT/.build/bun"
PKG="@oven/bun-linux-x64"
BIN="$PREFIX/node_modules/$PKG/bin/bun"

if [[ "$(uname -m)" != "x86_64" ]]; then
    echo "install-bun: only x86_64 is supported here (got $(uname -m)); skipping" >&2
    exit 0
fi

if [[ ! -x "$BIN" ]] || [[ "$("$BIN" --version 2>/dev/null)" != "$BUN_VERSION" ]]; then
    if ! command -v npm >/dev/null; then
        echo "install-bun: npm not found (apt-get install npm); skipping Bun" >&2
        exit 0
    fi
    mkdir -p "$PREFIX"
    npm install --prefix "$PREFIX" --no-audit --no-fund --silent "$PKG@$BUN_VERSION" >&2
fi
ln -sf "$BIN" "$PREFIX/bun"
echo "$BIN"
