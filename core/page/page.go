// Package page is the on-disk encoding of pyramid pages: a run of tuples of
// unsigned integer fields, sorted by their key fields, compressed with a
// per-page dictionary into fixed-width bit-packed tuples (Purity, SIGMOD
// 2015, §4.9). A page can be searched without decoding it: tuple i starts at
// bit i·T of the tuple area, so a binary search reads only the key fields of
// the tuples it visits, each in O(1).
//
// # Dictionary encoding
//
// Each field f has a dictionary entry: bases b_0 < b_1 < … < b_{B-1}, a width
// W and an optional stride S. The value v of field f in tuple i is stored as
// the pair ⟨x, o⟩ with
//
//	v = b_x + o + S·i   (mod 2^64)
//
// where x takes ⌈lg B⌉ bits and o takes W bits. Either may be zero bits: a
// field with the same value in every tuple of the page costs nothing, and a
// field that advances by a fixed step (the start of back-to-back runs of a
// sequentially written volume) costs nothing either. The stride is our
// extension of the paper's scheme; with S = 0 it is exactly the paper's.
// The encoder picks B, W and S per field and per page to minimise the
// page's size (dictionary included).
//
// Consecutive bases are at least 2^W apart, so the intervals [b_x, b_x+2^W)
// are disjoint and, for a field with S = 0, the code x·2^W + o is an
// order-preserving image of the value: FindEqual looks for a value by
// comparing raw bit patterns, never computing a value.
//
// # Layout, byte by byte
//
// All integers are little-endian; uvarint is encoding/binary's unsigned
// varint.
//
//	offset  size  field
//	     0     2  magic 'S' 'P'
//	     2     1  version, 1
//	     3     1  F, number of fields, 1..MaxFields
//	     4     1  K, number of key fields, 1..F (fields 0..K-1)
//	     5     3  reserved, zero
//	     8     4  length: bytes of the whole page, header to last tuple byte
//	    12     4  N, number of tuples, 0..MaxTuples
//	    16     8  tag: opaque to this package; the pyramid names the patch
//	              the page belongs to, so a reader detects a reused address
//	    24     4  crc32c (Castagnoli) of bytes [0,24) then [28,length)
//	    28     …  dictionary: F entries, one per field in order:
//	                1 byte   W, offset width in bits, 0..64
//	                1 byte   flags: bit 0 set when a stride follows; others 0
//	                uvarint  B, number of bases, ≥ 1
//	                uvarint  S, the stride (only when flags bit 0 is set)
//	                uvarint  b_0
//	                uvarint  d_x for x = 1..B-1, with b_x = b_{x-1} + d_x
//	                         and d_x ≥ 2^W (disjoint intervals; no wrap)
//	     D     …  tuple area: ceil(N·T/8) bytes, T = Σ_f (⌈lg B_f⌉ + W_f)
//	              bits per tuple. Field f of tuple i is the code
//	              c = x·2^W_f + o, ⌈lg B_f⌉ + W_f ≤ 64 bits wide, stored at
//	              bit i·T + Σ_{g<f} (⌈lg B_g⌉ + W_g), least significant bit
//	              first (bit j of the area is bit j%8 of byte j/8). Bits past
//	              N·T in the last byte are zero.
//
// For example the page of the three tuples (7, 100), (7, 164), (7, 228),
// both fields keys, encodes field 0 (constant 7) as W=0, B=1, b_0=7 (bytes 00 00 01 07) and
// field 1 as W=0, B=1, S=64, b_0=100 (bytes 00 01 01 40 64): T = 0, and the
// whole page is the 28-byte header and a 9-byte dictionary, with no tuple
// bytes at all.
//
// # Validation
//
// Decode checks everything before it returns a Page: magic, version,
// lengths, the checksum, every dictionary entry, that every tuple's base
// index x is < B, and that the key fields are strictly increasing. A page
// that passes can be read with any accessor without a panic. Values are
// defined modulo 2^64: a field never overflows, it wraps, and the encoder
// reproduces any uint64 exactly.
package page

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/bits"
)

