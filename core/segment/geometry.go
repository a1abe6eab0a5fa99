package segment

import (
	"errors"
	"fmt"
)

// BlockSize is the checksum granularity inside a write unit: every 4096-byte
// block of a unit's body has its own crc32c in the unit header, so a read of
// a small range verifies only the blocks it touches. Unit headers are padded
// to a multiple of it, so bodies start block-aligned on every device.
const BlockSize = 4096

// MaxShards is the largest data+parity the Reed-Solomon coder allows in the
// byte-oriented mode we use.
const MaxShards = 256

// ErrGeometry classifies an invalid geometry or a geometry the drives cannot
// hold.
var ErrGeometry = errors.New("invalid geometry")

// Geometry is the layout of every segment of an array: Data+Parity drives,
// one AU on each; each AU written one write unit at a time.
type Geometry struct {
	// Data is k, the number of data shards of a segio (≥ 1).
	Data int
	// Parity is m, the number of parity shards (≥ 0); a segio survives the
	// loss of any m of its k+m write units.
	Parity int
	// AUSize is the size of an allocation unit in bytes, a multiple of
	// WriteUnit.
	AUSize int64
	// WriteUnit is the size of one write unit (one drive's share of a
	// segio) in bytes, a multiple of BlockSize.
	WriteUnit int64
}

// DefaultGeometry is 7+2 with 8 MiB AUs and 1 MiB write units.
func DefaultGeometry() Geometry {
	return Geometry{Data: 7, Parity: 2, AUSize: 8 << 20, WriteUnit: 1 << 20}
}

// String formats g as "7+2 au=8388608 wu=1048576".
func (g Geometry) String() string {
	return fmt.Sprintf("%d+%d au=%d wu=%d", g.Data, g.Parity, g.AUSize, g.WriteUnit)
}

// Width is k+m, the number of drives (and AUs) a segment spans.
func (g Geometry) Width() int { return g.Data + g.Parity }

// SegiosPerAU is the number of segios in a segment.
func (g Geometry) SegiosPerAU() int { return int(g.AUSize / g.WriteUnit) }

// HeaderSize is the size of the unit header at the front of every write
// unit: the fixed fields, the member list and one crc32c per body block,
// rounded up to BlockSize.
func (g Geometry) HeaderSize() int64 {
	n := int64(headerFixed) + int64(memberSize*g.Width()) + 4*(g.WriteUnit/BlockSize) + 4
	return (n + BlockSize - 1) / BlockSize * BlockSize
}

// BodySize is the part of a write unit after its header: data shards carry
// segio payload there, parity shards carry parity of the data bodies.
func (g Geometry) BodySize() int64 { return g.WriteUnit - g.HeaderSize() }

// BodyBlocks is the number of checksummed blocks in a body.
func (g Geometry) BodyBlocks() int { return int(g.BodySize() / BlockSize) }

// SegioBytes is the logical payload of one segio: the data shards' bodies
// laid end to end. Cblocks, the content map and log records share it.
func (g Geometry) SegioBytes() int64 { return int64(g.Data) * g.BodySize() }

// SegmentBytes is the logical data space of a segment; Addr offsets are in
// [0, SegmentBytes).
func (g Geometry) SegmentBytes() int64 { return int64(g.SegiosPerAU()) * g.SegioBytes() }

// Validate checks the geometry on its own, returning every problem found,
// each wrapping ErrGeometry.
func (g Geometry) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("geometry: %s: %w", fmt.Sprintf(format, args...), ErrGeometry))
	}
	if g.Data < 1 {
		bad("data must be at least 1, got %d", g.Data)
	}
	if g.Parity < 0 {
		bad("parity must not be negative, got %d", g.Parity)
	}
	if g.Data >= 1 && g.Parity >= 0 && g.Width() > MaxShards {
		bad("data+parity is %d; Reed-Solomon allows at most %d", g.Width(), MaxShards)
	}
	switch {
	case g.WriteUnit <= 0 || g.WriteUnit%BlockSize != 0:
		bad("write_unit %d is not a positive multiple of %d", g.WriteUnit, BlockSize)
	case g.WriteUnit > 1<<30:
		bad("write_unit %d is larger than 1 GiB", g.WriteUnit)
	case g.Data >= 1 && g.Parity >= 0 && g.Width() <= MaxShards && g.BodySize() < BlockSize:
		bad("write_unit %d leaves no room for data after its %d-byte header", g.WriteUnit, g.HeaderSize())
	case g.Data >= 1 && g.Parity >= 0 && g.Width() <= MaxShards && g.SegioBytes() > 1<<32-1:
		bad("a segio of %d data write units of %d bytes exceeds 4 GiB", g.Data, g.WriteUnit)
	}
	if g.AUSize <= 0 || (g.WriteUnit > 0 && g.AUSize%g.WriteUnit != 0) {
		bad("au_size %d is not a positive multiple of write_unit %d", g.AUSize, g.WriteUnit)
	}
	return errors.Join(errs...)
}

// CheckDrives checks that drives drives, each with at least minAUs whole AUs
// after its boot region, can hold segments of this geometry.
func (g Geometry) CheckDrives(drives int, minAUs int64) error {
	if err := g.Validate(); err != nil {
		return err
	}
	if drives < g.Width() {
		return fmt.Errorf("geometry: data+parity is %d+%d=%d but only %d drives are available: %w", g.Data, g.Parity, g.Width(), drives, ErrGeometry)
	}
	if minAUs < 1 {
		return fmt.Errorf("geometry: a drive holds no whole AU of %d bytes after its boot region: %w", g.AUSize, ErrGeometry)
	}
	return nil
}
