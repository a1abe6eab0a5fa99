package sim

import (
	"fmt"
	"time"

	"github.com/shalestore/shale/backend"
)

// PageSize is the FTL's mapping unit and the NAND page size: 4 KiB. Host
// writes that cover only part of a page cost a read-modify-write inside the
// drive (counted in Stats.RMWPages).
const PageSize = 4096

// Profile is the geometry and timing of a simulated drive. Its zero value
// means "the default profile for the Kind" (SSDProfile or NVRAMProfile).
//
// Timing: a die performs one NAND operation at a time; a multi-plane
// operation (one page on each of up to Planes planes of a die) takes the
// time of one. Dies work in parallel. Host reads take priority over queued
// programs and erases but wait for the one in progress (no program/erase
// suspend), which is the busy-drive stall the array's scheduler must dodge.
type Profile struct {
	// Name is informational ("ssd", "nvram", ...).
	Name string
	// Alignment is the logical block size the device reports: 512 or 4096.
	// It is also the granularity at which power loss tears writes.
	Alignment int
	// PagesPerBlock is the number of 4 KiB pages in an erase block.
	PagesPerBlock int
	// Dies are the independent NAND dies (parallel units).
	Dies int
	// Planes per die; a multi-plane operation touches one page per plane.
	Planes int
	// OverProvision is spare NAND as a fraction of the logical size
	// (0.07 = 7 %). Every plane gets at least three spare blocks (the FTL's
	// open blocks and GC reserve), which raises it on small devices.
	OverProvision float64
	// Read, Program and Erase are the NAND array times of one operation.
	Read, Program, Erase time.Duration
	// Command is the controller's fixed overhead per host command.
	Command time.Duration
	// Flush is the extra time of a Sync beyond waiting for queued programs.
	Flush time.Duration
	// LinkBytesPerSec is the host link bandwidth in each direction;
	// 0 means unlimited.
	LinkBytesPerSec int64
	// CacheBytes is the volatile write cache: writes return once their data
	// is in it and are programmed in the background. 0 means write-through
	// (a write returns when its pages are programmed). Either way a write
	// is durable only after Sync.
	CacheBytes int64
	// EnduranceCycles is the rated P/E cycles per block, for Stats.Wear.
	EnduranceCycles int
}

// SSDProfile is a mid-range TLC data drive: 1 MiB erase blocks, 8 dies of
// 4 planes, 60 µs reads, 400 µs programs, 3 ms erases, 7 % over-provisioning,
// a 3.2 GB/s link and an 8 MiB write cache.
func SSDProfile() Profile {
	return Profile{
		Name:            "ssd",
		Alignment:       512,
		PagesPerBlock:   256,
		Dies:            8,
		Planes:          4,
		OverProvision:   0.07,
		Read:            60 * time.Microsecond,
		Program:         400 * time.Microsecond,
		Erase:           3 * time.Millisecond,
		Command:         10 * time.Microsecond,
		Flush:           50 * time.Microsecond,
		LinkBytesPerSec: 3200 << 20,
		CacheBytes:      8 << 20,
		EnduranceCycles: 3000,
	}
}

// NVRAMProfile is a small, fast, high-endurance commit-log part (an
// NVDIMM-like device behind the same interface): microsecond operations,
// write-through, 25 % over-provisioning, ten million rated cycles.
func NVRAMProfile() Profile {
	return Profile{
		Name:            "nvram",
		Alignment:       512,
		PagesPerBlock:   64,
		Dies:            4,
		Planes:          1,
		OverProvision:   0.25,
		Read:            1 * time.Microsecond,
		Program:         2 * time.Microsecond,
		Erase:           20 * time.Microsecond,
		Command:         1 * time.Microsecond,
		Flush:           1 * time.Microsecond,
		LinkBytesPerSec: 8000 << 20,
		CacheBytes:      0,
		EnduranceCycles: 10_000_000,
	}
}

// ProfileFor returns the default profile of a kind.
func ProfileFor(k backend.Kind) Profile {
	if k == backend.NVRAM {
		return NVRAMProfile()
	}
	return SSDProfile()
}

// ZeroLatency returns p with every time and the link limit set to zero: the
// FTL, wear and faults are still modelled but I/O costs no (virtual or real)
// time. Use it where the sim must not be the bottleneck.
func (p Profile) ZeroLatency() Profile {
	p.Read, p.Program, p.Erase, p.Command, p.Flush = 0, 0, 0, 0, 0
	p.LinkBytesPerSec = 0
	return p
}

func (p Profile) isZero() bool { return p == Profile{} }