// Format constants.
const (
	// HeaderSize is the size of the fixed page header.
	HeaderSize = 28
	// Version is the format version written and accepted.
	Version = 1
	// MaxFields bounds F.
	MaxFields = 32
	// MaxTuples bounds N.
	MaxTuples = 1 << 20
	// MaxPageBytes bounds a page's length.
	MaxPageBytes = 1 << 26

	magic0, magic1 = 'S', 'P'
	flagStride     = 1
)

// ErrCorrupt is the class of every decoding error: the bytes are not a page
// this package wrote (bad checksum, bad structure).
var ErrCorrupt = errors.New("page: corrupt")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// field is the decoded dictionary entry of one field.
type field struct {
	bases    []uint64
	stride   uint64
	omask    uint64 // 2^W - 1
	cmask    uint64 // 2^(⌈lg B⌉+W) - 1
	width    uint8  // W
	idxBits  uint8  // ⌈lg B⌉
	codeBits uint8  // ⌈lg B⌉ + W
	off      uint32 // bit offset of the field's code within a tuple
}

func lowMask(n uint) uint64 {
	if n >= 64 {
		return ^uint64(0)
	}
	return 1<<n - 1
}

// Page is a decoded page header and dictionary over the page's bytes. The
// tuples stay bit-packed; accessors extract single fields.
//
// A Page keeps a reference to the buffer it was decoded from; the caller
// must not modify the buffer while the Page is in use. A Page is immutable
// and safe for concurrent use.
type Page struct {
	raw       []byte // exactly the page's length
	tuples    []byte // the tuple area
	n         int
	nfields   int
	nkeys     int
	tag       uint64
	tupleBits uint64
	fields    []field // one per field, F long
}

// Len returns the number of tuples.
func (p *Page) Len() int { return p.n }

// Fields returns the number of fields per tuple.
func (p *Page) Fields() int { return p.nfields }

// Keys returns the number of key fields.
func (p *Page) Keys() int { return p.nkeys }

// Tag returns the page's owner tag.
func (p *Page) Tag() uint64 { return p.tag }

// Bytes returns the encoded page (exactly its length). The caller must not
// modify it.
func (p *Page) Bytes() []byte { return p.raw }

// TupleBits returns T, the width of one tuple in bits.
func (p *Page) TupleBits() int { return int(p.tupleBits) }

// Value returns field f of tuple i.
// REQUIRES: 0 ≤ i < Len(), 0 ≤ f < Fields().
func (p *Page) Value(i, f int) uint64 {
	fd := &p.fields[f]
	if fd.codeBits == 0 {
		return fd.bases[0] + fd.stride*uint64(i)
	}
	pos := uint64(i)*p.tupleBits + uint64(fd.off)
	var c uint64
	if j, s := pos>>3, uint(pos&7); j+9 <= uint64(len(p.tuples)) {
		c = binary.LittleEndian.Uint64(p.tuples[j:j+8]) >> s
		if s+uint(fd.codeBits) > 64 {
			c |= uint64(p.tuples[j+8]) << (64 - s)
		}
	} else {
		c = getBits(p.tuples, pos, uint(fd.codeBits)) // the last bytes
	}
	c &= fd.cmask
	// A shift by 64 (W = 64) yields 0 in Go: x = 0, the only base.
	return fd.bases[c>>fd.width] + c&fd.omask + fd.stride*uint64(i)
}

// Tuple appends the fields of tuple i to dst and returns it.
func (p *Page) Tuple(i int, dst []uint64) []uint64 {
	for f := 0; f < p.nfields; f++ {
		dst = append(dst, p.Value(i, f))
	}
	return dst
}

// Compare compares the first len(probe) fields of tuple i with probe
// lexicographically, returning -1, 0 or +1.
// REQUIRES: len(probe) ≤ Fields().
func (p *Page) Compare(i int, probe []uint64) int {
	for f, pv := range probe {
		v := p.Value(i, f)
		if v != pv {
			if v < pv {
				return -1
			}
			return 1
		}
	}
	return 0
}

