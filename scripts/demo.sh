#!/usr/bin/env bash
# The main job on a fresh machine: build, create demo.swap, import an image, export it
# back and check both are identical, then show the disk.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
M=target/release/mindcastle
rm -rf demo && mkdir demo
$M create --size 1G demo/demo.swap
# A 256 MiB image: 128 MiB of random bytes, then text, then a hole.
head -c 128M /dev/urandom > demo/image.raw
yes "mindcastle demo line" | head -c 64M >> demo/image.raw
truncate -s 256M demo/image.raw
$M import demo/demo.swap demo/image.raw
$M export demo/demo.swap demo/export.raw
cmp <(head -c 256M demo/export.raw) demo/image.raw && echo "round trip: identical"
$M fsck demo/demo.swap && echo "fsck: clean"
$M info demo/demo.swap
