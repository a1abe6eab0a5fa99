package core

import (
	"context"
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

func benchArray(b *testing.B, be string) (*Array, *Volume) {
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
	ctx := context.Background()
	a, err := Create(ctx, Options{Drives: devs[:benchDrives], NVRAM: devs[benchDrives], Geometry: benchGeometry, Logger: quiet})
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
				var seed atomic.Uint64
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.SetParallelism(benchQueueDepth)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					rng := rand.New(rand.NewPCG(seed.Add(1), 1))
					p := benchData(rng, size)
					ctx := context.Background()
					for pb.Next() {
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
