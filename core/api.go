package core

// This file is the engine's public contract, agreed before the engine was
// written so that the admin API, the CLI and cmd/shale's NBD adapter could
// be built beside it. The bodies are filled in by the engine; signatures
// change only with every caller.

import (
	"errors"
	"fmt"
	"log/slog"
	"syscall"
	"time"

	"github.com/shalestore/shale/backend"
	"github.com/shalestore/shale/core/segment"
)

// Error classes, tested with errors.Is. Each also wraps the syscall.Errno
// an NBD client should get, so the NBD adapter passes errors through.
var (
	// ErrNotFound: no volume or snapshot of that name.
	ErrNotFound = errors.New("not found")
	// ErrExists: a volume or snapshot of that name already exists.
	ErrExists = errors.New("already exists")
	// ErrInvalid: a bad name, size, range or alignment.
	ErrInvalid = fmt.Errorf("invalid argument: %w", syscall.EINVAL)
	// ErrReadOnly: a write to a snapshot.
	ErrReadOnly = fmt.Errorf("read-only: %w", syscall.EPERM)
	// ErrNoSpace: the array is full; nothing already stored was harmed.
	ErrNoSpace = fmt.Errorf("array full: %w", syscall.ENOSPC)
	// ErrInUse: a volume with snapshots or clones that depend on it cannot be
	// deleted this way, or the array is busy with a conflicting operation.
	ErrInUse = fmt.Errorf("in use: %w", syscall.EBUSY)
	// ErrClosed: the array is closed.
	ErrClosed = fmt.Errorf("array closed: %w", syscall.ESHUTDOWN)
	// ErrIO: data could not be read or written (too many drives failed,
	// data corrupt beyond repair).
	ErrIO = fmt.Errorf("I/O error: %w", syscall.EIO)
)

// Options configure Create and Open.
type Options struct {
	// Drives are the data drives, in the same order on every Open.
	Drives []backend.Device
	// NVRAM is the commit-log device.
	NVRAM backend.Device
	// Geometry is used by Create; Open reads it from the drives.
	Geometry segment.Geometry
	// CacheBytes bounds the cache of decompressed cblocks (default 256 MiB).
	CacheBytes int64
	// MetaCacheBytes bounds the pyramid page cache (default 128 MiB).
	MetaCacheBytes int64
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// CrashHook, if set, is called at each named crash point.
	CrashHook func(point string)
	// NoDedup turns inline deduplication off: every write stores its
	// data (compressed) whatever is already stored.
	NoDedup bool
	// DedupIndexBytes bounds the inline dedup index (default 64 MiB).
	DedupIndexBytes int64

	// dedupHash replaces dedup.Hash (tests force collisions with it).
	dedupHash func([]byte) uint64
}

// VolumeInfo describes a volume or a snapshot.
type VolumeInfo struct {
	// Name is "VOL" for a volume, "VOL@SNAP" for a snapshot.
	Name string `json:"name"`
	// Size in bytes, a multiple of 512.
	Size int64 `json:"size"`
	// Snapshot is true for snapshots (read-only).
	Snapshot bool `json:"snapshot"`
	// Origin is, for a snapshot, its volume; for a clone, the snapshot it
	// was cloned from ("VOL@SNAP"); empty otherwise.
	Origin string `json:"origin,omitempty"`
	// Created is when it was created.
	Created time.Time `json:"created"`
}

// SpaceStats counts space for the array or one volume.
type SpaceStats struct {
	// LogicalBytes is the non-zero data written and still mapped: what
	// the client would need without data reduction.
	LogicalBytes int64 `json:"logical_bytes"`
	// PhysicalBytes is what that data occupies on the drives after dedup
	// and compression, without parity.
	PhysicalBytes int64 `json:"physical_bytes"`
	// DataReduction is LogicalBytes / PhysicalBytes (0 when nothing is
	// stored).
	DataReduction float64 `json:"data_reduction"`
	// FreeBytes is the data capacity (without parity) still free: for a
	// volume, the array's.
	FreeBytes int64 `json:"free_bytes"`
}

// Stats is the array's state for `shale stats`.
type Stats struct {
	SpaceStats
	// CapacityBytes is the array's data capacity without parity.
	CapacityBytes int64 `json:"capacity_bytes"`
	// Volumes maps each volume and snapshot name to its figures.
	Volumes map[string]SpaceStats `json:"volumes"`
	// Counters are the engine's metrics by name (writes, reads, bytes,
	// cache hits, ...), for export later.
	Counters map[string]int64 `json:"counters"`
	// Partial says the space figures are incomplete: walking the block map
	// failed part way (the array was closing, or metadata could not be
	// read); the error is logged.
	Partial bool `json:"partial,omitempty"`
}

// SectorSize is the engine's addressing unit.
const SectorSize = 512

// Extent is a run of equal allocation status.
type Extent struct {
	Length int64
	// Hole: nothing is stored for the run (never written, trimmed).
	Hole bool
	// Zero: the run reads as zeros (holes and zeroed ranges).
	Zero bool
}
