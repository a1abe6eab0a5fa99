// Package cblock encodes cblocks: up to 32 KiB of logical data (a whole
// number of 512-byte sectors), compressed with zstd at a fast level, or
// stored raw when compression does not pay (it would save less than 1/8,
// or a sample of the data says it cannot: see probe.go).
// A cblock is the unit the segment writer stores and the read path fetches
// (paper §4.5); its header carries a checksum of the logical data, checked
// on every decode, so corruption anywhere (drive, memory, codec) surfaces
// as ErrCorrupt instead of wrong data.
//
// # Format (little-endian)
//
//	offset  size  field
//	     0     2  magic 'C' 'B'
//	     2     1  version, 1
//	     3     1  flags: 0 raw, 1 zstd; other values are corrupt
//	     4     2  logical sectors s, 1..64
//	     6     2  zero
//	     8     4  crc32c (Castagnoli) of the s*512 logical bytes
//	    12     …  payload: raw, exactly s*512 bytes; zstd, one zstd frame
//	              that decompresses to exactly s*512 bytes
//
// The encoded length is not stored: the block map records it (clen), and
// the segment's content map bounds it.
//
// # Memory
//
// zstd contexts are pooled (one compression and one decompression context
// per pooled Codec), so encoding and decoding allocate nothing in steady
// state when the caller's buffers are large enough.
package cblock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"

	"github.com/DataDog/zstd"
)

// Limits and format constants.
const (
	// SectorSize is the logical addressing unit.
	SectorSize = 512
	// MaxSectors bounds a cblock's logical size (32 KiB).
	MaxSectors = 64
	// MaxLogical is the largest logical size, in bytes.
	MaxLogical = MaxSectors * SectorSize
	// HeaderSize is the size of the header before the payload.
	HeaderSize = 12
	// Level is the zstd level used inline (fast; GC may recompress harder).
	Level = zstd.BestSpeed

	magic0, magic1 = 'C', 'B'
	version        = 1
	flagRaw        = 0
	flagZstd       = 1
)

// MaxEncoded is the largest encoded cblock: raw data is stored when
// compression saves less than 1/8, so an encoding is never longer than
// HeaderSize + MaxLogical.
const MaxEncoded = HeaderSize + MaxLogical

// Error classes.
var (
	// ErrCorrupt: the bytes are not a valid cblock, or its data does not
	// match its checksum.
	ErrCorrupt = errors.New("cblock: corrupt")
	// ErrSize: the logical data is empty, too long or not whole sectors.
	ErrSize = errors.New("cblock: bad logical size")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// codec is a pooled pair of zstd contexts with a compression buffer.
type codec struct {
	z   zstd.Ctx
	buf []byte // cap ≥ zstd.CompressBound(MaxLogical)
}

var codecs = sync.Pool{New: func() any {
	return &codec{z: zstd.NewCtx(), buf: make([]byte, 0, zstd.CompressBound(MaxLogical))}
}}

// Encode appends the cblock encoding of logical to dst and returns the
// extended slice. len(logical) must be a multiple of 512 in [512, 32 KiB].
// It allocates nothing when cap(dst)-len(dst) ≥ MaxEncoded.
func Encode(dst, logical []byte) ([]byte, error) {
	n := len(logical)
	if n == 0 || n > MaxLogical || n%SectorSize != 0 {
		return dst, fmt.Errorf("%w: %d bytes", ErrSize, n)
	}
	flag, z := byte(flagRaw), logical
	if worthCompressing(logical) {
		c := codecs.Get().(*codec)
		defer codecs.Put(c)
		if zc, err := c.z.CompressLevel(c.buf[:0], logical, Level); err == nil && len(zc) <= n-n/8 {
			flag, z = flagZstd, zc
		}
	}
	var h [HeaderSize]byte
	h[0], h[1], h[2], h[3] = magic0, magic1, version, flag
	binary.LittleEndian.PutUint16(h[4:], uint16(n/SectorSize))
	binary.LittleEndian.PutUint32(h[8:], crc32.Checksum(logical, castagnoli))
	dst = append(dst, h[:]...)
	return append(dst, z...), nil
}

// Header is a decoded cblock header.
type Header struct {
	// Sectors is the logical size in sectors.
	Sectors int
	// Compressed is true for a zstd payload.
	Compressed bool
	// CRC is the checksum of the logical data.
	CRC uint32
}

// ParseHeader checks and decodes the header of enc.
func ParseHeader(enc []byte) (Header, error) {
	if len(enc) < HeaderSize+1 {
		return Header{}, fmt.Errorf("%w: %d bytes", ErrCorrupt, len(enc))
	}
	if enc[0] != magic0 || enc[1] != magic1 || enc[2] != version {
		return Header{}, fmt.Errorf("%w: bad magic or version", ErrCorrupt)
	}
	if enc[3] > flagZstd || enc[6] != 0 || enc[7] != 0 {
		return Header{}, fmt.Errorf("%w: bad flags", ErrCorrupt)
	}
	s := int(binary.LittleEndian.Uint16(enc[4:]))
	if s < 1 || s > MaxSectors {
		return Header{}, fmt.Errorf("%w: %d sectors", ErrCorrupt, s)
	}
	return Header{Sectors: s, Compressed: enc[3] == flagZstd, CRC: binary.LittleEndian.Uint32(enc[8:])}, nil
}

// Decode decodes enc into dst, which must hold at least the cblock's
// logical size, verifies the checksum, and returns the logical size in
// bytes. dst's contents beyond it are untouched; on error dst's first
// bytes may have been overwritten. It allocates nothing.
func Decode(dst, enc []byte) (int, error) {
	h, err := ParseHeader(enc)
	if err != nil {
		return 0, err
	}
	n := h.Sectors * SectorSize
	if len(dst) < n {
		return 0, fmt.Errorf("cblock: decode of %d bytes into %d", n, len(dst))
	}
	payload := enc[HeaderSize:]
	if !h.Compressed {
		if len(payload) != n {
			return 0, fmt.Errorf("%w: raw payload of %d bytes, want %d", ErrCorrupt, len(payload), n)
		}
		copy(dst, payload)
	} else {
		c := codecs.Get().(*codec)
		got, err := c.z.DecompressInto(dst[:n], payload)
		codecs.Put(c)
		if err != nil {
			return 0, fmt.Errorf("%w: zstd: %v", ErrCorrupt, err)
		}
		if got != n {
			return 0, fmt.Errorf("%w: zstd payload gives %d bytes, want %d", ErrCorrupt, got, n)
		}
	}
	if crc32.Checksum(dst[:n], castagnoli) != h.CRC {
		return 0, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	return n, nil
}
