package core

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/shalestore/shale/backend"
	"github.com/shalestore/shale/core/segment"
)

// benchGeometry is 7+2 with AUs and write units scaled down so the
// benchmark arrays stay small.
var benchGeometry = segment.Geometry{Data: 7, Parity: 2, AUSize: 4 << 20, WriteUnit: 256 << 10}

const (
	benchDrives     = 9
	benchDriveBytes = 1 << 30
	benchNVRAMBytes = 256 << 20
	benchVolBytes   = 512 << 20
	benchReadBytes  = 64 << 20 // the region reads hit, written first
	benchQueueDepth = 32
)

func benchArray(b *testing.B, be string, opts ...func(*Options)) (*Array, *Volume) {
	b.Helper()
	devs := benchDevices(b, be)
	ctx := context.Background()
	o := Options{Drives: devs[:benchDrives], NVRAM: devs[benchDrives], Geometry: benchGeometry, Logger: quiet}
	for _, f := range opts {
		f(&o)
	}
	a, err := Create(ctx, o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { a.Close(ctx) })
	if _, err := a.CreateVolume(ctx, "vol", benchVolBytes); err != nil {
		b.Fatal(err)
	}
	v, err := a.Volume("vol")
	if err != nil {
		b.Fatal(err)
	}
	return a, v
}

// benchDevices opens benchDrives drives and an NVRAM of backend be (file
// or sim, in a temporary directory), closed when b ends; the NVRAM last.
func benchDevices(b *testing.B, be string) []backend.Device {
	b.Helper()
	dir := b.TempDir()
	var devs []backend.Device
	for i := range benchDrives + 1 {
		sp := backend.Spec{Name: fmt.Sprintf("drives[%d]", i), Backend: be, Size: benchDriveBytes, Kind: backend.SSD}
		if i == benchDrives {
			sp.Name, sp.Size, sp.Kind = "nvram", benchNVRAMBytes, backend.NVRAM
		}
		switch be {
		case "file":
			sp.Path = filepath.Join(dir, sp.Name)
		case "sim":
			sp.Options = map[string]any{"zero_latency": true, "time": "real"}
		}
		d, err := backend.Open(sp)
		if err != nil {
			b.Fatal(err)
		}
		devs = append(devs, d)
		b.Cleanup(func() { d.Close() })
	}
	return devs
}

// stampSectors makes every sector of p new data: its first 8 bytes get
// a number from next. Writing the same buffer again would otherwise be
// found by inline dedup and measure a duplicate write, not a new one.
func stampSectors(p []byte, next *atomic.Uint64) {
	for i := 0; i+SectorSize <= len(p); i += SectorSize {
		binary.LittleEndian.PutUint64(p[i:], next.Add(1))
	}
}

// benchData is half compressible: each block is random bytes then a run
// of a repeated byte, so zstd halves it roughly.
func benchData(rng *rand.Rand, n int) []byte {
	p := make([]byte, n)
	for i := range p[:n/2] {
		p[i] = byte(rng.Uint32())
	}
	for i := n / 2; i < n; i++ {
		p[i] = 'x'
	}
	return p
}

func BenchmarkWriteAt(b *testing.B) {
	for _, be := range []string{"sim", "file"} {
		for _, size := range []int{4 << 10, 32 << 10} {
			b.Run(fmt.Sprintf("%s/%dK/qd%d", be, size>>10, benchQueueDepth), func(b *testing.B) {
				_, v := benchArray(b, be)
				var seed, stamp atomic.Uint64
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.SetParallelism(benchQueueDepth)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					rng := rand.New(rand.NewPCG(seed.Add(1), 1))
					p := benchData(rng, size)
					ctx := context.Background()
					for pb.Next() {
						stampSectors(p, &stamp)
						off := int64(rng.IntN(benchVolBytes/size)) * int64(size)
						if err := v.WriteAt(ctx, p, off); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

func BenchmarkReadAt(b *testing.B) {
	for _, be := range []string{"sim", "file"} {
		for _, size := range []int{4 << 10, 32 << 10} {
			b.Run(fmt.Sprintf("%s/%dK/qd%d", be, size>>10, benchQueueDepth), func(b *testing.B) {
				_, v := benchArray(b, be)
				ctx := context.Background()
				rng := rand.New(rand.NewPCG(1, 2))
				for off := 0; off < benchReadBytes; off += 256 << 10 {
					if err := v.WriteAt(ctx, benchData(rng, 256<<10), int64(off)); err != nil {
						b.Fatal(err)
					}
				}
				var seed atomic.Uint64
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.SetParallelism(benchQueueDepth)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					rng := rand.New(rand.NewPCG(seed.Add(1), 3))
					p := make([]byte, size)
					for pb.Next() {
						off := int64(rng.IntN(benchReadBytes/size)) * int64(size)
						if err := v.ReadAt(ctx, p, off); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

// BenchmarkWriteDedup: 32 KiB writes at queue depth 8 on file drives,
// inline dedup on and off, of new data (every sector new: the cost of
// hashing and looking up what is never found) and of duplicates of data
// already stored at another alignment (each write repeats 64 sectors
// written earlier, 3 sectors off their original alignment).
func BenchmarkWriteDedup(b *testing.B) {
	const size = 32 << 10
	for _, data := range []string{"unique", "duplicate"} {
		for _, on := range []bool{true, false} {
			b.Run(fmt.Sprintf("%s/dedup=%v", data, on), func(b *testing.B) {
				_, v := benchArray(b, "file", func(o *Options) { o.NoDedup = !on })
				ctx := context.Background()
				// The originals: 4 MiB of new data at the volume's end.
				const origBytes = 4 << 20
				origOff := int64(benchVolBytes - origBytes)
				orig := benchData(rand.New(rand.NewPCG(7, 7)), origBytes)
				var stamp atomic.Uint64
				stampSectors(orig, &stamp)
				if err := v.WriteAt(ctx, orig, origOff); err != nil {
					b.Fatal(err)
				}
				var seed atomic.Uint64
				b.SetBytes(size)
				b.ReportAllocs()
				b.SetParallelism(benchQueueDepth)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					rng := rand.New(rand.NewPCG(seed.Add(1), 5))
					p := benchData(rng, size)
					for pb.Next() {
						if data == "unique" {
							stampSectors(p, &stamp)
						} else {
							src := (rng.IntN(origBytes/size-1)*size/SectorSize + 3) * SectorSize
							copy(p, orig[src:src+size])
						}
						off := int64(rng.IntN((benchVolBytes-origBytes)/size)) * int64(size)
						if err := v.WriteAt(ctx, p, off); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}
