# Run inside `nbdsh -u URI`: `h` is a connected handle on a fresh 64 MiB export.
import errno
import os

h.set_strict_mode(0)
size = h.get_size()
assert size == 64 << 20, size
assert h.can_fua() and h.can_zero() and h.can_cache() and h.can_trim() and h.can_multi_conn()

# Pipelined requests: many writes in flight, then many reads in flight.
N = 64
blocks = [os.urandom(65536) for _ in range(N)]
cookies = [h.aio_pwrite(blocks[i], i * 65536) for i in range(N)]
assert h.aio_in_flight() > 1
while h.aio_in_flight() > 0:
    h.poll(-1)
bufs = [nbd.Buffer(65536) for _ in range(N)]
cookies = [h.aio_pread(bufs[i], i * 65536) for i in range(N)]
while h.aio_in_flight() > 0:
    h.poll(-1)
for i in range(N):
    assert bufs[i].to_bytearray() == blocks[i], "pipelined read %d" % i

# Unaligned, overlapping sub-block I/O.
h.pwrite(b"A" * 1000, 8 << 20 | 100)
h.pwrite(b"B" * 300, (8 << 20) + 900)
got = h.pread(1400, 8 << 20)
assert got[:100] == bytes(100) and got[100:900] == b"A" * 800 and got[900:1200] == b"B" * 300 and got[1200:1400] == bytes(200)

# FUA write.
h.pwrite(b"durable" * 100, 12 << 20, nbd.CMD_FLAG_FUA)
assert h.pread(700, 12 << 20) == b"durable" * 100

# WRITE_ZEROES (with NO_HOLE, and with FAST_ZERO) and TRIM.
h.pwrite(b"\xff" * 65536, 16 << 20)
h.zero(8192, (16 << 20) + 4096, nbd.CMD_FLAG_NO_HOLE)
h.zero(4096, (16 << 20) + 32768, nbd.CMD_FLAG_FAST_ZERO)
d = h.pread(65536, 16 << 20)
assert d[:4096] == b"\xff" * 4096 and d[4096:12288] == bytes(8192) and d[12288:32768] == b"\xff" * 20480
assert d[32768:36864] == bytes(4096) and d[36864:] == b"\xff" * (65536 - 36864)
h.trim(65536, 16 << 20)
assert h.pread(65536, 16 << 20) == bytes(65536)

# CACHE.
h.cache(1 << 20, 0)

# BLOCK_STATUS: data at 0..4 MiB, hole after.
seen = []
def cb(meta, offset, entries, err):
    seen.append((meta, offset, list(entries)))
    return 0
h.block_status(8 << 20, 0, cb)
meta, off, ent = seen[0]
assert meta == "base:allocation", meta
assert ent[0] == 4 << 20 and ent[1] == 0, ent
assert ent[3] == 3, ent   # hole|zero after the data
seen.clear()
h.block_status(8 << 20, 0, cb, nbd.CMD_FLAG_REQ_ONE)
assert len(seen[0][2]) == 2, seen

# Errors: read past the end -> EINVAL; write past the end -> ENOSPC.
def expect(errno_want, f):
    try:
        f()
    except nbd.Error as e:
        # Older libnbd gives the errno as its name, newer as a number.
        assert e.errno in (errno_want, errno.errorcode[errno_want]), (e.errno, errno_want, e)
        return
    raise AssertionError("no error, wanted %d" % errno_want)

h.set_strict_mode(0)
expect(errno.EINVAL, lambda: h.pread(4096, size))
expect(errno.ENOSPC, lambda: h.pwrite(b"x" * 4096, size - 100))
expect(errno.ENOSPC, lambda: h.zero(8192, size - 4096))
expect(errno.EOVERFLOW, lambda: h.pread(64 << 20, 0))
# The connection still serves after errors.
assert h.pread(7, 12 << 20) == b"durable"
h.flush()
print("ALL OK")
