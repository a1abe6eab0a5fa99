package core

// This file is the engine's public contract, agreed before the engine was
// written so that the admin API, the CLI and cmd/shale's NBD adapter could
// be built beside it. The bodies are filled in by the engine; signatures
// change only with every caller.

import (
	"context"
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
}

// Array is an open shale array. Its methods are safe for concurrent use.
type Array struct{}

// Create formats the devices as a new, empty array and opens it.
func Create(ctx context.Context, opts Options) (*Array, error) { panic("unimplemented") }

// Open recovers the array on the devices: every acknowledged write is back.
func Open(ctx context.Context, opts Options) (*Array, error) { panic("unimplemented") }

// Close flushes what is in flight and closes the array; the devices stay
// open (the caller owns them).
func (a *Array) Close(ctx context.Context) error { panic("unimplemented") }

// CreateVolume creates an empty volume. Names: 1-64 bytes of [A-Za-z0-9._-],
// not starting with '.' or '-'. Size: a positive multiple of 512.
func (a *Array) CreateVolume(ctx context.Context, name string, size int64) (VolumeInfo, error) {
	panic("unimplemented")
}

// ResizeVolume grows or shrinks a volume. Data beyond a shrunk end is gone;
// growing exposes zeros.
func (a *Array) ResizeVolume(ctx context.Context, name string, size int64) (VolumeInfo, error) {
	panic("unimplemented")
}

// DeleteVolume deletes a volume and its snapshots. Clones made from its
// snapshots stay readable.
func (a *Array) DeleteVolume(ctx context.Context, name string) error { panic("unimplemented") }

// Volumes lists the volumes (not snapshots), sorted by name.
func (a *Array) Volumes() []VolumeInfo { panic("unimplemented") }

// CreateSnapshot freezes volume's current contents as "volume@snap".
func (a *Array) CreateSnapshot(ctx context.Context, volume, snap string) (VolumeInfo, error) {
	panic("unimplemented")
}

// DeleteSnapshot deletes "volume@snap". Clones made from it stay readable.
func (a *Array) DeleteSnapshot(ctx context.Context, name string) error { panic("unimplemented") }

// Snapshots lists the snapshots of volume, or of every volume if volume is
// "", sorted by name.
func (a *Array) Snapshots(volume string) []VolumeInfo { panic("unimplemented") }

// Clone creates a new read-write volume whose contents start as those of
// the snapshot ("VOL@SNAP").
func (a *Array) Clone(ctx context.Context, snapshot, volume string) (VolumeInfo, error) {
	panic("unimplemented")
}

// Volume opens a volume or a snapshot ("VOL@SNAP") for I/O. The handle
// stays valid across resizes (Size follows) and fails with ErrNotFound
// once the volume is deleted.
func (a *Array) Volume(name string) (*Volume, error) { panic("unimplemented") }

// Stats returns the array's figures.
func (a *Array) Stats() Stats { panic("unimplemented") }

// Volume is an open volume or snapshot. Offsets and lengths are multiples
// of 512 (SectorSize); p's length too. Methods are safe for concurrent use.
// Every write is durable (in NVRAM) when its method returns: Flush and
// fua have nothing left to do, which is why MultiConn can be promised.
type Volume struct{}

// SectorSize is the engine's addressing unit.
const SectorSize = 512

// Name returns "VOL" or "VOL@SNAP".
func (v *Volume) Name() string { panic("unimplemented") }

// Size returns the current size in bytes.
func (v *Volume) Size() int64 { panic("unimplemented") }

// ReadOnly reports whether this is a snapshot.
func (v *Volume) ReadOnly() bool { panic("unimplemented") }

// ReadAt fills p with the data at off.
func (v *Volume) ReadAt(ctx context.Context, p []byte, off int64) error { panic("unimplemented") }

// WriteAt stores p at off, durably, before returning.
func (v *Volume) WriteAt(ctx context.Context, p []byte, off int64) error { panic("unimplemented") }

// Flush returns once every write that completed before it is durable.
func (v *Volume) Flush(ctx context.Context) error { panic("unimplemented") }

// Trim unmaps [off, off+length): it reads as zeros afterwards and its
// space is freed by GC.
func (v *Volume) Trim(ctx context.Context, off, length int64) error { panic("unimplemented") }

// WriteZeroes makes [off, off+length) read as zeros, as metadata only.
func (v *Volume) WriteZeroes(ctx context.Context, off, length int64) error { panic("unimplemented") }

// Extent is a run of equal allocation status.
type Extent struct {
	Length int64
	// Hole: nothing is stored for the run (never written, trimmed).
	Hole bool
	// Zero: the run reads as zeros (holes and zeroed ranges).
	Zero bool
}

// Extents appends to dst the status of a prefix of [off, off+length)
// starting at off, at least one extent, adjacent extents differing.
func (v *Volume) Extents(ctx context.Context, off, length int64, dst []Extent) ([]Extent, error) {
	panic("unimplemented")
}
