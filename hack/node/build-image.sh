#!/usr/bin/env bash
# Builds the node guest (a Debian 12 with systemd as PID 1 and pure cgroup
# v2; see hack/node/README.md) into the cache, unless it is there:
#   $node_image/vmlinux     uncompressed kernel (PVH entry: ~3 s less a boot under TCG)
#   $node_image/initrd.img  small initramfs (virtio, ext4, 9p)
#   $node_image/root.ext4.zst  4 GB ext4 root, zstd-compressed (~300 MB)
# No loop devices or mounts: mmdebstrap into a directory, mkfs.ext4 -d.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
if [ -s "$node_image/root.ext4.zst" ] && [ -s "$node_image/vmlinux" ] && [ -s "$node_image/initrd.img" ]; then
  exit 0
fi
bash "$node_repo/hack/node/install-host-deps.sh"
mkdir -p "$node_dir"
# Older images (another package list) are not needed any more.
find "$node_dir" -mindepth 1 -maxdepth 1 ! -name "$node_key" -exec rm -rf {} +
work=$node_image.tmp
rm -rf "$work" && mkdir -p "$work"
trap 'rm -rf "$work/root" "$work/root.ext4"' EXIT
packages=$(grep -v '^#' "$node_repo/hack/node/packages" | xargs | tr ' ' ',')
mirror=http://deb.debian.org/debian
echo "node: building the guest (mmdebstrap, ~2 min)" >&2
mmdebstrap --variant=apt --mode=root --format=directory \
  --aptopt='APT::Install-Recommends "false"' \
  --include="$packages" \
  --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" && echo MODULES=list >"$1/etc/initramfs-tools/conf.d/buntime-node"' \
  --customize-hook='printf "%s\n" virtio_pci virtio_blk ext4 9p 9pnet_virtio >>"$1/etc/initramfs-tools/modules"' \
  --customize-hook='chroot "$1" update-initramfs -u -k all' \
  --customize-hook='echo buntime-node >"$1/etc/hostname"; : >"$1/etc/fstab"; echo "root:buntime" | chroot "$1" chpasswd' \
  --customize-hook="install -m 0755 '$node_repo/hack/node/guest-runner.sh' \"\$1/usr/local/sbin/buntime-node-run\"" \
  --customize-hook='printf "%s\n" "[Unit]" "Description=buntime node: run the host command" "ConditionKernelCommandLine=buntime.node=1" "[Service]" "Type=simple" "ExecStart=/usr/local/sbin/buntime-node-run" "[Install]" "WantedBy=multi-user.target" >"$1/etc/systemd/system/buntime-node.service"; chroot "$1" systemctl enable buntime-node.service' \
  --customize-hook='chroot "$1" systemctl mask apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_reap.service fstrim.timer' \
  --customize-hook='rm -rf "$1/var/cache/apt/archives/"*.deb "$1/var/lib/apt/lists/"*' \
  bookworm "$work/root" \
  "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
  "deb http://deb.debian.org/debian-security bookworm-security main"
kernel=$(ls "$work/root"/boot/vmlinuz-* | sort -V | tail -n1)
cp "$(ls "$work/root"/boot/initrd.img-* | sort -V | tail -n1)" "$work/initrd.img"
python3 "$node_repo/hack/node/extract-vmlinux.py" "$kernel" "$work/vmlinux"
mkfs.ext4 -q -F -L buntime-node -d "$work/root" "$work/root.ext4" 4G
rm -rf "$work/root"
zstd -q -T0 -3 --rm "$work/root.ext4" -o "$work/root.ext4.zst"
rm -rf "$node_image" && mv "$work" "$node_image"
trap - EXIT
du -sh "$node_image" >&2
