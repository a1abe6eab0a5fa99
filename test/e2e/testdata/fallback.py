# fallback.py BASE_URI: clients that negotiate less: no structured replies
# (simple replies only, as the kernel does) and no fixed newstyle (the old
# NBD_OPT_EXPORT_NAME path with its 124 zero bytes).
import errno
import os
import sys

import nbd

base = sys.argv[1]
K, M = 1024, 1024 * 1024


def exercise(h, off):
    data = os.urandom(M)
    h.pwrite(data, off)
    assert h.pread(M, off) == data
    h.trim(256 * K, off)
    h.zero(256 * K, off + 256 * K)
    assert h.pread(M, off) == bytes(512 * K) + data[512 * K:]
    # A large read of a mostly unwritten range (sparse on the server side).
    assert h.pread(4 * M, off + 4 * M) == bytes(4 * M)
    h.pwrite(data[:4 * K], off + 6 * M, flags=nbd.CMD_FLAG_FUA)
    h.flush()
    assert h.pread(4 * K, off + 6 * M) == data[:4 * K]


# Structured replies refused by the client: simple replies for everything.
h = nbd.NBD()
h.set_request_structured_replies(False)
h.connect_uri(base + "/vol0")
assert not h.get_structured_replies_negotiated()
assert h.get_protocol() == "newstyle-fixed"
assert not h.can_df()  # DF is only offered with structured replies
assert not h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
exercise(h, 0)
# An error reply to a READ is a simple reply without payload; the stream
# stays in sync.
h.set_strict_mode(0)
try:
    h.pread(4 * K, h.get_size())
    raise AssertionError("READ past the end succeeded")
except nbd.Error as e:
    assert e.errnum == errno.EINVAL, e
assert h.pread(4 * K, 6 * M) != bytes(4 * K)
h.shutdown()

# No fixed newstyle: only NBD_OPT_EXPORT_NAME, and without NO_ZEROES the
# server sends 124 zero bytes after the export flags.
for flags, off in ((0, 16 * M), (nbd.HANDSHAKE_FLAG_NO_ZEROES, 32 * M)):
    h = nbd.NBD()
    h.set_handshake_flags(flags)
    h.connect_uri(base + "/vol0")
    assert h.get_protocol() == "newstyle", h.get_protocol()
    assert not h.get_structured_replies_negotiated()
    assert h.get_size() == 64 * M
    exercise(h, off)
    h.shutdown()

# EXPORT_NAME for the default export.
h = nbd.NBD()
h.set_handshake_flags(0)
h.connect_uri(base)
assert h.get_size() == 64 * M
h.shutdown()

# EXPORT_NAME for an unknown export: the server can only close.
h = nbd.NBD()
h.set_handshake_flags(0)
try:
    h.connect_uri(base + "/nosuch")
    raise AssertionError("EXPORT_NAME nosuch succeeded")
except nbd.Error as e:
    print("ok   EXPORT_NAME nosuch:", e.string)
print("PASS")
