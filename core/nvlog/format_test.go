package nvlog

import (
	"encoding/binary"
	"hash/crc32"
	"strings"
	"testing"
	"time"
)

func validSuper() superblock {
	return superblock{
		gen: 7, uuid: testUUID, logID: [16]byte{9, 9, 9}, blockBytes: 512,
		regionOff: regionOff, regionLen: 64 << 10,
		trimSeq: 10, startPos: regionOff + 1024, startSeq: 9, lastSeq: 20,
		session: 5, startSession: 3,
	}
}

func TestSuperblockRoundTrip(t *testing.T) {
	b := make([]byte, superSlotBytes)
	for i := range b {
		b[i] = 0xaa // encodeSuper must clear the whole slot
	}
	sb := validSuper()
	encodeSuper(b, &sb)
	got, err := decodeSuper(b)
	if err != nil || got != sb {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if !allZero(b[superBytes:]) {
		t.Fatal("slot tail not zeroed")
	}
}

func TestSuperblockRejects(t *testing.T) {
	tests := []struct {
		name string
		edit func(sb *superblock)
		want string
	}{
		{"gen0", func(sb *superblock) { sb.gen = 0 }, "generation 0"},
		{"block not pow2", func(sb *superblock) { sb.blockBytes = 1000 }, "block size"},
		{"block too big", func(sb *superblock) { sb.blockBytes = 8192 }, "block size"},
		{"region offset", func(sb *superblock) { sb.regionOff = 4096 }, "region offset"},
		{"region short", func(sb *superblock) { sb.regionLen = 512 * 8 }, "region length"},
		{"region unaligned", func(sb *superblock) { sb.regionLen = 64<<10 + 100 }, "region length"},
		{"start before region", func(sb *superblock) { sb.startPos = 4096 }, "start position"},
		{"start past region", func(sb *superblock) { sb.startPos = regionOff + 64<<10 + 512 }, "start position"},
		{"start unaligned", func(sb *superblock) { sb.startPos = regionOff + 100 }, "start position"},
		{"start seq 0", func(sb *superblock) { sb.startSeq = 0 }, "start seq"},
		{"trim below start", func(sb *superblock) { sb.trimSeq = 5 }, "out of order"},
		{"last below trim", func(sb *superblock) { sb.lastSeq = 9 }, "out of order"},
		{"start session above session", func(sb *superblock) { sb.startSession = 6 }, "session"},
		{"session exhausted", func(sb *superblock) { sb.session = 1 << 63 }, "session"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sb := validSuper()
			tc.edit(&sb)
			b := make([]byte, superSlotBytes)
			encodeSuper(b, &sb)
			if _, err := decodeSuper(b); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	// Byte-level damage: checksum, magic, version, reserved.
	for _, off := range []int{sbMagic, sbVersion, sbLen, sbGen, sbUUID + 3, sbTrimSeq, sbReserved1, sbSession, sbStartSess + 7, sbReserved2 + 2, sbCRC} {
		sb := validSuper()
		b := make([]byte, superSlotBytes)
		encodeSuper(b, &sb)
		b[off] ^= 0x40
		if _, err := decodeSuper(b); err == nil {
			t.Errorf("flip at %d accepted", off)
		}
	}
	// Bytes past the superblock are ignored (room for later versions).
	sb := validSuper()
	b := make([]byte, superSlotBytes)
	encodeSuper(b, &sb)
	b[superBytes+10] = 1
	if _, err := decodeSuper(b); err != nil {
		t.Fatalf("slot tail: %v", err)
	}
}

func buildBatch(entries [][]byte, firstSeq uint64, blk int64) []byte {
	n := batchHeaderBytes
	for _, e := range entries {
		n += entryHeaderBytes + len(e)
	}
	buf := make([]byte, roundUp(int64(n), blk))
	for i := range buf {
		buf[i] = 0x55
	}
	off := batchHeaderBytes
	for i, e := range entries {
		putEntry(buf[off:], firstSeq+uint64(i), len(e))
		copy(buf[off+entryHeaderBytes:], e)
		off += entryHeaderBytes + len(e)
	}
	id := [16]byte{1}
	padded := sealBatch(buf, n, &id, 3, firstSeq, len(entries), blk)
	return buf[:padded]
}

func TestBatchRoundTrip(t *testing.T) {
	entries := [][]byte{[]byte("a"), {}, []byte("third entry"), make([]byte, 600)}
	b := buildBatch(entries, 42, 512)
	if len(b) != 1024 {
		t.Fatalf("padded length %d", len(b))
	}
	if !allZero(b[batchHeaderBytes+4*entryHeaderBytes+1+11+600:]) {
		t.Fatal("padding not zeroed")
	}
	h, err := decodeBatchHeader(b, int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if h.firstSeq != 42 || h.count != 4 || h.logID != [16]byte{1} || h.session != 3 {
		t.Fatalf("header %+v", h)
	}
	if err := checkBatch(b, &h); err != nil {
		t.Fatal(err)
	}
	body := b[batchHeaderBytes : batchHeaderBytes+int(h.bodyLen)]
	for i, want := range entries {
		seq, e, rest, err := nextEntry(body)
		if err != nil || seq != 42+uint64(i) || string(e) != string(want) {
			t.Fatalf("entry %d: seq %d %q %v", i, seq, e, err)
		}
		body = rest
	}
	// Every flipped byte of header or body is caught; padding is not
	// covered.
	for off := range batchHeaderBytes + int(h.bodyLen) {
		c := append([]byte(nil), b...)
		c[off] ^= 1
		h2, err := decodeBatchHeader(c, int64(len(c)))
		if err == nil {
			err = checkBatch(c, &h2)
			if err == nil && h2 != h {
				continue // a changed field the header decode accepted must fail the crc
			}
		}
		if err == nil {
			t.Fatalf("flip at %d accepted", off)
		}
	}
}

func TestBatchRejectsInconsistentBodies(t *testing.T) {
	le := binary.LittleEndian
	id := [16]byte{1}
	tests := []struct {
		name string
		edit func(b []byte) // edits the body, then the batch is resealed
		n    int            // body length to seal with
	}{
		{"seq gap", func(b []byte) { le.PutUint64(b[batchHeaderBytes+entryHeaderBytes+1:], 99) }, 0},
		{"length past body", func(b []byte) { le.PutUint32(b[batchHeaderBytes+8:], 5000) }, 0},
		{"trailing bytes", nil, 7},
		{"truncated entry header", nil, -5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := make([]byte, 2048)
			copy(b, buildBatch([][]byte{[]byte("x"), []byte("yy")}, 10, 512))
			n := batchHeaderBytes + 2*entryHeaderBytes + 3 + tc.n
			if tc.edit != nil {
				tc.edit(b)
			}
			sealBatch(b, n, &id, 3, 10, 2, 512)
			h, err := decodeBatchHeader(b, int64(len(b)))
			if err == nil {
				err = checkBatch(b, &h)
			}
			if err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestRingPlace(t *testing.T) {
	const s, e = 1000, 2000 // region [1000, 2000)
	tests := []struct {
		name       string
		tail, head int64
		live       bool
		n          int64
		pos        int64
		p          placement
	}{
		// Empty log, head in the middle: [1700, 2000) after head, then
		// the start up to head.
		{"empty at start", s, s, false, 1000, s, placeOK},
		{"empty fits at head", 1700, 1700, false, 300, 1700, placeOK},
		{"empty wraps", 1700, 1700, false, 301, s, placeOK},
		{"empty wraps exactly to head", 1700, 1700, false, 700, s, placeOK},
		{"empty needs rewind", 1700, 1700, false, 701, 0, placeRewind},
		{"empty head at end", e, e, false, 1000, s, placeOK},
		// Live [1200, 1600): free [1600, 2000) and [1000, 1200).
		{"after tail fits", 1200, 1600, true, 400, 1600, placeOK},
		{"after tail no room", 1200, 1600, true, 401, 0, placeWait},
		// Live [1500, 1800): free [1800, 2000) and [1000, 1500).
		{"after tail wraps", 1500, 1800, true, 300, s, placeOK},
		{"after tail wraps exactly to tail", 1500, 1800, true, 500, s, placeOK},
		{"after tail wrap too big", 1500, 1800, true, 501, 0, placeWait},
		// Live [1600, 2000) and [1000, 1200): free [1200, 1600).
		{"before tail fits", 1600, 1200, true, 400, 1200, placeOK},
		{"before tail no room", 1600, 1200, true, 401, 0, placeWait},
		{"full", 1500, 1500, true, 1, 0, placeWait},
		{"larger than region", s, s, false, 1001, 0, placeWait},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ring{start: s, end: e, tail: tc.tail, head: tc.head}
			pos, p := r.place(tc.n, tc.live)
			if p != tc.p || (p == placeOK && pos != tc.pos) {
				t.Fatalf("place(%d) = %d, %v; want %d, %v", tc.n, pos, p, tc.pos, tc.p)
			}
			if p != placeOK {
				return
			}
			// What is placed never overlaps the live range [tail, head).
			used := r.used(tc.live)
			if pos < tc.head { // wrapped
				used += e - tc.head
			}
			if used+tc.n > r.size() {
				t.Fatalf("placement overruns the tail: %d in use + %d > %d", used, tc.n, r.size())
			}
		})
	}
}

func TestRingUsed(t *testing.T) {
	r := ring{start: 0, end: 100, tail: 30, head: 70}
	if u := r.used(true); u != 40 {
		t.Fatal(u)
	}
	r.tail, r.head = 70, 30
	if u := r.used(true); u != 60 {
		t.Fatal(u)
	}
	r.tail, r.head = 50, 50
	if u := r.used(true); u != 100 {
		t.Fatal(u)
	}
	if u := r.used(false); u != 0 {
		t.Fatal(u)
	}
}

func TestHistogram(t *testing.T) {
	for _, v := range []int64{0, 1, 7, 8, 9, 15, 16, 17, 1000, 123456789, 1 << 62} {
		i := histIndex(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("index %d of %d", i, v)
		}
		if up := histUpper(i); up < v || (v >= 8 && float64(up-v) > float64(v)/8) {
			t.Fatalf("value %d: bucket %d upper %d", v, i, up)
		}
		if i > 0 && histUpper(i-1) >= v {
			t.Fatalf("value %d: previous bucket upper %d", v, histUpper(i-1))
		}
	}
	var h histogram
	for i := int64(1); i <= 1000; i++ {
		h.record(i * int64(time.Microsecond))
	}
	var q [3]time.Duration
	h.quantiles([]float64{0.5, 0.99, 1}, q[:])
	if q[0] < 480*time.Microsecond || q[0] > 570*time.Microsecond {
		t.Fatalf("p50 %v", q[0])
	}
	if q[1] < 980*time.Microsecond || q[1] > 1000*time.Microsecond {
		t.Fatalf("p99 %v", q[1])
	}
	if q[2] != time.Millisecond {
		t.Fatalf("p100 %v", q[2])
	}
}

// TestReadsVersion1 checks that images written before sessions existed
// (version 1: the session fields were reserved zero bytes) still decode,
// as session 0, and that a version-1 header with those bytes set does not.
func TestReadsVersion1(t *testing.T) {
	le := binary.LittleEndian
	asV1 := func(b []byte, verOff, crcOff int) {
		le.PutUint16(b[verOff:], oldVersion)
		le.PutUint32(b[crcOff:], crc(b[:crcOff]))
	}
	sb := validSuper()
	sb.session, sb.startSession = 0, 0
	b := make([]byte, superSlotBytes)
	encodeSuper(b, &sb)
	asV1(b, sbVersion, sbCRC)
	if got, err := decodeSuper(b); err != nil || got != sb {
		t.Fatalf("version-1 superblock: %+v, %v", got, err)
	}
	sb.session = 1
	encodeSuper(b, &sb)
	asV1(b, sbVersion, sbCRC)
	if _, err := decodeSuper(b); err == nil {
		t.Fatal("version-1 superblock with a session accepted")
	}

	for _, session := range []uint64{0, 1} {
		n := batchHeaderBytes + entryHeaderBytes + 1
		bb := make([]byte, 512)
		putEntry(bb[batchHeaderBytes:], 42, 1)
		id := [16]byte{1}
		sealBatch(bb, n, &id, session, 42, 1, 512)
		le.PutUint16(bb[bhVersion:], oldVersion)
		c := crc32.Update(0, castagnoli, bb[:bhCRC])
		c = crc32.Update(c, castagnoli, bb[batchHeaderBytes:n])
		le.PutUint32(bb[bhCRC:], c)
		h, err := decodeBatchHeader(bb, 512)
		if err == nil {
			err = checkBatch(bb, &h)
		}
		switch {
		case session == 0 && (err != nil || h.session != 0 || h.firstSeq != 42):
			t.Fatalf("version-1 batch: %+v, %v", h, err)
		case session != 0 && err == nil:
			t.Fatal("version-1 batch with a session accepted")
		}
	}
}

// FuzzDecode feeds arbitrary bytes to the superblock and batch header
// decoders: they must not panic, what they accept must satisfy the
// documented invariants, and a version-2 image must encode back to the same
// bytes (no field decoded but not written, or written elsewhere).
func FuzzDecode(f *testing.F) {
	sb := validSuper()
	b := make([]byte, superBytes)
	encodeSuper(b, &sb)
	f.Add(b)
	f.Add(buildBatch([][]byte{[]byte("a"), []byte("bc")}, 42, 512)[:superBytes])
	f.Add(make([]byte, superBytes))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < superBytes {
			data = append(data, make([]byte, superBytes-len(data))...)
		}
		data = data[:superBytes]
		if sb, err := decodeSuper(data); err == nil {
			if sb.startSession > sb.session || sb.trimSeq+1 < sb.startSeq || sb.lastSeq < sb.trimSeq || sb.gen == 0 {
				t.Fatalf("accepted superblock breaks its invariants: %+v", sb)
			}
			if binary.LittleEndian.Uint16(data[sbVersion:]) == superVersion {
				again := make([]byte, superBytes)
				encodeSuper(again, &sb)
				if string(again) != string(data) {
					t.Fatalf("superblock does not round-trip:\n%x\n%x", data, again)
				}
			}
		}
		if h, err := decodeBatchHeader(data, 1<<20); err == nil {
			if h.count == 0 || int64(h.bodyLen) > 1<<20 || int64(h.bodyLen) < int64(h.count)*entryHeaderBytes {
				t.Fatalf("accepted batch header breaks its invariants: %+v", h)
			}
			_ = checkBatch(data, &h) // must not panic on a short or wrong body
		}
	})
}
