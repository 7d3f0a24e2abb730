#!/usr/bin/env bash
# fio on the raw block device of each attach front end (ublk, kernel nbd, FUSE + loop)
# against qemu-nbd -c + qcow2 on
# the same kernel nbd driver, in one qemu guest running Debian's kernel (tests/vm),
# the disks in the guest's RAM. Under software emulation (the default) the absolute
# figures are an emulated CPU's: read the ratios. MINDCASTLE_VM_ACCEL=kvm where nested
# KVM works. Needs scripts/install-deps.sh.
# usage: bench/frontends-vm.sh [SECONDS_PER_RANDOM_JOB]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
. bench/vm/boot.sh
cargo build --release -q
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s/^SECS=.*/SECS=$secs/" bench/vm/guest-frontends.sh > "$tmp/guest.sh"
tests/vm/build-initramfs.sh "$vm" target/release/mindcastle "$tmp/initrd.gz" \
    "$tmp/guest.sh" "$(command -v qemu-img)" "$(command -v qemu-nbd)" "$(command -v fio)" \
    bench/vm/guest-lib.sh
boot_guest "$tmp/initrd.gz" "$tmp/console.log"
guest_lines "$tmp/console.log"
tr -d '\r' < "$tmp/console.log" | sed 's/^.*MCVM /MCVM /' | awk '
/^MCVM fio /{ split($5, fb, "="); split($6, fi, "="); split($7, fl, "=");
  bw[$3, $4] = fb[2]; iops[$3, $4] = fi[2]; lat[$3, $4] = fl[2] }
END {
  printf "| job | ublk | nbd | FUSE + loop | qemu-nbd qcow2 | ublk / nbd | nbd / qemu-nbd | FUSE / qemu-nbd |\n|---|---|---|---|---|---|---|---|\n"
  n = split("seqwrite seqread randread-qd1 randread-qd32 randwrite-qd1 randwrite-qd32", js, " ")
  for (k = 1; k <= n; k++) { j = js[k]
    if (j ~ /^seq/) { u = "MB/s"; s = 1.024 / 1000; x = "bw" } else { u = "IOPS"; s = 1; x = "iops" }
    if (x == "bw") { b = bw["ublk", j] * s; a = bw["nbd", j] * s; f = bw["fuse", j] * s; q = bw["qemu-nbd", j] * s }
    else { b = iops["ublk", j]; a = iops["nbd", j]; f = iops["fuse", j]; q = iops["qemu-nbd", j] }
    printf "| %s (%s) | %.0f | %.0f | %.0f | %.0f | %.2f | %.2f | %.2f |\n", j, u, b, a, f, q,
      (a > 0 ? b / a : 0), (q > 0 ? a / q : 0), (q > 0 ? f / q : 0)
  }
  printf "\nmean latency, us (QD1): ublk read %s write %s; nbd read %s write %s; qemu-nbd read %s write %s; FUSE read %s write %s\n",
    lat["ublk", "randread-qd1"], lat["ublk", "randwrite-qd1"], lat["nbd", "randread-qd1"], lat["nbd", "randwrite-qd1"], lat["qemu-nbd", "randread-qd1"],
    lat["qemu-nbd", "randwrite-qd1"], lat["fuse", "randread-qd1"], lat["fuse", "randwrite-qd1"]
}'
