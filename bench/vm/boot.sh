#!/usr/bin/env bash
# Sourced by the VM benches: boot_guest INITRD CONSOLE_LOG boots Debian's kernel
# (tests/vm/fetch-kernel.sh) under qemu with INITRD, 2 vCPUs and 4 GiB, and writes the
# serial console to CONSOLE_LOG; guest_lines CONSOLE_LOG prints its MCVM lines and
# fails unless the guest passed. TCG by default; MINDCASTLE_VM_ACCEL=kvm where nested
# KVM works (it refuses some of -cpu max's MSRs; the host CPU model works there).
vm=${MINDCASTLE_VM_DIR:-/opt/mindcastle-vm}
boot_guest() {
    local cpu=max
    [ "${MINDCASTLE_VM_ACCEL:-tcg}" = kvm ] && cpu=host
    timeout 3600 qemu-system-x86_64 -accel "${MINDCASTLE_VM_ACCEL:-tcg}" -cpu "$cpu" -smp 2 \
        -m 4096 -nographic -no-reboot -kernel "$vm/vmlinuz" -initrd "$1" \
        -append "console=ttyS0 rdinit=/init panic=-1 quiet" < /dev/null > "$2" 2>&1 || true
}
# The console's first line may carry a terminal escape before MCVM.
guest_lines() {
    tr -d '\r' < "$1" | sed 's/^.*MCVM /MCVM /' | grep -a "^MCVM" || true
    grep -aq "MCVM-RESULT pass" "$1" || { tail -60 "$1"; return 1; }
}
