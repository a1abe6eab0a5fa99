// Package segment stores data in segments: one AU on each of k+m drives,
// written one segio at a time, every write unit checksummed and the stripe
// protected by Reed-Solomon parity (paper §4.2, Figure 3).
//
// A Writer packs cblocks from the front of the open segio and log records
// from the back, handing out each item's Addr at once; when the two meet, or
// a deadline passes, it seals the segio, computes parity and writes one write
// unit to each drive of the segment, never more than MaxWritingDrives drives
// of the stripe at a time so the others stay free for reads (paper §4.4). A
// Reader reads any byte range of a segment, verifying checksums and
// rebuilding from any k of the k+m write units when drives are missing,
// failed, busy writing or return data that fails its checksum; it tells the
// caller which drives were bad.
//
// Segments are self-describing: every write unit starts with a unit header
// naming the array, the segment, the segio, the segment's members (so one AU
// leads to the others), the seq range of the segio's log records and where
// its content map lies, so a segment can be read with no other metadata.
//
// # Addresses
//
// An Addr is (segment, offset, length) in the segment's logical data space:
// segio j covers [j*SegioBytes, (j+1)*SegioBytes), and within a segio the
// payload is the data shards' bodies laid end to end. An item never spans
// two segios. Addresses never change once handed out.
//
// # Write unit (one per drive per segio), W = write unit size, H = header size
//
//	offset      size  field
//	0           8     magic "SHLSEGIO"
//	8           2     format version (1)
//	10          2     shard index i (0..k-1 data, k..k+m-1 parity)
//	12          2     k (data shards)
//	14          2     m (parity shards)
//	16          4     H, header size in bytes (multiple of 4096)
//	20          4     W, write unit size in bytes
//	24          8     AU size in bytes
//	32          16    array id
//	48          8     segment id
//	56          4     segio index within the segment
//	60          4     flags (bit 0: written by Restore after a crash)
//	64          8     stamp: the same on every unit of one segio write; a
//	                  rewrite of the position after a crash has a higher one
//	72          8     seq lo of the segio's log records (0 if none)
//	80          8     seq hi of the segio's log records (0 if none)
//	88          4     front: payload bytes used by cblocks from offset 0
//	92          4     back: payload offset where log records start
//	96          4     content map offset in the payload (= front)
//	100         4     content map entry count n
//	104         4     crc32c of the content map's n*28 bytes
//	108         4     c, number of body blocks (= (W-H)/4096)
//	112         8*(k+m)  members: u32 drive index, u32 AU index, per shard
//	..          4*c   crc32c of each 4096-byte block of this unit's body
//	..          4     crc32c of every header byte before it
//	..          ..    zero padding to H
//	H           W-H   body: payload bytes [i*(W-H), (i+1)*(W-H)) for a data
//	                  shard, Reed-Solomon parity of the data bodies for a
//	                  parity shard
//
// All integers are little-endian.
//
// # Content map (in the payload at the map offset), n entries of 28 bytes
//
//	0   1  kind (1 cblock, 2 log record)
//	1   3  zero
//	4   4  payload offset of the item within the segio
//	8   4  length in bytes
//	12  8  seq lo (as given by the appender; 0 if none)
//	20  8  seq hi
//
// # Layout of a segio's payload
//
//	[cblocks →][content map][free][← log records]
//	0       front      front+28n    back        SegioBytes
//
// A segio may hold only cblocks or only log records.
package segment

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// ID names a segment. IDs are handed out in increasing order and never
// reused, so a unit header naming an old ID in a reused AU is recognisably
// stale.
type ID uint64

// Addr is where an appended item lives: a byte range of a segment's logical
// data space. It is assigned at append time and never changes.
type Addr struct {
	Segment ID
	Offset  int64
	Length  int32
}

// String formats a as "seg 12 @4096+512".
func (a Addr) String() string { return fmt.Sprintf("seg %d @%d+%d", a.Segment, a.Offset, a.Length) }

// Member is one AU of a segment: the drive (its index in the array) and the
// AU's index on that drive.
type Member struct {
	Drive int
	AU    int64
}

// Layout says where a segment lives: Members[i] holds shard i of every segio
// (i < k data, else parity).
type Layout struct {
	Segment ID
	Members []Member
}

// Clone returns a deep copy of l.
func (l Layout) Clone() Layout {
	return Layout{Segment: l.Segment, Members: append([]Member(nil), l.Members...)}
}

// Kind is what an appended item is.
type Kind uint8

const (
	// Cblock is user data, packed from the front of a segio.
	Cblock Kind = 1
	// Record is a log record (a pyramid patch), packed from the back.
	Record Kind = 2
)

