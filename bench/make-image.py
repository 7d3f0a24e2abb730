"""Writes SIZE_MIB of the benches' half-compressible image to PATH: each 4 KiB block is
2 KiB of random bytes then 2 KiB of zeroes (LZ4 halves it; no two blocks are equal).
Usage: python3 bench/make-image.py PATH SIZE_MIB"""
import os
import sys

with open(sys.argv[1], "wb") as f:
    for _ in range(int(sys.argv[2]) * 16):
        f.write(b"".join(os.urandom(2048) + bytes(2048) for _ in range(16)))
