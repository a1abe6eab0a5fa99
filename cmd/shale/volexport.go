package main

import (
	"context"
	"sort"
	"strings"
	"sync"

	"github.com/shalestore/shale/core"
	"github.com/shalestore/shale/nbd"
)

// volumeHandle is what the NBD adapter needs of an engine volume: the
// methods of *core.Volume, so the adapter can be tested on a fake.
type volumeHandle interface {
	Name() string
	Size() int64
	ReadOnly() bool
	ReadAt(ctx context.Context, p []byte, off int64) error
	WriteAt(ctx context.Context, p []byte, off int64) error
	Flush(ctx context.Context) error
	Trim(ctx context.Context, off, length int64) error
	WriteZeroes(ctx context.Context, off, length int64) error
	Extents(ctx context.Context, off, length int64, dst []core.Extent) ([]core.Extent, error)
}

var _ volumeHandle = (*core.Volume)(nil)

// Block sizes advertised for engine volumes: the engine addresses 512-byte
// sectors, builds cblocks of up to 32 KiB from 4 KiB-friendly writes, and
// takes requests up to the NBD server's payload limit.
const (
	engineMinBlock       = core.SectorSize
	enginePreferredBlock = 4096
	engineMaxBlock       = 32 << 20
)

// volumeExport adapts an engine volume or snapshot to nbd.Export. core
// never imports nbd; this adapter is the only place they meet.
//
// Every engine write is durable when it returns (it is in NVRAM), so FUA
// and Flush cost next to nothing; they still call Volume.Flush, which is
// the engine's promise for writes acknowledged on other connections too,
// and so MultiConn is advertised.
type volumeExport struct {
	v        volumeHandle
	readOnly bool   // config read_only; snapshots are read-only anyway
	minBlock uint32 // config min_block_size; raised to engineMinBlock
}

var _ nbd.Export = volumeExport{}

func (e volumeExport) Size() int64 { return e.v.Size() }

func (e volumeExport) Features() nbd.Features {
	return nbd.Features{
		ReadOnly:    e.readOnly || e.v.ReadOnly(),
		Flush:       true,
		Trim:        true,
		WriteZeroes: true,
		FastZero:    true, // zeroing is metadata only
		Cache:       true,
		Extents:     true,
		MultiConn:   true,
		BlockSize:   nbd.BlockSize{Min: max(e.minBlock, engineMinBlock), Preferred: enginePreferredBlock, Max: engineMaxBlock},
	}
}

func (e volumeExport) ReadAt(ctx context.Context, p []byte, off int64) error {
	return e.v.ReadAt(ctx, p, off)
}

func (e volumeExport) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if err := e.v.WriteAt(ctx, p, off); err != nil {
		return err
	}
	if fua {
		return e.v.Flush(ctx)
	}
	return nil
}

func (e volumeExport) Flush(ctx context.Context) error { return e.v.Flush(ctx) }

func (e volumeExport) Trim(ctx context.Context, off, length int64, fua bool) error {
	if err := e.v.Trim(ctx, off, length); err != nil {
		return err
	}
	if fua {
		return e.v.Flush(ctx)
	}
	return nil
}

// WriteZeroes zeroes as metadata. NoHole is honoured as far as the array
// can: a log-structured array reserves no space for a range, so a later
// write there may, like any write, fail with ENOSPC on a full array.
// FastZero always succeeds: there is nothing slow to avoid.
func (e volumeExport) WriteZeroes(ctx context.Context, off, length int64, f nbd.ZeroFlags) error {
	if err := e.v.WriteZeroes(ctx, off, length); err != nil {
		return err
	}
	if f.FUA {
		return e.v.Flush(ctx)
	}
	return nil
}

// Cache is a hint; the engine's cblock cache fills on reads, so there is
// nothing useful to do that a read would not do better.
func (e volumeExport) Cache(ctx context.Context, off, length int64) error { return nil }

var coreExtentScratch = sync.Pool{New: func() any { s := make([]core.Extent, 0, 64); return &s }}

func (e volumeExport) Extents(ctx context.Context, off, length int64, dst []nbd.Extent) ([]nbd.Extent, error) {
	sp := coreExtentScratch.Get().(*[]core.Extent)
	defer coreExtentScratch.Put(sp)
	ext, err := e.v.Extents(ctx, off, length, (*sp)[:0])
	*sp = ext[:0]
	if err != nil {
		return dst, err
	}
	for _, x := range ext {
		var f nbd.ExtentFlags
		if x.Hole {
			f |= nbd.ExtentHole
		}
		if x.Zero {
			f |= nbd.ExtentZero
		}
		dst = append(dst, nbd.Extent{Length: x.Length, Flags: f})
	}
	return dst, nil
}

