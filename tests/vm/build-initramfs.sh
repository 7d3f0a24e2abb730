#!/bin/sh
# Builds the test VM's initramfs: busybox (static), mindcastle and mkfs.ext4 with the
# shared libraries they link, the kernel modules fetch-kernel.sh kept, and the guest
# test scripts.
# usage: build-initramfs.sh VM_DIR MINDCASTLE_BIN OUT.cpio.gz [GUEST_SCRIPT [EXTRA_BIN...]]
# GUEST_SCRIPT (default guest-test.sh here) is what init runs; EXTRA_BINs are copied
# into /bin with their libraries (the benchmark adds qemu-img and qemu-nbd).
set -eu
vm=$1 bin=$2 out=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
guest=${1:-$here/guest-test.sh}
[ $# -gt 0 ] && shift
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev" "$root/tmp" "$root/work"
cp /bin/busybox "$root/bin/busybox"
# NO_STRIP=1 keeps the symbols (for perf in the guest).
if [ -n "${NO_STRIP:-}" ]; then cp "$bin" "$root/bin/mindcastle"; else strip -o "$root/bin/mindcastle" "$bin"; fi
mkfs=$(command -v mkfs.ext4)
cp "$mkfs" "$root/bin/mkfs.ext4"
# util-linux's losetup and fuse3's fusermount3 for the `--fuse` path, ahead of busybox
# in PATH (/usr/local/bin), with the extras the caller names.
mkdir -p "$root/usr/local/bin"
losetup_bin=$(command -v losetup)
fusermount_bin=$(command -v fusermount3)
for extra in "$losetup_bin" "$fusermount_bin" "$@"; do cp "$extra" "$root/usr/local/bin/"; done
# The dynamic loader and libraries, at the paths the binaries ask for.
for lib in $(ldd "$bin" "$mkfs" "$losetup_bin" "$fusermount_bin" "$@" | awk '/=> \//{print $3} /^\t\//{print $1}' | sort -u); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
cp -r "$vm/modules" "$root/modules"
cp "$here/init" "$root/init"
cp "$here/state.sh" "$here/state-ext4.sh" "$here/state-xfs.sh" "$here/power-cut.sh" "$here/fio-loop.sh" "$root/work/"
cp "$guest" "$root/work/guest-test.sh"
chmod +x "$root/init" "$root/work/state.sh" "$root/work/state-ext4.sh" "$root/work/state-xfs.sh"
# PATTERN=FILE gives the caller's bytes (to check them from outside); else random.
if [ -n "${PATTERN:-}" ]; then cp "$PATTERN" "$root/work/pattern"; else head -c 8388608 /dev/urandom > "$root/work/pattern"; fi
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out"
