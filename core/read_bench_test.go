package core

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
)

// readBenchBytes is the region the read benchmarks write first (1 MiB
// writes, so 32 KiB cblocks) and then read.
const readBenchBytes = 64 << 20

// readBenchArray creates an array on file drives, writes readBenchBytes
// of raw (incompressible) or half-compressible data in 1 MiB writes,
// closes it so every cblock is durable in segments (none pending), and
// opens it again with a cblock cache of cacheBytes.
func readBenchArray(b *testing.B, compressible bool, cacheBytes int64) *Volume {
	b.Helper()
	devs := benchDevices(b, "file")
	ctx := context.Background()
	opts := Options{Drives: devs[:benchDrives], NVRAM: devs[benchDrives], Geometry: benchGeometry, Logger: quiet}
	a, err := Create(ctx, opts)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := a.CreateVolume(ctx, "vol", benchVolBytes); err != nil {
		b.Fatal(err)
	}
	v, err := a.Volume("vol")
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	p := make([]byte, 1<<20)
	for off := 0; off < readBenchBytes; off += len(p) {
		fillData(rng, p, compressible)
		if err := v.WriteAt(ctx, p, int64(off)); err != nil {
			b.Fatal(err)
		}
	}
	if err := a.Close(ctx); err != nil {
		b.Fatal(err)
	}
	opts.CacheBytes = cacheBytes
	a, err = Open(ctx, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { a.Close(ctx) })
	if v, err = a.Volume("vol"); err != nil {
		b.Fatal(err)
	}
	return v
}

// BenchmarkRead measures the engine read path on file drives (page
// cache), one reader at a time so ns/op is the CPU cost of one read:
// 4 KiB random reads within 32 KiB cblocks and 1 MiB sequential reads,
// of raw and compressed cblocks, with the cblock cache holding the whole
// region (hit, after a warm-up pass) or 1 MiB of it (miss).
func BenchmarkRead(b *testing.B) {
	for _, data := range []string{"raw", "zstd"} {
		for _, size := range []int{4 << 10, 1 << 20} {
			for _, cache := range []string{"hit", "miss"} {
				b.Run(fmt.Sprintf("%s/%dK/%s", data, size>>10, cache), func(b *testing.B) {
					cacheBytes := int64(1 << 20)
					if cache == "hit" {
						cacheBytes = 4 * readBenchBytes
					}
					v := readBenchArray(b, data == "zstd", cacheBytes)
					ctx := context.Background()
					p := make([]byte, size)
					if cache == "hit" {
						// Ristretto admits asynchronously, and the engine
						// admits raw cblocks on their second touch: three
						// passes.
						for range 3 {
							for off := 0; off < readBenchBytes; off += size {
								if err := v.ReadAt(ctx, p, int64(off)); err != nil {
									b.Fatal(err)
								}
							}
						}
					}
					rng := rand.New(rand.NewPCG(3, 4))
					b.SetBytes(int64(size))
					b.ReportAllocs()
					b.ResetTimer()
					off := int64(0)
					for i := 0; i < b.N; i++ {
						if size == 1<<20 {
							off = (off + int64(size)) % readBenchBytes
						} else {
							off = int64(rng.IntN(readBenchBytes/size)) * int64(size)
						}
						if err := v.ReadAt(ctx, p, off); err != nil {
							b.Fatal(err)
						}
					}
					b.StopTimer()
					h, m := v.a.stats.cacheHits.Load(), v.a.stats.cacheMisses.Load()
					b.ReportMetric(float64(h)/float64(max(1, h+m)), "hit-ratio")
				})
			}
		}
	}
}
