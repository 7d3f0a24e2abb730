#!/usr/bin/env bash
# Attach on the kernel nbd driver against qemu-nbd -c + qcow2 on the same driver, in one
# qemu guest running Debian's kernel (tests/vm; software emulation, so absolute numbers
# are an emulated CPU's: read the ratio). Needs scripts/install-deps.sh.
# usage: bench/attach-vm.sh [MIB_OF_FILES]
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-256}
vm=${MINDCASTLE_VM_DIR:-/opt/mindcastle-vm}
cargo build --release -q
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s/^MIB=.*/MIB=$mib/" bench/vm/guest-bench.sh > "$tmp/guest-bench.sh"
tests/vm/build-initramfs.sh "$vm" target/release/mindcastle "$tmp/initrd.gz" \
    "$tmp/guest-bench.sh" "$(command -v qemu-img)" "$(command -v qemu-nbd)"
timeout 1800 qemu-system-x86_64 -accel "${MINDCASTLE_VM_ACCEL:-tcg}" -cpu max -smp 2 -m 3072 \
    -nographic -no-reboot -kernel "$vm/vmlinuz" -initrd "$tmp/initrd.gz" \
    -append "console=ttyS0 rdinit=/init panic=-1 quiet" < /dev/null > "$tmp/console.log" 2>&1 || true
grep -a "MCVM" "$tmp/console.log" | tr -d '\r'
grep -aq "MCVM-RESULT pass" "$tmp/console.log" || { cat "$tmp/console.log"; exit 1; }
awk '/MCVM bench mindcastle/{for(i=1;i<=NF;i++){split($i,a,"=");m[a[1]]=a[2]}}
     /MCVM bench qemu-nbd/{for(i=1;i<=NF;i++){split($i,a,"=");q[a[1]]=a[2]}}
     END{printf "ratio (mindcastle/qemu-nbd): setup time %.2f, write throughput %.2f\n",
         m["setup_s"]/q["setup_s"], m["write_MBps"]/q["write_MBps"]}' <(tr -d '\r' < "$tmp/console.log")
