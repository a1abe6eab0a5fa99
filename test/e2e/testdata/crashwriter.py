# crashwriter.py URI SEED FIRST_VERSION: writes self-identifying sectors to
# the export at URI with up to 16 requests in flight (libnbd's async API),
# until the connection dies (the test kills the server) or 100000 writes.
#
# Every write gets a version number, unique across the whole test (versions
# start at FIRST_VERSION). Each 512-byte sector it writes holds:
#
#   offset size
#        0    8  magic b"SHALECRS"
#        8    8  sector index (little-endian)
#       16    8  version
#       24    4  crc32 (zlib/IEEE) of bytes [28, 512)
#       28  484  body: random bytes, or one repeated byte (compressible)
#
# Before a write is issued it prints "I VERSION SECTOR COUNT", and once the
# server acknowledged it "A VERSION" (stdout flushed at once, so a line the
# test has read is a write the server really acknowledged or issued).
import nbd
import random
import struct
import sys
import zlib

MAGIC = b"SHALECRS"
QD = 16
MAX_SECTORS = 64  # 32 KiB per write at most


def sector(rng, index, version, compressible):
    if compressible:
        body = bytes([rng.randrange(256)]) * 484
    else:
        body = rng.randbytes(484)
    return MAGIC + struct.pack("<QQI", index, version, zlib.crc32(body)) + body


def main():
    uri, seed, version = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    h = nbd.NBD()
    h.connect_uri(uri)
    total = h.get_size() // 512
    inflight = {}  # cookie -> version
    issued = 0
    out = sys.stdout
    try:
        while issued < 100000 or inflight:
            while issued < 100000 and len(inflight) < QD:
                n = rng.randrange(1, MAX_SECTORS + 1)
                # Hot spots make overwrites of in-flight sectors common.
                if rng.random() < 0.3:
                    first = rng.randrange(0, min(total, 256) - n + 1)
                else:
                    first = rng.randrange(0, total - n + 1)
                compressible = rng.random() < 0.5
                buf = bytearray()
                for s in range(first, first + n):
                    buf += sector(rng, s, version, compressible)
                out.write("I %d %d %d\n" % (version, first, n))
                out.flush()
                cookie = h.aio_pwrite(nbd.Buffer.from_bytearray(buf), first * 512)
                inflight[cookie] = version
                version += 1
                issued += 1
            h.poll(1000)
            for cookie in list(inflight):
                if h.aio_command_completed(cookie):
                    out.write("A %d\n" % inflight.pop(cookie))
                    out.flush()
    except nbd.Error as e:
        out.write("E %s\n" % e)
        out.flush()


main()
