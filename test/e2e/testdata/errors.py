# errors.py BASE_URI: bad requests sent with libnbd's strict mode off, so
# they reach the server. Each must fail with the errno the NBD spec and
# the reference servers give, coming from the server ("command failed"),
# and the connection must keep serving afterwards.
import errno
import os
import sys

import nbd

base = sys.argv[1]
K, M = 1024, 1024 * 1024


def connect(export, meta=True):
    h = nbd.NBD()
    h.set_strict_mode(0)  # send what the server did not advertise or allow
    if meta:
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(base + "/" + export)
    return h


def expect(h, what, want, fn):
    try:
        fn()
    except nbd.Error as e:
        if e.errnum != want:
            raise AssertionError("%s: errno %s (%s), want %s" % (
                what, errno.errorcode.get(e.errnum), e.string, errno.errorcode[want]))
        if "command failed" not in (e.string or ""):
            raise AssertionError("%s: error did not come from the server: %s" % (what, e.string))
        print("ok   %-45s %s" % (what, errno.errorcode[want]))
    else:
        raise AssertionError("%s: succeeded, want %s" % (what, errno.errorcode[want]))
    # The connection still works: a read, and a write where allowed.
    n = max(512, h.get_block_size(nbd.SIZE_MINIMUM))
    assert len(h.pread(n, 0)) == n
    assert h.aio_in_flight() == 0


# --- writable volume, min block size 1 -----------------------------------
h = connect("vol0")
size = h.get_size()
pattern = os.urandom(64 * K)
h.pwrite(pattern, 0)

expect(h, "READ past the end", errno.EINVAL, lambda: h.pread(4 * K, size))
expect(h, "READ straddling the end", errno.EINVAL, lambda: h.pread(8 * K, size - 4 * K))
expect(h, "WRITE past the end", errno.ENOSPC, lambda: h.pwrite(bytes(4 * K), size))
expect(h, "WRITE straddling the end", errno.ENOSPC, lambda: h.pwrite(bytes(8 * K), size - 4 * K))
expect(h, "WRITE_ZEROES past the end", errno.ENOSPC, lambda: h.zero(4 * K, size))
expect(h, "TRIM past the end", errno.EINVAL, lambda: h.trim(4 * K, size))
expect(h, "CACHE past the end", errno.EINVAL, lambda: h.cache(4 * K, size))
expect(h, "BLOCK_STATUS past the end", errno.EINVAL,
       lambda: h.block_status(4 * K, size, lambda *a: 0))
expect(h, "READ over the 32 MiB maximum", errno.EINVAL, lambda: h.pread(32 * M + 4 * K, 0))
expect(h, "READ with an unknown flag", errno.EINVAL, lambda: h.pread(512, 0, flags=1 << 9))
expect(h, "READ with FAST_ZERO", errno.EINVAL,
       lambda: h.pread(512, 0, flags=nbd.CMD_FLAG_FAST_ZERO))
expect(h, "READ with REQ_ONE", errno.EINVAL, lambda: h.pread(512, 0, flags=nbd.CMD_FLAG_REQ_ONE))
expect(h, "WRITE with DF", errno.EINVAL, lambda: h.pwrite(bytes(512), 0, flags=nbd.CMD_FLAG_DF))
expect(h, "WRITE with NO_HOLE", errno.EINVAL,
       lambda: h.pwrite(bytes(512), 0, flags=nbd.CMD_FLAG_NO_HOLE))
expect(h, "TRIM with an unknown flag", errno.EINVAL, lambda: h.trim(512, 0, flags=1 << 12))
expect(h, "FLUSH with NO_HOLE", errno.EINVAL, lambda: h.flush(flags=nbd.CMD_FLAG_NO_HOLE))
# Nothing above changed the data.
assert h.pread(64 * K, 0) == pattern, "data changed by refused requests"

# BLOCK_STATUS on a connection that negotiated no metadata context.
h2 = connect("vol0", meta=False)
assert not h2.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
expect(h2, "BLOCK_STATUS without a context", errno.EINVAL,
       lambda: h2.block_status(4 * K, 0, lambda *a: 0))
h2.shutdown()

# --- read-only volume, min block size 512 ---------------------------------
ro = connect("ro")
assert ro.is_read_only()
assert ro.get_block_size(nbd.SIZE_MINIMUM) == 512
expect(ro, "WRITE to a read-only export", errno.EPERM, lambda: ro.pwrite(bytes(512), 0))
expect(ro, "WRITE with FUA to a read-only export", errno.EPERM,
       lambda: ro.pwrite(bytes(4 * K), 0, flags=nbd.CMD_FLAG_FUA))
expect(ro, "TRIM on a read-only export", errno.EPERM, lambda: ro.trim(512, 0))
expect(ro, "WRITE_ZEROES on a read-only export", errno.EPERM, lambda: ro.zero(512, 0))
expect(ro, "READ not aligned to 512", errno.EINVAL, lambda: ro.pread(512, 1))
expect(ro, "READ of a length not a multiple of 512", errno.EINVAL, lambda: ro.pread(100, 0))
assert ro.pread(ro.get_size(), 0) == bytes(ro.get_size())
ro.flush()
ro.shutdown()

# --- writable volume, min block size 4096 ---------------------------------
b = connect("blk4k")
assert b.get_block_size(nbd.SIZE_MINIMUM) == 4096
expect(b, "READ not aligned to 4096", errno.EINVAL, lambda: b.pread(4 * K, 512))
expect(b, "WRITE not aligned to 4096", errno.EINVAL, lambda: b.pwrite(bytes(4 * K), 512))
expect(b, "WRITE of 512 bytes", errno.EINVAL, lambda: b.pwrite(bytes(512), 0))
expect(b, "TRIM not aligned to 4096", errno.EINVAL, lambda: b.trim(4 * K, 1))
expect(b, "WRITE_ZEROES not aligned to 4096", errno.EINVAL, lambda: b.zero(100, 0))
expect(b, "BLOCK_STATUS not aligned to 4096", errno.EINVAL,
       lambda: b.block_status(4 * K, 2 * K, lambda *a: 0))
data = os.urandom(8 * K)
b.pwrite(data, 4 * K)
assert b.pread(8 * K, 4 * K) == data
b.shutdown()

# The first connection is still good after everything else.
h.pwrite(pattern[::-1], 64 * K)
assert h.pread(128 * K, 0) == pattern + pattern[::-1]
h.shutdown()

# The server still accepts new connections.
h3 = connect("vol0")
assert h3.pread(64 * K, 0) == pattern
h3.shutdown()
print("PASS")