// validate checks every field, naming the first bad one.
func (p Profile) validate() error {
	switch {
	case p.Alignment != 512 && p.Alignment != 4096:
		return fmt.Errorf("profile: alignment %d is not 512 or 4096", p.Alignment)
	case p.PagesPerBlock < 1 || p.PagesPerBlock > 1<<16:
		return fmt.Errorf("profile: pages per block %d not in [1, 65536]", p.PagesPerBlock)
	case p.Dies < 1 || p.Dies > 1024:
		return fmt.Errorf("profile: dies %d not in [1, 1024]", p.Dies)
	case p.Planes < 1 || p.Planes > 16:
		return fmt.Errorf("profile: planes %d not in [1, 16]", p.Planes)
	case !(p.OverProvision >= 0 && p.OverProvision <= 4):
		return fmt.Errorf("profile: overprovision %v not in [0, 4]", p.OverProvision)
	case p.Read < 0 || p.Program < 0 || p.Erase < 0 || p.Command < 0 || p.Flush < 0:
		return fmt.Errorf("profile: negative latency")
	case p.LinkBytesPerSec < 0:
		return fmt.Errorf("profile: negative link bandwidth")
	case p.CacheBytes < 0:
		return fmt.Errorf("profile: negative cache size")
	}
	return nil
}

// Geometry is the NAND layout a device ended up with. Small devices get
// smaller erase blocks (down to 64 pages), then fewer planes and dies, than
// their profile asks for, so that every plane holds at least 32 blocks of
// logical data.
type Geometry struct {
	// Alignment is the logical block (sector) size.
	Alignment int
	// Pages is the number of logical 4 KiB pages (Size / 4096).
	Pages int64
	// PagesPerBlock, Dies and Planes as used.
	PagesPerBlock, Dies, Planes int
	// BlocksPerPlane and Blocks count physical erase blocks.
	BlocksPerPlane, Blocks int
	// OverProvision is the effective spare fraction:
	// physical pages / logical pages - 1.
	OverProvision float64
}

// Size limits.
const (
	// maxPhysPages bounds physical pages so a physical page number fits
	// the FTL's uint32 maps (with 0 reserved for "unmapped").
	maxPhysPages = 1<<32 - 2
	// minLogicalBlocksPerPlane is what geometry shrinking aims for, so
	// the GC reserve is a small part of a plane.
	minLogicalBlocksPerPlane = 32
	// reserveBlocksPerPlane is the least spare a plane gets, whatever the
	// over-provisioning: the host open block, the GC open block and one
	// erased block GC may always take. With it some plane always has room
	// (see ftl.go).
	reserveBlocksPerPlane = 3
)

// deriveGeometry lays a device of size bytes out on profile p's NAND. It is
// a pure function.
func deriveGeometry(size int64, p Profile) (Geometry, error) {
	if size <= 0 || size%PageSize != 0 {
		return Geometry{}, fmt.Errorf("size %d is not a positive multiple of %d", size, PageSize)
	}
	g := Geometry{Alignment: p.Alignment, Pages: size / PageSize, PagesPerBlock: p.PagesPerBlock, Dies: p.Dies, Planes: p.Planes}
	lbpp := func() int64 { // logical blocks per plane
		units := int64(g.Dies * g.Planes)
		return (g.Pages + units*int64(g.PagesPerBlock) - 1) / (units * int64(g.PagesPerBlock))
	}
	// Shrink erase blocks to 64 pages, then planes, then dies, then blocks
	// again, until each plane has enough blocks for GC to behave.
	for lbpp() < minLogicalBlocksPerPlane {
		switch {
		case g.PagesPerBlock > 64:
			g.PagesPerBlock /= 2
		case g.Planes > 1:
			g.Planes = (g.Planes + 1) / 2
		case g.Dies > 1:
			g.Dies = (g.Dies + 1) / 2
		case g.PagesPerBlock > 1:
			g.PagesPerBlock /= 2
		default:
			goto done
		}
	}
done:
	logical := lbpp()
	spare := max(int64(float64(logical)*p.OverProvision+0.999999), reserveBlocksPerPlane)
	g.BlocksPerPlane = int(logical + spare)
	phys := int64(g.BlocksPerPlane) * int64(g.Dies*g.Planes) * int64(g.PagesPerBlock)
	if phys > maxPhysPages || g.BlocksPerPlane > 1<<30 {
		return Geometry{}, fmt.Errorf("size %d too large for the simulator (%d physical pages)", size, phys)
	}
	g.Blocks = g.BlocksPerPlane * g.Dies * g.Planes
	g.OverProvision = float64(phys)/float64(g.Pages) - 1
	return g, nil
}
