package segment

import (
	"fmt"
	"sync/atomic"

	"github.com/shalestore/shale/backend"
)

// Drives is the set of data drives segments are striped over, with the
// state readers and writers share: which drives are failed and which are
// busy writing. Drive i's AU a starts at byte Base + a*AUSize.
//
// INVARIANT: Devs, Base and Geometry do not change after NewDrives.
type Drives struct {
	Geometry Geometry
	// Base is where AU 0 starts on every drive (the boot region comes
	// first), a multiple of BlockSize.
	Base int64
	Devs []backend.Device

	busy   []atomic.Int32 // write units in flight per drive
	failed []atomic.Bool
}

// NewDrives checks that every device can hold the geometry and returns the
// shared drive state.
func NewDrives(g Geometry, base int64, devs []backend.Device) (*Drives, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	if base < 0 || base%BlockSize != 0 {
		return nil, fmt.Errorf("segment: AU base %d is not a multiple of %d", base, BlockSize)
	}
	minAUs := int64(-1)
	for i, d := range devs {
		if d.Alignment() > BlockSize {
			return nil, fmt.Errorf("segment: drive %d alignment %d exceeds %d", i, d.Alignment(), BlockSize)
		}
		if n := (d.Size() - base) / g.AUSize; minAUs < 0 || n < minAUs {
			minAUs = n
		}
	}
	if err := g.CheckDrives(len(devs), minAUs); err != nil {
		return nil, err
	}
	return &Drives{Geometry: g, Base: base, Devs: devs, busy: make([]atomic.Int32, len(devs)), failed: make([]atomic.Bool, len(devs))}, nil
}

// AUs returns how many whole AUs drive i holds.
func (d *Drives) AUs(i int) int64 { return (d.Devs[i].Size() - d.Base) / d.Geometry.AUSize }

// UnitOffset is the byte offset on its drive of member m's write unit of
// segio j.
func (d *Drives) UnitOffset(m Member, segio int) int64 {
	return d.Base + m.AU*d.Geometry.AUSize + int64(segio)*d.Geometry.WriteUnit
}

// Busy reports whether drive i is writing a write unit now. Readers treat a
// busy drive like a missing one when they can rebuild from the others.
func (d *Drives) Busy(i int) bool { return d.busy[i].Load() > 0 }

// Failed reports whether drive i has been marked failed.
func (d *Drives) Failed(i int) bool { return d.failed[i].Load() }

// SetFailed marks drive i failed (no more I/O is sent to it) or healthy.
func (d *Drives) SetFailed(i int, failed bool) { d.failed[i].Store(failed) }

// CheckLayout validates a layout against the drives: width, distinct drives
// in range, AUs in range.
func (d *Drives) CheckLayout(l Layout) error {
	if len(l.Members) != d.Geometry.Width() {
		return fmt.Errorf("segment %d: %d members, geometry needs %d: %w", l.Segment, len(l.Members), d.Geometry.Width(), ErrCorrupt)
	}
	// Every read checks its layout: a bitmap on the stack, not a map.
	var seenWords [8]uint64
	seen := seenWords[:]
	if n := (len(d.Devs) + 63) / 64; n > len(seenWords) {
		seen = make([]uint64, n)
	}
	for i, m := range l.Members {
		if m.Drive < 0 || m.Drive >= len(d.Devs) || seen[m.Drive/64]&(1<<(m.Drive%64)) != 0 {
			return fmt.Errorf("segment %d: member %d drive %d invalid or repeated: %w", l.Segment, i, m.Drive, ErrCorrupt)
		}
		seen[m.Drive/64] |= 1 << (m.Drive % 64)
		if m.AU < 0 || m.AU >= d.AUs(m.Drive) {
			return fmt.Errorf("segment %d: member %d AU %d beyond drive %d: %w", l.Segment, i, m.AU, m.Drive, ErrCorrupt)
		}
	}
	return nil
}
