# optmode.py BASE_URI: the negotiation phase driven option by option
# (libnbd opt mode): LIST, INFO, LIST_META_CONTEXT, GO and ABORT.
import errno
import sys

import nbd

base = sys.argv[1]
K, M = 1024, 1024 * 1024

h = nbd.NBD()
h.set_opt_mode(True)
h.set_full_info(True)  # ask for NAME and DESCRIPTION in INFO/GO
h.connect_uri(base)
assert h.aio_is_negotiating()

# LIST: one entry per export, in configuration order, with descriptions.
exports = []
n = h.opt_list(lambda name, desc: exports.append((name, desc)) or 0)
want = [("vol0", "scratch volume"), ("ro", "read-only volume"), ("blk4k", "4 KiB blocks")]
assert exports == want, "opt_list: %r" % exports
assert n == 3, n

# INFO on each export: size, flags, block sizes, canonical name, description.
def info(name):
    h.set_export_name(name)
    h.opt_info()
    return dict(size=h.get_size(), ro=h.is_read_only(), trim=h.can_trim(),
                zero=h.can_zero(), flush=h.can_flush(), fua=h.can_fua(),
                multi=h.can_multi_conn(), cache=h.can_cache(), df=h.can_df(),
                fast_zero=h.can_fast_zero(),
                min=h.get_block_size(nbd.SIZE_MINIMUM),
                pref=h.get_block_size(nbd.SIZE_PREFERRED),
                max=h.get_block_size(nbd.SIZE_MAXIMUM),
                canonical=h.get_canonical_export_name(),
                desc=h.get_export_description())

got = info("ro")
assert got == dict(size=M, ro=True, trim=False, zero=False, flush=True, fua=True,
                   multi=True, cache=True, df=True, fast_zero=False,
                   min=512, pref=4096, max=32 * M, canonical="ro",
                   desc="read-only volume"), got
got = info("vol0")
assert got["size"] == 64 * M and not got["ro"] and got["trim"] and got["zero"], got
assert got["min"] == 1 and got["canonical"] == "vol0", got
got = info("")  # the default export is vol0, under its canonical name
assert got["canonical"] == "vol0" and got["size"] == 64 * M, got

# INFO on an unknown export fails (NBD_REP_ERR_UNKNOWN) and negotiation goes on.
h.set_export_name("nosuch")
try:
    h.opt_info()
    raise AssertionError("opt_info on an unknown export succeeded")
except nbd.Error as e:
    print("ok   INFO nosuch:", e.string)
assert h.aio_is_negotiating()

# LIST_META_CONTEXT: every context (no query), then a query for base:.
h.set_export_name("vol0")
ctxs = []
assert h.opt_list_meta_context(lambda name: ctxs.append(name) or 0) == 1
assert ctxs == ["base:allocation"], ctxs
h.add_meta_context("base:")
h.add_meta_context("qemu:dirty-bitmap:nothing")
ctxs = []
assert h.opt_list_meta_context(lambda name: ctxs.append(name) or 0) == 1
assert ctxs == ["base:allocation"], ctxs
h.clear_meta_contexts()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)

# GO: transmission on vol0 with base:allocation.
h.opt_go()
assert not h.aio_is_negotiating()
assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.pwrite(b"\xa5" * (64 * K), 0)
assert h.pread(64 * K, 0) == b"\xa5" * (64 * K)
extents = []
h.block_status(1 * M, 0, lambda ctx, off, ents, err: extents.append((ctx, list(ents))) or 0)
assert extents == [("base:allocation", [64 * K, 0, 1 * M - 64 * K, 3])], extents

# A READ over data and a hole comes back as an OFFSET_DATA and an
# OFFSET_HOLE chunk; with DF (don't fragment) as one OFFSET_DATA chunk.
def chunks(flags):
    got = []
    def cb(buf, off, status, err):
        got.append((off, len(buf), status, bytes(buf) == bytes(len(buf))))
        return 0
    buf = h.pread_structured(M, 0, cb, flags=flags)
    assert buf == b"\xa5" * (64 * K) + bytes(M - 64 * K)
    return got

got = chunks(0)
assert got == [(0, 64 * K, nbd.READ_DATA, False), (64 * K, M - 64 * K, nbd.READ_HOLE, True)], got
got = chunks(nbd.CMD_FLAG_DF)
assert got == [(0, M, nbd.READ_DATA, False)], got
h.shutdown()

# ABORT: the server acknowledges and closes; nothing is left behind.
a = nbd.NBD()
a.set_opt_mode(True)
a.connect_uri(base)
a.opt_abort()
assert a.aio_is_closed() or a.aio_is_dead(), "not closed after opt_abort"
print("PASS")
