#!/bin/sh
# Fetches Debian's kernel package (not installed: only unpacked) and keeps what the
# kernel nbd VM test needs: the kernel image, the nbd driver, ext4 with the modules it
# needs, fuse + loop (for `--fuse`) and virtio-blk (the power-cut test's data disk),
# listed in load order in modules/order.
# usage: fetch-kernel.sh [DIR]   (default /opt/mindcastle-vm; run as root)
set -eu
dir=${1:-/opt/mindcastle-vm}
if [ -s "$dir/vmlinuz" ] && grep -qx xfs "$dir/modules/order" 2>/dev/null; then exit 0; fi
pkg=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: \(linux-image-[0-9].*\)/\1/p' | head -1)
[ -n "$pkg" ] || { echo "fetch-kernel.sh: no linux-image package found" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download "$pkg" >/dev/null 2>&1) || { echo "fetch-kernel.sh: apt-get download $pkg failed" >&2; exit 1; }
dpkg-deb -x "$work"/*.deb "$work/x"
mkdir -p "$dir/modules"
cp "$work"/x/boot/vmlinuz-* "$dir/vmlinuz"
: > "$dir/modules/order.tmp"
for m in nbd crc16 crc32c_generic mbcache jbd2 ext4 fuse loop virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk libcrc32c xfs; do
    ko=$(find "$work/x/lib/modules" -name "$m.ko*" | head -1)
    [ -n "$ko" ] || { echo "fetch-kernel.sh: no $m module in $pkg" >&2; exit 1; }
    case "$ko" in
    *.xz) xz -dc "$ko" > "$dir/modules/$m.ko" ;;
    *.zst) zstd -dc "$ko" > "$dir/modules/$m.ko" ;;
    *) cp "$ko" "$dir/modules/$m.ko" ;;
    esac
    echo "$m" >> "$dir/modules/order.tmp"
done
mv "$dir/modules/order.tmp" "$dir/modules/order"
echo "fetch-kernel.sh: $pkg in $dir"
