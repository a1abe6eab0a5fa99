package core

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// BenchmarkWriteSeq is the engine side of peerbench's 1M sequential write
// job: QD writers each walk their own share of the volume in 1 MiB writes
// of incompressible data, on file drives.
func BenchmarkWriteSeq(b *testing.B) {
	for _, qd := range []int{1, 8} {
		b.Run(fmt.Sprintf("file/1M/qd%d", qd), func(b *testing.B) {
			_, v := benchArray(b, "file")
			const size = 1 << 20
			share := int64(benchVolBytes / qd / size * size)
			b.SetBytes(size)
			b.ReportAllocs()
			var left atomic.Int64
			left.Store(int64(b.N))
			b.ResetTimer()
			var wg sync.WaitGroup
			for j := range qd {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(j), 9))
					p := make([]byte, size)
					for i := range p {
						p[i] = byte(rng.Uint32())
					}
					ctx := context.Background()
					for pos := int64(0); left.Add(-1) >= 0; pos = (pos + size) % share {
						p[0]++ // every write different
						if err := v.WriteAt(ctx, p, int64(j)*share+pos); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
		})
	}
}

// BenchmarkWriteQD1 is the engine side of peerbench's 4k randwrite QD1
// job: one writer, 4 KiB of incompressible data at random offsets, each
// write acknowledged (durable) before the next. ns/op is the latency.
func BenchmarkWriteQD1(b *testing.B) {
	_, v := benchArray(b, "file")
	const size = 4 << 10
	rng := rand.New(rand.NewPCG(3, 9))
	p := make([]byte, size)
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
	ctx := context.Background()
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		p[0]++
		if err := v.WriteAt(ctx, p, int64(rng.IntN(benchVolBytes/size))*size); err != nil {
			b.Fatal(err)
		}
	}
}