// String returns "cblock" or "record".
func (k Kind) String() string {
	switch k {
	case Cblock:
		return "cblock"
	case Record:
		return "record"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Entry is one item of a segio's content map.
type Entry struct {
	Kind   Kind
	Offset uint32 // within the segio's payload
	Length uint32
	SeqLo  uint64
	SeqHi  uint64
}

// Error classes of this package, tested with errors.Is.
var (
	// ErrCorrupt means bytes read from a drive failed validation (bad
	// magic, checksum, or fields out of range).
	ErrCorrupt = errors.New("segment: corrupt")
	// ErrUnrecoverable means a read found more than m of a stripe's write
	// units bad; no data is returned.
	ErrUnrecoverable = errors.New("segment: too many bad write units")
	// ErrTooLarge means an item cannot fit in an empty segio.
	ErrTooLarge = errors.New("segment: item larger than a segio")
	// ErrClosed means the writer was closed.
	ErrClosed = errors.New("segment: writer closed")
)

const (
	magic        = "SHLSEGIO"
	version      = 1
	headerFixed  = 112
	memberSize   = 8
	entrySize    = 28
	flagRestored = 1
)

// EntrySize is the size of one content-map entry in bytes.
const EntrySize = entrySize

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// Header is a decoded unit header.
type Header struct {
	Shard     int
	Data      int
	Parity    int
	Size      int64 // H
	WriteUnit int64
	AUSize    int64
	Array     [16]byte
	Segment   ID
	Segio     int
	Flags     uint32
	Stamp     uint64
	SeqLo     uint64
	SeqHi     uint64
	Front     uint32
	Back      uint32
	MapOffset uint32
	MapCount  uint32
	MapCRC    uint32
	Members   []Member
	BlockCRCs []uint32
}

// Geometry returns the geometry the header was written with.
func (h *Header) Geometry() Geometry {
	return Geometry{Data: h.Data, Parity: h.Parity, AUSize: h.AUSize, WriteUnit: h.WriteUnit}
}

// Layout returns the layout of the segment the header belongs to.
func (h *Header) Layout() Layout {
	return Layout{Segment: h.Segment, Members: append([]Member(nil), h.Members...)}
}

// encodeHeader writes h into buf (len ≥ h.Size), zero-padding to h.Size.
func encodeHeader(buf []byte, h *Header) {
	le := binary.LittleEndian
	clear(buf[:h.Size])
	copy(buf, magic)
	le.PutUint16(buf[8:], version)
	le.PutUint16(buf[10:], uint16(h.Shard))
	le.PutUint16(buf[12:], uint16(h.Data))
	le.PutUint16(buf[14:], uint16(h.Parity))
	le.PutUint32(buf[16:], uint32(h.Size))
	le.PutUint32(buf[20:], uint32(h.WriteUnit))
	le.PutUint64(buf[24:], uint64(h.AUSize))
	copy(buf[32:48], h.Array[:])
	le.PutUint64(buf[48:], uint64(h.Segment))
	le.PutUint32(buf[56:], uint32(h.Segio))
	le.PutUint32(buf[60:], h.Flags)
	le.PutUint64(buf[64:], h.Stamp)
	le.PutUint64(buf[72:], h.SeqLo)
	le.PutUint64(buf[80:], h.SeqHi)
	le.PutUint32(buf[88:], h.Front)
	le.PutUint32(buf[92:], h.Back)
	le.PutUint32(buf[96:], h.MapOffset)
	le.PutUint32(buf[100:], h.MapCount)
	le.PutUint32(buf[104:], h.MapCRC)
	le.PutUint32(buf[108:], uint32(len(h.BlockCRCs)))
	p := headerFixed
	for _, m := range h.Members {
		le.PutUint32(buf[p:], uint32(m.Drive))
		le.PutUint32(buf[p+4:], uint32(m.AU))
		p += memberSize
	}
	for _, c := range h.BlockCRCs {
		le.PutUint32(buf[p:], c)
		p += 4
	}
	le.PutUint32(buf[p:], crc(buf[:p]))
}

// DecodeHeader parses and validates a unit header from the front of buf.
// It checks the magic, version, checksum and that every field is in range
// and consistent with the others; it never panics on any input. The result
// shares no memory with buf.
func DecodeHeader(buf []byte) (*Header, error) {
	le := binary.LittleEndian
	if len(buf) < headerFixed {
		return nil, fmt.Errorf("unit header: %d bytes, need %d: %w", len(buf), headerFixed, ErrCorrupt)
	}
	if string(buf[:8]) != magic {
		return nil, fmt.Errorf("unit header: bad magic: %w", ErrCorrupt)
	}
	if v := le.Uint16(buf[8:]); v != version {
		return nil, fmt.Errorf("unit header: version %d, want %d: %w", v, version, ErrCorrupt)
	}
	h := &Header{
		Shard:     int(le.Uint16(buf[10:])),
		Data:      int(le.Uint16(buf[12:])),
		Parity:    int(le.Uint16(buf[14:])),
		Size:      int64(le.Uint32(buf[16:])),
		WriteUnit: int64(le.Uint32(buf[20:])),
		AUSize:    int64(le.Uint64(buf[24:])),
		Segment:   ID(le.Uint64(buf[48:])),
		Segio:     int(le.Uint32(buf[56:])),
		Flags:     le.Uint32(buf[60:]),
		Stamp:     le.Uint64(buf[64:]),
		SeqLo:     le.Uint64(buf[72:]),
		SeqHi:     le.Uint64(buf[80:]),
		Front:     le.Uint32(buf[88:]),
		Back:      le.Uint32(buf[92:]),
		MapOffset: le.Uint32(buf[96:]),
		MapCount:  le.Uint32(buf[100:]),
		MapCRC:    le.Uint32(buf[104:]),
	}
	copy(h.Array[:], buf[32:48])
	nblocks := int64(le.Uint32(buf[108:]))
	g := h.Geometry()
	if g.AUSize > 1<<40 {
		return nil, fmt.Errorf("unit header: AU size %d: %w", g.AUSize, ErrCorrupt)
	}
	if err := g.Validate(); err != nil {
		return nil, fmt.Errorf("unit header: %w: %w", err, ErrCorrupt)
	}
	if h.Size != g.HeaderSize() || nblocks != int64(g.BodyBlocks()) {
		return nil, fmt.Errorf("unit header: size %d / %d blocks do not match geometry %v: %w", h.Size, nblocks, g, ErrCorrupt)
	}
	end := int64(headerFixed) + int64(memberSize*g.Width()) + 4*nblocks
	if int64(len(buf)) < end+4 {
		return nil, fmt.Errorf("unit header: %d bytes, need %d: %w", len(buf), end+4, ErrCorrupt)
	}
	if got, want := crc(buf[:end]), le.Uint32(buf[end:]); got != want {
		return nil, fmt.Errorf("unit header: checksum %08x, want %08x: %w", got, want, ErrCorrupt)
	}
	if h.Shard >= g.Width() || int64(h.Segio) >= int64(g.SegiosPerAU()) {
		return nil, fmt.Errorf("unit header: shard %d segio %d out of range for %v: %w", h.Shard, h.Segio, g, ErrCorrupt)
	}
	segio := uint64(g.SegioBytes())
	if uint64(h.Front) > segio || uint64(h.Back) > segio || h.Front > h.Back || h.MapOffset != h.Front ||
		uint64(h.MapOffset)+uint64(h.MapCount)*entrySize > uint64(h.Back) {
		return nil, fmt.Errorf("unit header: front %d back %d map %d×%d inconsistent: %w", h.Front, h.Back, h.MapOffset, h.MapCount, ErrCorrupt)
	}
	if h.SeqLo > h.SeqHi {
		return nil, fmt.Errorf("unit header: seq range %d..%d: %w", h.SeqLo, h.SeqHi, ErrCorrupt)
	}
	p := headerFixed
	h.Members = make([]Member, g.Width())
	for i := range h.Members {
		h.Members[i] = Member{Drive: int(le.Uint32(buf[p:])), AU: int64(le.Uint32(buf[p+4:]))}
		p += memberSize
	}
	h.BlockCRCs = make([]uint32, nblocks)
	for i := range h.BlockCRCs {
		h.BlockCRCs[i] = le.Uint32(buf[p:])
		p += 4
	}
	return h, nil
}

func encodeEntry(b []byte, e Entry) {
	le := binary.LittleEndian
	b[0] = byte(e.Kind)
	b[1], b[2], b[3] = 0, 0, 0
	le.PutUint32(b[4:], e.Offset)
	le.PutUint32(b[8:], e.Length)
	le.PutUint64(b[12:], e.SeqLo)
	le.PutUint64(b[20:], e.SeqHi)
}

// DecodeMap parses a content map of h.MapCount entries from buf and checks
// it against the header: its checksum, and that every item lies in the
// cblock area (front) or the log-record area (back) according to its kind.
func DecodeMap(h *Header, buf []byte) ([]Entry, error) {
	le := binary.LittleEndian
	n := int(h.MapCount)
	if len(buf) < n*entrySize {
		return nil, fmt.Errorf("content map: %d bytes, need %d: %w", len(buf), n*entrySize, ErrCorrupt)
	}
	if got := crc(buf[:n*entrySize]); got != h.MapCRC {
		return nil, fmt.Errorf("content map: checksum %08x, want %08x: %w", got, h.MapCRC, ErrCorrupt)
	}
	segio := uint64(h.Geometry().SegioBytes())
	out := make([]Entry, n)
	for i := range out {
		b := buf[i*entrySize:]
		e := Entry{Kind: Kind(b[0]), Offset: le.Uint32(b[4:]), Length: le.Uint32(b[8:]), SeqLo: le.Uint64(b[12:]), SeqHi: le.Uint64(b[20:])}
		end := uint64(e.Offset) + uint64(e.Length)
		switch {
		case e.Kind == Cblock && end <= uint64(h.Front):
		case e.Kind == Record && uint64(e.Offset) >= uint64(h.Back) && end <= segio:
		default:
			return nil, fmt.Errorf("content map: entry %d (%v @%d+%d) outside its area (front %d back %d): %w", i, e.Kind, e.Offset, e.Length, h.Front, h.Back, ErrCorrupt)
		}
		if e.SeqLo > e.SeqHi {
			return nil, fmt.Errorf("content map: entry %d seq %d..%d: %w", i, e.SeqLo, e.SeqHi, ErrCorrupt)
		}
		out[i] = e
	}
	return out, nil
}

func crc32Castagnoli(c uint32, b []byte) uint32 { return crc32.Update(c, castagnoli, b) }
