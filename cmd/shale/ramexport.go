package main

import (
	"context"
	"sync"

	"github.com/shalestore/shale/core/ram"
	"github.com/shalestore/shale/nbd"
)

// ramExport adapts a ram.Volume to nbd.Export; core/ram does not import
// nbd.
type ramExport struct {
	v        *ram.Volume
	readOnly bool   // config read_only
	minBlock uint32 // config min_block_size; 0: 1
}

var (
	_ nbd.Export    = ramExport{}
	_ nbd.PinReader = ramExport{}
	_ nbd.Pin       = (*ram.Lease)(nil)
)

func (e ramExport) Size() int64 { return e.v.Size() }

func (e ramExport) Features() nbd.Features {
	return nbd.Features{
		ReadOnly:    e.readOnly,
		Flush:       true,
		Trim:        true,
		WriteZeroes: true,
		FastZero:    true,
		Cache:       true,
		Extents:     true,
		MultiConn:   true,
		NonBlocking: true, // memory only: no call waits
		BlockSize:   nbd.BlockSize{Min: max(e.minBlock, 1), Preferred: ram.PageSize, Max: 32 << 20},
	}
}

func (e ramExport) ReadAt(ctx context.Context, p []byte, off int64) error {
	return e.v.ReadAt(ctx, p, off)
}

// PinRead lets the server send READ replies straight from the volume's
// pages (zero-copy).
func (e ramExport) PinRead(ctx context.Context, off, length int64, iov [][]byte) ([][]byte, nbd.Pin, error) {
	iov, l, err := e.v.PinRead(ctx, off, length, iov)
	if l == nil {
		return iov, nil, err // not a typed nil in the interface
	}
	return iov, l, err
}

func (e ramExport) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	return e.v.WriteAt(ctx, p, off, fua)
}

func (e ramExport) Flush(ctx context.Context) error { return e.v.Flush(ctx) }

func (e ramExport) Trim(ctx context.Context, off, length int64, fua bool) error {
	return e.v.Trim(ctx, off, length, fua)
}

func (e ramExport) WriteZeroes(ctx context.Context, off, length int64, f nbd.ZeroFlags) error {
	return e.v.WriteZeroes(ctx, off, length, ram.ZeroFlags(f))
}

func (e ramExport) Cache(ctx context.Context, off, length int64) error {
	return e.v.Cache(ctx, off, length)
}

var extentScratch = sync.Pool{New: func() any { s := make([]ram.Extent, 0, 64); return &s }}

func (e ramExport) Extents(ctx context.Context, off, length int64, dst []nbd.Extent) ([]nbd.Extent, error) {
	sp := extentScratch.Get().(*[]ram.Extent)
	defer extentScratch.Put(sp)
	ext, err := e.v.Extents(ctx, off, length, (*sp)[:0])
	*sp = ext[:0]
	if err != nil {
		return dst, err
	}
	for _, x := range ext {
		dst = append(dst, nbd.Extent{Length: x.Length, Flags: nbd.ExtentFlags(x.Flags)})
	}
	return dst, nil
}
