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

// BenchmarkWrite7x2x1M compares the segment writer with raw Device writes
// of the same bytes on the same kind of file-backed drives (9 of them, in
// TMPDIR). Each sub-benchmark gets fresh drives; run with -count and
// compare medians: the sub-benchmarks alternate within each count.
//
//   - segment: the writer, 7+2 parity, crc32c per 4 KiB block, at most 2
//     drives of a stripe written at once, every segio synced before it is
//     reported, segio N+1 written while segio N syncs (the defaults).
//   - segment-fill: segment with AppendFunc: each cblock is written
//     straight into the segio buffer by the fill function (a copy of the
//     cblock, standing for a compressor's output), not copied by Append.
//   - segment-nooverlap: the same with MaxUnsyncedSegios 1 (each segio
//     synced before the next one is written).
//   - raw2: the writer's I/O schedule with no encoding: per stripe, 9 write
//     units with at most 2 WriteAt calls in flight, then a Sync of all 9
//     drives in parallel, and the next stripe's writes overlapping those
//     syncs (at most 2 stripes unsynced). The same drive-level concurrency
//     as the writer.
//   - raw2cold: raw2 writing from 6 stripes of distinct buffers in turn
//     (rawColdStripes), as the writer's buffers are, instead of one
//     cache-hot unit buffer for every write.
//   - raw9: per stripe, all 9 drives written and synced in parallel, stripe
//     after stripe: what the drives do with no limit on writers.
//
// MB/s counts payload for the writer (a segio's data bodies less the
// content map room) and 7 write units per stripe for raw, so the figures
// compare like for like (the writer's figure is 0.5% lower per stripe for
// its headers and content map).
func BenchmarkWrite7x2x1M(b *testing.B) {
	g := DefaultGeometry()
	ctx := context.Background()
	segmentBench := func(unsynced int, inPlace bool) func(b *testing.B) {
		return func(b *testing.B) {
			devs := benchDrives(b, g.Width(), benchDriveSize+BlockSize)
			d, err := NewDrives(g, BlockSize, devs)
			if err != nil {
				b.Fatal(err)
			}
			c := &cycling{d: d}
			w, err := NewWriter(d, WriterOptions{Next: c.Next, Stamp: 1, MaxWritingDrives: benchWriting, MaxUnsyncedSegios: unsynced})
			if err != nil {
				b.Fatal(err)
			}
			cb := make([]byte, 32<<10)
			for i := range cb {
				cb[i] = byte(i * 7)
			}
			// The producer's own work for AppendFunc: writing the
			// cblock's bytes, as a compressor writes its output.
			fill := func(dst []byte) { copy(dst, cb) }
			per := int(g.SegioBytes()-EntrySize*300) / len(cb) // cblocks filling one segio
			b.SetBytes(int64(per * len(cb)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				for range per {
					var err error
					if inPlace {
						_, err = w.AppendFunc(ctx, Cblock, 0, 0, len(cb), fill)
					} else {
						_, err = w.Append(ctx, Cblock, 0, 0, cb)
					}
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := w.Close(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("segment", segmentBench(2, false))
	b.Run("segment-fill", segmentBench(2, true))
	b.Run("segment-nooverlap", segmentBench(1, false))
	rawSetup := func(b *testing.B) ([]backend.Device, []byte, func(i int) int64) {
		devs := benchDrives(b, g.Width(), benchDriveSize+BlockSize)
		unit := backend.AlignedBuffer(int(g.WriteUnit))
		for i := range unit {
			unit[i] = byte(i * 7)
		}
		spa := g.AUSize / g.WriteUnit
		off := func(i int) int64 {
			return BlockSize + (int64(i)/spa%(benchDriveSize/g.AUSize))*g.AUSize + int64(i)%spa*g.WriteUnit
		}
		b.SetBytes(int64(g.Data) * g.WriteUnit)
		b.ReportAllocs()
		return devs, unit, off
	}
	raw2 := func(stripes int) func(b *testing.B) {
		return func(b *testing.B) {
			devs, unit, off := rawSetup(b)
			// units[s][j]: stripe s%stripes's unit for drive j.
			units := make([][][]byte, stripes)
			for s := range units {
				units[s] = make([][]byte, len(devs))
				for j := range devs {
					if stripes == 1 {
						units[s][j] = unit
						continue
					}
					units[s][j] = backend.AlignedBuffer(len(unit))
					copy(units[s][j], unit)
				}
			}
			// synced[i%3] is closed when stripe i is synced. Stripe i is
			// written once stripe i-2 is synced, and synced after stripe i-1:
			// the writer's schedule with MaxUnsyncedSegios 2.
			var synced [3]chan struct{}
			for j := range synced {
				synced[j] = make(chan struct{})
				close(synced[j])
			}
			b.ResetTimer()
			for i := range b.N {
				<-synced[(i+1)%3] // stripe i-2
				var wg sync.WaitGroup
				sem := make(chan struct{}, benchWriting)
				for j, d := range devs {
					sem <- struct{}{}
					wg.Add(1)
					go func() {
						defer func() { <-sem; wg.Done() }()
						if err := d.WriteAt(ctx, units[i%stripes][j], off(i)); err != nil {
							b.Error(err)
						}
					}()
				}
				wg.Wait()
				prev, mine := synced[(i+2)%3], make(chan struct{})
				synced[i%3] = mine
				go func() {
					<-prev
					var swg sync.WaitGroup
					for _, d := range devs {
						swg.Add(1)
						go func() {
							defer swg.Done()
							if err := d.Sync(ctx); err != nil {
								b.Error(err)
							}
						}()
					}
					swg.Wait()
					close(mine)
				}()
			}
			for _, c := range synced {
				<-c
			}
		}
	}
	b.Run("raw2", raw2(1))
	b.Run("raw2cold", raw2(rawColdStripes))
	b.Run("raw9", func(b *testing.B) {
		devs, unit, off := rawSetup(b)
		b.ResetTimer()
		for i := range b.N {
			var wg sync.WaitGroup
			for _, d := range devs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := d.WriteAt(ctx, unit, off(i)); err != nil {
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
	s.crcLo, s.crcHi = 0, s.back // every block checksummed here (the cold path)
	b.SetBytes(g.SegioBytes())
	b.ReportAllocs()
	for range b.N {
		if err := w.encode(s); err != nil {
			b.Fatal(err)
		}
	}
}

// rawColdStripes is how many stripes of distinct unit buffers raw2cold
// cycles through: as many segios as a writer with the default options
// keeps buffers for (MaxPendingSegios 2 + MaxUnsynced 2 + 2), so the
// kernel copies each unit from memory as it does for the writer, not
// from cache as raw2 (one buffer for every unit) does.
const rawColdStripes = 6

// benchWriting is MaxWritingDrives for the segment benchmark.
var benchWriting = 2
