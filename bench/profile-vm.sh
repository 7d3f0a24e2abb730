#!/usr/bin/env bash
# Where the guest's CPU goes under 4 KiB random reads at QD32 on ublk and on kernel nbd:
# `perf record -e cpu-clock -a -g` in the qemu guest of bench/frontends-vm.sh (a
# software clock: TCG emulates no PMU), mindcastle unstripped so perf names its
# functions. Prints each front end's IOPS and top symbols by samples.
# With OTHER_BIN, that build runs on ublk too, interleaved with this one over two
# rounds (an A/B within one guest, whose emulated speed drifts between runs).
# usage: bench/profile-vm.sh [SECONDS] [OTHER_BIN]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
other=${2:-}
. bench/vm/boot.sh
cargo build --release -q
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s/^SECS=.*/SECS=$secs/" bench/vm/guest-profile.sh > "$tmp/guest.sh"
extra=()
if [ -n "$other" ]; then cp "$other" "$tmp/other"; extra=("$tmp/other"); fi
NO_STRIP=1 tests/vm/build-initramfs.sh "$vm" target/release/mindcastle "$tmp/initrd.gz" \
    "$tmp/guest.sh" "$(command -v fio)" "$(command -v perf)" bench/vm/guest-lib.sh "${extra[@]}"
boot_guest "$tmp/initrd.gz" "$tmp/console.log"
guest_lines "$tmp/console.log"