// SearchGE returns the smallest i with tuple i's first len(probe) fields ≥
// probe, or Len() if there is none. Keys are sorted, so it is a binary
// search that reads only key fields of O(log N) tuples.
// REQUIRES: len(probe) ≤ Keys().
func (p *Page) SearchGE(probe []uint64) int {
	lo, hi := 0, p.n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if p.Compare(m, probe) < 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// SearchGT returns the smallest i with tuple i's first len(probe) fields >
// probe, or Len(). SearchGT(probe)-1 is the last tuple ≤ probe.
// REQUIRES: len(probe) ≤ Keys().
func (p *Page) SearchGT(probe []uint64) int {
	lo, hi := 0, p.n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if p.Compare(m, probe) <= 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// FindEqual returns the smallest i ≥ from whose field f equals v, or Len().
// For a field without a stride it compares raw bit patterns: v is encoded
// once into the page's dictionary and no tuple value is computed.
func (p *Page) FindEqual(f int, v uint64, from int) int {
	if from < 0 {
		from = 0
	}
	fd := &p.fields[f]
	if fd.stride != 0 {
		for i := from; i < p.n; i++ {
			if p.Value(i, f) == v {
				return i
			}
		}
		return p.n
	}
	// Encode v: the last base ≤ v, and the offset from it.
	x := len(fd.bases) - 1
	for x >= 0 && fd.bases[x] > v {
		x-- // bases are few; a linear scan from the top is fine
	}
	if x < 0 {
		return p.n
	}
	o := v - fd.bases[x]
	w := uint(fd.width)
	var code uint64
	if w == 64 {
		code = o
	} else {
		if o>>w != 0 {
			return p.n // falls between intervals: not in the page
		}
		code = uint64(x)<<w | o
	}
	width := uint(fd.idxBits) + w
	pos := uint64(from)*p.tupleBits + uint64(fd.off)
	for i := from; i < p.n; i++ {
		if getBits(p.tuples, pos, width) == code {
			return i
		}
		pos += p.tupleBits
	}
	return p.n
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

// PeekLength returns the length recorded in an encoded page's header, so a
// reader that fetched a larger buffer knows where the page ends. It checks
// only the magic and version.
func PeekLength(buf []byte) (int, error) {
	if len(buf) < HeaderSize {
		return 0, corrupt("%d bytes, shorter than the header", len(buf))
	}
	if buf[0] != magic0 || buf[1] != magic1 || buf[2] != Version {
		return 0, corrupt("bad magic or version %x", buf[:3])
	}
	return int(binary.LittleEndian.Uint32(buf[8:])), nil
}

// Decode validates buf as a page and returns it decoded. buf may extend past
// the page's length (the rest is ignored). Errors are ErrCorrupt. The Page
// references buf (see Page).
func Decode(buf []byte) (*Page, error) {
	p := new(Page)
	if err := p.decode(buf); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Page) decode(buf []byte) error {
	length, err := PeekLength(buf)
	if err != nil {
		return err
	}
	if length < HeaderSize || length > len(buf) || length > MaxPageBytes {
		return corrupt("length %d outside [%d, %d]", length, HeaderSize, min(len(buf), MaxPageBytes))
	}
	buf = buf[:length]
	sum := crc32.Update(crc32.Checksum(buf[:24], castagnoli), castagnoli, buf[28:])
	if want := binary.LittleEndian.Uint32(buf[24:]); sum != want {
		return corrupt("checksum %08x, header says %08x", sum, want)
	}
	nf, nk := int(buf[3]), int(buf[4])
	if nf < 1 || nf > MaxFields || nk < 1 || nk > nf {
		return corrupt("%d fields, %d keys", nf, nk)
	}
	if buf[5]|buf[6]|buf[7] != 0 {
		return corrupt("reserved bytes %x", buf[5:8])
	}
	n := binary.LittleEndian.Uint32(buf[12:])
	if n > MaxTuples {
		return corrupt("%d tuples, more than %d", n, MaxTuples)
	}
	*p = Page{raw: buf, n: int(n), nfields: nf, nkeys: nk, tag: binary.LittleEndian.Uint64(buf[16:])}

	// Dictionary: first pass to size the shared bases slice.
	pos := HeaderSize
	uv := func() (uint64, bool) {
		v, k := binary.Uvarint(buf[pos:])
		if k <= 0 {
			return 0, false
		}
		pos += k
		return v, true
	}
	type entry struct {
		w, flags   uint8
		nb, stride uint64
		basesAt    int
	}
	var ents [MaxFields]entry
	total := 0
	for f := 0; f < nf; f++ {
		if pos+2 > len(buf) {
			return corrupt("dictionary of field %d truncated", f)
		}
		e := entry{w: buf[pos], flags: buf[pos+1]}
		pos += 2
		if e.w > 64 || e.flags&^flagStride != 0 {
			return corrupt("field %d: width %d flags %#x", f, e.w, e.flags)
		}
		var ok bool
		if e.nb, ok = uv(); !ok || e.nb < 1 || e.nb > uint64(max(n, 1)) {
			return corrupt("field %d: %d bases for %d tuples", f, e.nb, n)
		}
		if e.flags&flagStride != 0 {
			if e.stride, ok = uv(); !ok {
				return corrupt("field %d: stride truncated", f)
			}
		}
		if e.w == 64 && e.nb != 1 {
			return corrupt("field %d: width 64 with %d bases", f, e.nb)
		}
		if uint(bits.Len64(e.nb-1))+uint(e.w) > 64 {
			return corrupt("field %d: code wider than 64 bits", f)
		}
		e.basesAt = pos
		// Each base takes at least one byte: bound B by the bytes left.
		if e.nb > uint64(len(buf)-pos) {
			return corrupt("field %d: %d bases in %d bytes", f, e.nb, len(buf)-pos)
		}
		for x := uint64(0); x < e.nb; x++ {
			if _, ok := uv(); !ok {
				return corrupt("field %d: base %d truncated", f, x)
			}
		}
		ents[f] = e
		total += int(e.nb)
	}
	all := make([]uint64, total)
	p.fields = make([]field, nf)
	var tbits uint64
	for f := 0; f < nf; f++ {
		e := ents[f]
		pos = e.basesAt
		bs := all[:e.nb:e.nb]
		all = all[e.nb:]
		var b uint64
		for x := range bs {
			d, _ := uv()
			if x > 0 {
				if e.w < 64 && d < 1<<e.w {
					return corrupt("field %d: bases %d and %d closer than 2^%d", f, x-1, x, e.w)
				}
				if b+d < b {
					return corrupt("field %d: base %d wraps", f, x)
				}
			}
			b += d
			bs[x] = b
		}
		fd := &p.fields[f]
		fd.bases, fd.stride, fd.width = bs, e.stride, e.w
		fd.idxBits = uint8(bits.Len64(e.nb - 1))
		fd.codeBits = fd.idxBits + fd.width
		fd.omask, fd.cmask = lowMask(uint(fd.width)), lowMask(uint(fd.codeBits))
		fd.off = uint32(tbits)
		tbits += uint64(fd.codeBits)
	}
	p.tupleBits = tbits
	areaBytes := (uint64(n)*tbits + 7) / 8
	if uint64(len(buf)-pos) != areaBytes {
		return corrupt("tuple area %d bytes, want %d for %d tuples of %d bits", len(buf)-pos, areaBytes, n, tbits)
	}
	p.tuples = buf[pos:]
	if rem := uint(uint64(n) * tbits % 8); rem != 0 && p.tuples[len(p.tuples)-1]>>rem != 0 {
		return corrupt("padding bits set")
	}
	// Every base index must name a base.
	for f := 0; f < nf; f++ {
		fd := &p.fields[f]
		nb := uint64(len(fd.bases))
		if nb == 1<<fd.idxBits {
			continue // every index is valid
		}
		w := uint(fd.width)
		for i := 0; i < p.n; i++ {
			if x := getBits(p.tuples, uint64(i)*tbits+uint64(fd.off), uint(fd.idxBits)+w) >> w; x >= nb {
				return corrupt("tuple %d field %d: base index %d of %d", i, f, x, nb)
			}
		}
	}
	// Keys strictly increasing.
	var prev, cur [MaxFields]uint64
	for i := 0; i < p.n; i++ {
		c := 0
		for f := 0; f < p.nkeys; f++ {
			cur[f] = p.Value(i, f)
			if c == 0 && cur[f] != prev[f] {
				c = 1
				if cur[f] < prev[f] {
					c = -1
				}
			}
		}
		if i > 0 && c <= 0 {
			return corrupt("tuple %d key not greater than tuple %d", i, i-1)
		}
		copy(prev[:p.nkeys], cur[:p.nkeys])
	}
	return nil
}
