package nvlog

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// On-disk constants. See the package documentation for the drawings.
const (
	// superSlotBytes is the size of one superblock slot. Two slots sit at
	// the start of the device; 4096 is a multiple of every device
	// alignment (backend.MaxAlignment), so the layout does not depend on
	// the device.
	superSlotBytes = 4096
	// regionOff is where the circular log region starts.
	regionOff = 2 * superSlotBytes

	superMagic = 0x53564e53 // "SNVS" little-endian
	batchMagic = 0x42564e53 // "SNVB" little-endian
	// superVersion and batchVersion are what this code writes. Version 1
	// (before sessions) is read too: its session fields lie in bytes that
	// version 1 requires to be zero, so a version-1 image reads as one
	// whose every superblock and batch has session 0.
	superVersion = 2
	batchVersion = 2
	oldVersion   = 1

	// superBytes is the part of a slot the superblock uses (the rest is
	// zero and ignored, so a later version may grow into it).
	superBytes = 128
	// batchHeaderBytes is the size of a batch header.
	batchHeaderBytes = 64
	// entryHeaderBytes is the size of an entry header (seq, length).
	entryHeaderBytes = 12

	// minRegionBlocks is the smallest log region Format accepts, in device
	// blocks.
	minRegionBlocks = 16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// superblock is the decoded form of one superblock copy.
//
// INVARIANT (checked by decodeSuper): startSeq ≥ 1, startSeq-1 ≤ trimSeq ≤
// lastSeq, startPos is a block-aligned offset inside the region,
// startSession ≤ session < 2^63.
type superblock struct {
	gen        uint64   // larger is newer; the two slots alternate
	uuid       [16]byte // array identity, from Options.UUID
	logID      [16]byte // this log's identity, random at Format
	blockBytes uint32   // batch alignment: the device alignment at Format
	regionOff  int64    // start of the log region (regionOff)
	regionLen  int64    // length of the log region, a multiple of blockBytes
	trimSeq    uint64   // entries with seq ≤ trimSeq are trimmed
	startPos   int64    // device offset where recovery starts reading batches
	startSeq   uint64   // first seq of the batch expected at startPos
	lastSeq    uint64   // highest durable seq when this copy was written
	// session is the number of the last Open that wrote a superblock; no
	// batch carries a larger one.
	session uint64
	// startSession is the smallest session the batch at startPos may
	// carry (see the Recovery section of the package documentation).
	startSession uint64
}

// Superblock field offsets.
const (
	sbMagic     = 0
	sbVersion   = 4
	sbLen       = 6
	sbGen       = 8
	sbUUID      = 16
	sbLogID     = 32
	sbBlock     = 48
	sbReserved1 = 52
	sbRegionOff = 56
	sbRegionLen = 64
	sbTrimSeq   = 72
	sbStartPos  = 80
	sbStartSeq  = 88
	sbLastSeq   = 96
	sbSession   = 104
	sbStartSess = 112
	sbReserved2 = 120
	sbCRC       = 124
)

// encodeSuper writes sb into the first superBytes of b and zeroes the rest
// of b. REQUIRES: len(b) ≥ superBytes.
func encodeSuper(b []byte, sb *superblock) {
	clear(b)
	le := binary.LittleEndian
	le.PutUint32(b[sbMagic:], superMagic)
	le.PutUint16(b[sbVersion:], superVersion)
	le.PutUint16(b[sbLen:], superBytes)
	le.PutUint64(b[sbGen:], sb.gen)
	copy(b[sbUUID:sbUUID+16], sb.uuid[:])
	copy(b[sbLogID:sbLogID+16], sb.logID[:])
	le.PutUint32(b[sbBlock:], sb.blockBytes)
	le.PutUint64(b[sbRegionOff:], uint64(sb.regionOff))
	le.PutUint64(b[sbRegionLen:], uint64(sb.regionLen))
	le.PutUint64(b[sbTrimSeq:], sb.trimSeq)
	le.PutUint64(b[sbStartPos:], uint64(sb.startPos))
	le.PutUint64(b[sbStartSeq:], sb.startSeq)
	le.PutUint64(b[sbLastSeq:], sb.lastSeq)
	le.PutUint64(b[sbSession:], sb.session)
	le.PutUint64(b[sbStartSess:], sb.startSession)
	le.PutUint32(b[sbCRC:], crc(b[:sbCRC]))
}

// decodeSuper parses and validates one superblock copy. It checks the
// checksum and every field's range, but not the fields against a device.
func decodeSuper(b []byte) (superblock, error) {
	var sb superblock
	if len(b) < superBytes {
		return sb, fmt.Errorf("superblock: %d bytes, want %d", len(b), superBytes)
	}
	le := binary.LittleEndian
	if m := le.Uint32(b[sbMagic:]); m != superMagic {
		return sb, fmt.Errorf("superblock: bad magic %#x", m)
	}
	if got, want := le.Uint32(b[sbCRC:]), crc(b[:sbCRC]); got != want {
		return sb, fmt.Errorf("superblock: checksum %#x, want %#x", got, want)
	}
	v := le.Uint16(b[sbVersion:])
	if v != superVersion && v != oldVersion {
		return sb, fmt.Errorf("superblock: unknown version %d", v)
	}
	if n := le.Uint16(b[sbLen:]); n != superBytes {
		return sb, fmt.Errorf("superblock: length %d, want %d", n, superBytes)
	}
	if le.Uint32(b[sbReserved1:]) != 0 || !allZero(b[sbReserved2:sbCRC]) ||
		v == oldVersion && !allZero(b[sbSession:sbReserved2]) {
		return sb, fmt.Errorf("superblock: reserved bytes not zero")
	}
	sb.gen = le.Uint64(b[sbGen:])
	copy(sb.uuid[:], b[sbUUID:sbUUID+16])
	copy(sb.logID[:], b[sbLogID:sbLogID+16])
	sb.blockBytes = le.Uint32(b[sbBlock:])
	sb.regionOff = int64(le.Uint64(b[sbRegionOff:]))
	sb.regionLen = int64(le.Uint64(b[sbRegionLen:]))
	sb.trimSeq = le.Uint64(b[sbTrimSeq:])
	sb.startPos = int64(le.Uint64(b[sbStartPos:]))
	sb.startSeq = le.Uint64(b[sbStartSeq:])
	sb.lastSeq = le.Uint64(b[sbLastSeq:])
	sb.session = le.Uint64(b[sbSession:])
	sb.startSession = le.Uint64(b[sbStartSess:])

	blk := int64(sb.blockBytes)
	switch {
	case sb.gen == 0:
		return sb, fmt.Errorf("superblock: generation 0")
	case blk < 512 || blk > superSlotBytes || blk&(blk-1) != 0:
		return sb, fmt.Errorf("superblock: block size %d not a power of two in [512, %d]", blk, superSlotBytes)
	case sb.regionOff != regionOff:
		return sb, fmt.Errorf("superblock: region offset %d, want %d", sb.regionOff, regionOff)
	case sb.regionLen < minRegionBlocks*blk || sb.regionLen%blk != 0 || sb.regionLen > 1<<60:
		return sb, fmt.Errorf("superblock: region length %d not a multiple of %d of at least %d blocks", sb.regionLen, blk, minRegionBlocks)
	case sb.startPos < sb.regionOff || sb.startPos > sb.regionOff+sb.regionLen || sb.startPos%blk != 0:
		return sb, fmt.Errorf("superblock: start position %d outside region [%d, %d] or misaligned", sb.startPos, sb.regionOff, sb.regionOff+sb.regionLen)
	case sb.startSeq == 0 || sb.startSeq == ^uint64(0):
		return sb, fmt.Errorf("superblock: start seq %d", sb.startSeq)
	case sb.trimSeq < sb.startSeq-1 || sb.lastSeq < sb.trimSeq:
		return sb, fmt.Errorf("superblock: seqs out of order: start %d trim %d last %d", sb.startSeq, sb.trimSeq, sb.lastSeq)
	case sb.session >= 1<<63 || sb.startSession > sb.session:
		return sb, fmt.Errorf("superblock: start session %d, session %d", sb.startSession, sb.session)
	}
	return sb, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// batchHeader is the decoded form of a batch header.
type batchHeader struct {
	logID    [16]byte
	firstSeq uint64
	session  uint64 // the Open session that wrote the batch
	count    uint32 // entries, ≥ 1
	bodyLen  uint32 // bytes of entries after the header
	crc      uint32 // crc32c of header[0:60] ‖ body
}

// Batch header field offsets.
const (
	bhMagic    = 0
	bhVersion  = 4
	bhLen      = 6
	bhLogID    = 8
	bhFirstSeq = 24
	bhCount    = 32
	bhBodyLen  = 36
	bhSession  = 40
	bhReserved = 48
	bhCRC      = 60
)

// batchBytes is the on-device size of a batch with bodyLen bytes of
// entries: header plus body, padded to the block size.
func batchBytes(bodyLen, blk int64) int64 {
	return roundUp(batchHeaderBytes+bodyLen, blk)
}

func roundUp(n, a int64) int64 { return (n + a - 1) / a * a }

// sealBatch fills in the header of a batch whose entries occupy
// buf[batchHeaderBytes:n], zeroes the padding up to the block size and
// returns the padded length. REQUIRES: cap(buf) ≥ batchBytes(n-64, blk).
func sealBatch(buf []byte, n int, logID *[16]byte, session, firstSeq uint64, count int, blk int64) int {
	padded := int(roundUp(int64(n), blk))
	buf = buf[:padded]
	clear(buf[n:padded])
	le := binary.LittleEndian
	h := buf[:batchHeaderBytes]
	le.PutUint32(h[bhMagic:], batchMagic)
	le.PutUint16(h[bhVersion:], batchVersion)
	le.PutUint16(h[bhLen:], batchHeaderBytes)
	copy(h[bhLogID:bhLogID+16], logID[:])
	le.PutUint64(h[bhFirstSeq:], firstSeq)
	le.PutUint32(h[bhCount:], uint32(count))
	le.PutUint32(h[bhBodyLen:], uint32(n-batchHeaderBytes))
	le.PutUint64(h[bhSession:], session)
	clear(h[bhReserved:bhCRC])
	c := crc32.Update(0, castagnoli, h[:bhCRC])
	c = crc32.Update(c, castagnoli, buf[batchHeaderBytes:n])
	le.PutUint32(h[bhCRC:], c)
	return padded
}

// decodeBatchHeader parses a batch header and checks everything it can
// without the body: magic, version, sizes, reserved bytes. maxBody bounds
// bodyLen (the caller passes the space left in the region).
func decodeBatchHeader(b []byte, maxBody int64) (batchHeader, error) {
	var h batchHeader
	if len(b) < batchHeaderBytes {
		return h, fmt.Errorf("batch header: %d bytes", len(b))
	}
	le := binary.LittleEndian
	if m := le.Uint32(b[bhMagic:]); m != batchMagic {
		return h, fmt.Errorf("batch header: bad magic %#x", m)
	}
	v := le.Uint16(b[bhVersion:])
	if v != batchVersion && v != oldVersion {
		return h, fmt.Errorf("batch header: unknown version %d", v)
	}
	if n := le.Uint16(b[bhLen:]); n != batchHeaderBytes {
		return h, fmt.Errorf("batch header: length %d", n)
	}
	if !allZero(b[bhReserved:bhCRC]) || v == oldVersion && !allZero(b[bhSession:bhReserved]) {
		return h, fmt.Errorf("batch header: reserved bytes not zero")
	}
	copy(h.logID[:], b[bhLogID:bhLogID+16])
	h.firstSeq = le.Uint64(b[bhFirstSeq:])
	h.session = le.Uint64(b[bhSession:])
	h.count = le.Uint32(b[bhCount:])
	h.bodyLen = le.Uint32(b[bhBodyLen:])
	h.crc = le.Uint32(b[bhCRC:])
	switch {
	case h.count == 0:
		return h, fmt.Errorf("batch header: no entries")
	case int64(h.bodyLen) < int64(h.count)*entryHeaderBytes:
		return h, fmt.Errorf("batch header: body %d bytes too short for %d entries", h.bodyLen, h.count)
	case int64(h.bodyLen) > maxBody:
		return h, fmt.Errorf("batch header: body %d bytes exceeds %d", h.bodyLen, maxBody)
	case h.firstSeq == 0 || h.firstSeq+uint64(h.count) < h.firstSeq:
		return h, fmt.Errorf("batch header: seqs %d+%d overflow", h.firstSeq, h.count)
	}
	return h, nil
}

// checkBatch verifies the checksum of a whole batch (header and body,
// without padding) against its decoded header and walks the entries,
// checking each seq and length. It returns nil only for a batch that
// Replay can hand out entry by entry.
func checkBatch(b []byte, h *batchHeader) error {
	n := batchHeaderBytes + int(h.bodyLen)
	if len(b) < n {
		return fmt.Errorf("batch %d: %d bytes, want %d", h.firstSeq, len(b), n)
	}
	c := crc32.Update(0, castagnoli, b[:bhCRC])
	c = crc32.Update(c, castagnoli, b[batchHeaderBytes:n])
	if c != h.crc {
		return fmt.Errorf("batch %d: checksum %#x, want %#x", h.firstSeq, c, h.crc)
	}
	body := b[batchHeaderBytes:n]
	for i := uint32(0); i < h.count; i++ {
		seq, entry, rest, err := nextEntry(body)
		if err != nil {
			return fmt.Errorf("batch %d: entry %d: %w", h.firstSeq, i, err)
		}
		if want := h.firstSeq + uint64(i); seq != want {
			return fmt.Errorf("batch %d: entry %d has seq %d, want %d", h.firstSeq, i, seq, want)
		}
		_ = entry
		body = rest
	}
	if len(body) != 0 {
		return fmt.Errorf("batch %d: %d bytes after the last entry", h.firstSeq, len(body))
	}
	return nil
}

// putEntry encodes an entry header at b. REQUIRES: len(b) ≥ entryHeaderBytes.
func putEntry(b []byte, seq uint64, n int) {
	binary.LittleEndian.PutUint64(b[0:], seq)
	binary.LittleEndian.PutUint32(b[8:], uint32(n))
}

// nextEntry splits the first entry off body.
func nextEntry(body []byte) (seq uint64, entry, rest []byte, err error) {
	if len(body) < entryHeaderBytes {
		return 0, nil, nil, fmt.Errorf("truncated entry header (%d bytes)", len(body))
	}
	seq = binary.LittleEndian.Uint64(body[0:])
	n := binary.LittleEndian.Uint32(body[8:])
	if uint64(n) > uint64(len(body)-entryHeaderBytes) {
		return 0, nil, nil, fmt.Errorf("entry %d: length %d exceeds batch", seq, n)
	}
	end := entryHeaderBytes + int(n)
	return seq, body[entryHeaderBytes:end], body[end:], nil
}
