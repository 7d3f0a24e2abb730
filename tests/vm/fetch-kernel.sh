#!/bin/sh
# Fetches Debian's 6.12 kernel package from bookworm-backports (not installed: only
# unpacked; 6.12 builds ublk as a module, Debian 12's 6.1 does not) and keeps what the
# VM tests need: the kernel image and the modules nbd, ublk_drv, ext4, xfs, fuse,
# loop, virtio-blk (the power-cut test's data disk) with every module they depend on
# (from modules.dep), listed in load order in modules/order.
# usage: fetch-kernel.sh [DIR]   (default /opt/mindcastle-vm; run as root)
set -eu
dir=${1:-/opt/mindcastle-vm}
# crc32c_generic first: libcrc32c and ext4 need the crc32c algorithm (a soft dependency,
# not in modules.dep).
want="crc32c_generic nbd ublk_drv ext4 xfs fuse loop virtio_pci virtio_blk"
if [ -s "$dir/vmlinuz" ] && grep -qx ublk_drv "$dir/modules/order" 2>/dev/null; then exit 0; fi
if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        > /etc/apt/sources.list.d/mindcastle-backports.sources
    apt-get update -q >/dev/null
fi
ver=$(apt-cache madison linux-image-amd64 | awk -F'|' '$2 ~ /bpo12/ {gsub(/ /, "", $2); print $2; exit}')
[ -n "$ver" ] || { echo "fetch-kernel.sh: no linux-image-amd64 in bookworm-backports" >&2; exit 1; }
pkg=$(apt-cache depends "linux-image-amd64=$ver" | sed -n 's/.*Depends: \(linux-image-[0-9].*\)/\1/p' | head -1)
[ -n "$pkg" ] || { echo "fetch-kernel.sh: no linux-image package for $ver" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download "$pkg" >/dev/null 2>&1) || { echo "fetch-kernel.sh: apt-get download $pkg failed" >&2; exit 1; }
dpkg-deb -x "$work"/*.deb "$work/x"
mods=$(echo "$work"/x/lib/modules/*)
# The package ships no modules.dep (installing it runs depmod): make one.
depmod -b "$work/x" "$(basename "$mods")"
rm -rf "$dir/modules"
mkdir -p "$dir/modules"
cp "$work"/x/boot/vmlinuz-* "$dir/vmlinuz"
: > "$dir/modules/order"
# add PATH: its dependencies first (depth first), then the module itself, once.
add() {
    name=$(basename "$1"); name=${name%%.ko*}
    grep -qx "$name" "$dir/modules/order" && return 0
    # modules.dep lists a module's dependencies as words on its line.
    # shellcheck disable=SC2013
    for d in $(sed -n "s|^$1: *||p" "$mods/modules.dep"); do add "$d"; done
    name=$(basename "$1"); name=${name%%.ko*}
    case "$1" in
    *.xz) xz -dc "$mods/$1" > "$dir/modules/$name.ko" ;;
    *.zst) zstd -dc "$mods/$1" > "$dir/modules/$name.ko" ;;
    *) cp "$mods/$1" "$dir/modules/$name.ko" ;;
    esac
    echo "$name" >> "$dir/modules/order"
}
for m in $want; do
    rel=$(sed -n "s|^\([^:]*/$m\.ko[^:]*\):.*|\1|p" "$mods/modules.dep" | head -1)
    if [ -z "$rel" ]; then
        grep -q "/$m\.ko" "$mods/modules.builtin" && continue
        echo "fetch-kernel.sh: no $m module in $pkg" >&2; exit 1
    fi
    add "$rel"
done
echo "fetch-kernel.sh: $pkg in $dir ($(tr '\n' ' ' < "$dir/modules/order"))"
