#!/usr/bin/env bash
# The host packages the node guest needs: QEMU and mmdebstrap. Idempotent.
# A qemu-utils from bookworm-backports conflicts with bookworm's
# qemu-system-x86: then qemu-system-x86 comes from backports too.
set -euo pipefail
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
want=()
have mmdebstrap || want+=(mmdebstrap)
have qemu-system-x86 || want+=(qemu-system-x86)
have e2fsprogs || want+=(e2fsprogs)
have zstd || want+=(zstd)
[ ${#want[@]} -eq 0 ] && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
target=()
if [[ " ${want[*]} " == *" qemu-system-x86 "* ]] \
  && dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null | grep -q bpo; then
  target=(-t bookworm-backports)
fi
echo "node: apt-get install ${want[*]} ${target[*]}" >&2
apt-get install -y -qq --no-install-recommends "${target[@]}" "${want[@]}" >/dev/null
