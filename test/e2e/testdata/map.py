# map.py URI: writes a known pattern of data, trims and zeroes for
# TestNbdinfoMap, checking each step reads back as expected.
import os
import sys

import nbd

K, M = 1024, 1024 * 1024

h = nbd.NBD()
h.connect_uri(sys.argv[1])
assert h.can_trim() and h.can_zero(), "export cannot trim or zero"

first = os.urandom(M)
h.pwrite(first, 0)
h.trim(256 * K, 256 * K)  # TRIM: pages freed, read as zeros
h.pwrite(bytes(4 * K), 512 * K)  # a WRITE of zeros frees its page too

second = os.urandom(M)
h.pwrite(second, 8 * M)
h.zero(8 * K, 8 * M + 4 * K)  # WRITE_ZEROES (may punch holes)
h.flush()

want = first[:256 * K] + bytes(260 * K) + first[516 * K:]
assert h.pread(M, 0) == want, "first MiB differs"
want = second[:4 * K] + bytes(8 * K) + second[12 * K:]
assert h.pread(M, 8 * M) == want, "second MiB differs"
assert h.pread(M, 4 * M) == bytes(M), "unwritten MiB is not zero"
h.shutdown()
print("PASS")