// engineLookup is what liveExports needs of the array.
type engineLookup interface {
	// volume opens a volume or snapshot by name.
	volume(name string) (volumeHandle, error)
	Volumes() []core.VolumeInfo
	Snapshots(volume string) []core.VolumeInfo
}

// coreLookup is engineLookup on the real array.
type coreLookup struct{ *core.Array }

func (a coreLookup) volume(name string) (volumeHandle, error) { return a.Volume(name) }

// exportOptions are a configured volume's NBD settings.
type exportOptions struct {
	description string
	readOnly    bool
	minBlock    uint32
}

// liveExports serves RAM volumes from the configuration and every volume
// and snapshot of the array, looked up when a client asks, so volumes
// created through the admin API are served at once and deleted ones
// disappear (connections already open fail with the engine's errors).
// A RAM volume shadows an engine volume of the same name.
type liveExports struct {
	ram  *nbd.ExportSet
	arr  engineLookup // nil when the engine does not run
	def  string       // the export for the empty name; "" for the first listed
	opts map[string]exportOptions
	// order lists configured volume names in configuration order; List
	// puts them first.
	order []string
}

var _ nbd.Exports = (*liveExports)(nil)

// Lookup implements nbd.Exports. The empty name is the first configured
// volume or, once that is gone (deleted through the admin API), the first
// export List gives.
func (x *liveExports) Lookup(name string) (nbd.Export, nbd.ExportInfo, bool) {
	if name != "" {
		return x.lookup(name)
	}
	if x.def != "" {
		if exp, info, ok := x.lookup(x.def); ok {
			return exp, info, true
		}
	}
	for _, info := range x.List() {
		if exp, info, ok := x.lookup(info.Name); ok {
			return exp, info, true
		}
	}
	return nil, nbd.ExportInfo{}, false
}

func (x *liveExports) lookup(name string) (nbd.Export, nbd.ExportInfo, bool) {
	if exp, info, ok := x.ram.Lookup(name); ok {
		return exp, info, true
	}
	if x.arr == nil {
		return nil, nbd.ExportInfo{}, false
	}
	v, err := x.arr.volume(name)
	if err != nil {
		// ErrNotFound, or the array is closing: either way nothing to
		// serve; the NBD server tells the client the export is unknown.
		return nil, nbd.ExportInfo{}, false
	}
	o := x.opts[name]
	info := nbd.ExportInfo{Name: v.Name(), Description: o.description}
	if info.Description == "" && v.ReadOnly() {
		info.Description = snapshotDescription(info.Name)
	}
	return volumeExport{v: v, readOnly: o.readOnly, minBlock: o.minBlock}, info, true
}

// List implements nbd.Exports: configured volumes in configuration order,
// then the array's other volumes, then its snapshots, each sorted by name.
func (x *liveExports) List() []nbd.ExportInfo {
	var out []nbd.ExportInfo
	seen := map[string]bool{}
	var engine map[string]bool
	if x.arr != nil {
		engine = map[string]bool{}
		for _, v := range x.arr.Volumes() {
			engine[v.Name] = true
		}
	}
	ram := map[string]nbd.ExportInfo{}
	for _, info := range x.ram.List() {
		ram[info.Name] = info
	}
	for _, name := range x.order {
		if info, ok := ram[name]; ok {
			out = append(out, info)
			seen[name] = true
		} else if engine[name] {
			out = append(out, nbd.ExportInfo{Name: name, Description: x.opts[name].description})
			seen[name] = true
		}
	}
	if x.arr == nil {
		return out
	}
	var rest []string
	for name := range engine {
		if !seen[name] {
			rest = append(rest, name)
		}
	}
	sort.Strings(rest)
	for _, name := range rest {
		out = append(out, nbd.ExportInfo{Name: name, Description: x.opts[name].description})
	}
	for _, s := range x.arr.Snapshots("") {
		if !seen[s.Name] {
			out = append(out, nbd.ExportInfo{Name: s.Name, Description: snapshotDescription(s.Name)})
		}
	}
	return out
}

// snapshotDescription describes snapshot "VOL@SNAP" to clients that list
// exports.
func snapshotDescription(name string) string {
	vol, _, _ := strings.Cut(name, "@")
	return "snapshot of " + vol + " (read-only)"
}
