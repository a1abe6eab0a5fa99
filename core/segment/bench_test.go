package segment

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"

	"github.com/shalestore/shale/backend"
	"github.com/shalestore/shale/backend/file"
)

// benchDrives opens n file-backed drives of size bytes in a temporary
// directory on disk.
func benchDrives(b *testing.B, n int, size int64) []backend.Device {
	slog.SetDefault(slog.New(slog.DiscardHandler)) // the file backend logs every open
	dir := b.TempDir()
	var devs []backend.Device
	for i := range n {
		d, err := file.Open(backend.Spec{Name: fmt.Sprintf("drives[%d]", i), Backend: "file", Path: filepath.Join(dir, fmt.Sprintf("d%d", i)), Size: size, Kind: backend.SSD})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { d.Close() })
		devs = append(devs, d)
	}
	return devs
}

// cycling hands out segments over all drives, reusing AUs round-robin (a
// benchmark may overwrite old segments).
type cycling struct {
	d    *Drives
	mu   sync.Mutex
	next ID
}

func (c *cycling) Next(ctx context.Context) (Layout, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next++
	g := c.d.Geometry
	n := len(c.d.Devs)
	lay := Layout{Segment: c.next}
	au := int64(c.next) % c.d.AUs(0)
	for i := range g.Width() {
		lay.Members = append(lay.Members, Member{Drive: (int(c.next) + i) % n, AU: au})
	}
	return lay, nil
}

const benchDriveSize = 64 << 20 // 8 AUs of 8 MiB: writes cycle over them

// BenchmarkWrite7x2x1M compares the segment writer (7+2 parity, crc32c per
// block, at most 2 drives written at once, a sync per segio) with raw
// Device writes of the same bytes (9 write units per segio, all drives in
// parallel, a sync per segio) on the same file-backed drives. Bytes are
// payload bytes for the segment writer and data-unit bytes (7 MiB per
// stripe) for raw, so MB/s compare like for like.
func BenchmarkWrite7x2x1M(b *testing.B) {
	g := DefaultGeometry()
	ctx := context.Background()
	b.Run("segment", func(b *testing.B) {
		devs := benchDrives(b, g.Width(), benchDriveSize+BlockSize)
		d, err := NewDrives(g, BlockSize, devs)
		if err != nil {
			b.Fatal(err)
		}
		c := &cycling{d: d}
		w, err := NewWriter(d, WriterOptions{Next: c.Next, Stamp: 1, MaxWritingDrives: benchWriting})
		if err != nil {
			b.Fatal(err)
		}
		cb := make([]byte, 32<<10)
		for i := range cb {
			cb[i] = byte(i * 7)
		}
		per := int(g.SegioBytes()-EntrySize*300) / len(cb) // cblocks filling one segio
		b.SetBytes(int64(per * len(cb)))
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			for range per {
				if _, err := w.Append(ctx, Cblock, 0, 0, cb); err != nil {
					b.Fatal(err)
				}
			}
		}
		if err := w.Close(ctx); err != nil {
			b.Fatal(err)
		}
	})
	b.Run("raw", func(b *testing.B) {
		devs := benchDrives(b, g.Width(), benchDriveSize+BlockSize)
		unit := backend.AlignedBuffer(int(g.WriteUnit))
		for i := range unit {
			unit[i] = byte(i * 7)
		}
		b.SetBytes(int64(g.Data) * g.WriteUnit)
		b.ReportAllocs()
		b.ResetTimer()
		spa := g.AUSize / g.WriteUnit
		for i := range b.N {
			off := BlockSize + (int64(i)/spa%(benchDriveSize/g.AUSize))*g.AUSize + int64(i)%spa*g.WriteUnit
			var wg sync.WaitGroup
			for _, d := range devs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := d.WriteAt(ctx, unit, off); err != nil {
						b.Error(err)
					}
					if err := d.Sync(ctx); err != nil {
						b.Error(err)
					}
				}()
			}
			wg.Wait()
		}
	})
}

// BenchmarkEncode7x2x1M measures the CPU cost of sealing one segio: content
// map, Reed-Solomon parity and crc32c of every block of all 9 units.
func BenchmarkEncode7x2x1M(b *testing.B) {
	g := DefaultGeometry()
	d := &Drives{Geometry: g}
	w, err := NewWriter(d, WriterOptions{Next: func(context.Context) (Layout, error) { return Layout{}, nil }})
	if err != nil {
		b.Fatal(err)
	}
	s := w.getBuf()
	s.lay = Layout{Segment: 1, Members: make([]Member, g.Width())}
	for i := range 200 {
		s.entries = append(s.entries, Entry{Kind: Cblock, Offset: uint32(i * 32 << 10), Length: 32 << 10})
	}
	s.front, s.back = 200*32<<10, uint32(g.SegioBytes())
	b.SetBytes(g.SegioBytes())
	b.ReportAllocs()
	for range b.N {
		if err := w.encode(s); err != nil {
			b.Fatal(err)
		}
	}
}

// benchWriting is MaxWritingDrives for the segment benchmark.
var benchWriting = 2
