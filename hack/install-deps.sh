#!/usr/bin/env bash
# Installs what building and testing buntime needs. Idempotent: installs
# only what is missing, so a second run does nothing.
set -euo pipefail

# Debian packages: libseccomp for libcontainer, busybox-static for test
# bundles, runc for the benchmark's comparison, procps for `ps`, iproute2
# and python3 for tests and helper scripts, gcc and libc6-dev for a static
# test program, npm for Bun (and, with pip, for the proxy test that installs
# packages through it), chromium for the debug UI's browser test; the CRI
# test (tests/engine_cri.rs) needs the CNI plugins (bridge, host-local,
# loopback) and protoc (the k8s-cri crate compiles the CRI protos).
packages=(libseccomp-dev pkg-config busybox-static runc procps iproute2 python3 python3-pip npm gcc libc6-dev podman containerd containernetworking-plugins protobuf-compiler python3-yaml openssl curl util-linux chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm may come with the machine's own Node.js rather than from Debian.
if command -v npm >/dev/null 2>&1; then
  missing=("${missing[@]/npm}")
fi
want=()
for p in "${missing[@]}"; do [ -n "$p" ] && want+=("$p"); done
if [ ${#want[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${want[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { echo "install-deps: cargo not found" >&2; exit 1; }

# Bun from npm, project-local (for the Bun worker and benchmarks).
bash "$(dirname "$0")/install-bun.sh" >/dev/null || echo "install-deps: Bun not installed" >&2

# Offline Kubernetes schema check and YAML lint (PyPI), project-local.
pylib="$(dirname "$0")/../.build/pylib"
if [ ! -d "$pylib/kubernetes_validate" ] || [ ! -d "$pylib/yamllint" ]; then
  python3 -m pip install -q --disable-pip-version-check --target "$pylib" \
    yamllint==1.38.0 kubernetes-validate==1.37.0 >&2 \
    || echo "install-deps: yamllint/kubernetes-validate not installed" >&2
fi
