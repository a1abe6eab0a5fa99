package backendtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/shalestore/shale/backend"
)

// Workload is one device benchmark: a block size, random or sequential
// offsets, reads or writes, and a queue depth made of that many goroutines
// each with one I/O in flight (what fio's psync engine does with numjobs).
type Workload struct {
	// Name is the sub-benchmark name, e.g. "randread-4K-qd32".
	Name string
	// Write is true for writes, false for reads.
	Write bool
	// Random picks each offset uniformly from the device; otherwise each
	// goroutine walks its own contiguous share of the device in order,
	// wrapping at its end (fio's offset_increment layout).
	Random bool
	// BlockSize is the size of each I/O in bytes.
	BlockSize int
	// QD is the number of goroutines issuing I/O at once.
	QD int
}

// Workloads are the device benchmarks Bench runs: 4 KiB random and 1 MiB
// sequential, reads and writes, at queue depth 1 and 32.
// bench/device-vs-fio.sh runs fio jobs with the same parameters.
var Workloads = []Workload{
	{Name: "randread-4K-qd1", Random: true, BlockSize: 4 << 10, QD: 1},
	{Name: "randread-4K-qd32", Random: true, BlockSize: 4 << 10, QD: 32},
	{Name: "randwrite-4K-qd1", Write: true, Random: true, BlockSize: 4 << 10, QD: 1},
	{Name: "randwrite-4K-qd32", Write: true, Random: true, BlockSize: 4 << 10, QD: 32},
	{Name: "seqread-1M-qd1", BlockSize: 1 << 20, QD: 1},
	{Name: "seqread-1M-qd32", BlockSize: 1 << 20, QD: 32},
	{Name: "seqwrite-1M-qd1", Write: true, BlockSize: 1 << 20, QD: 1},
	{Name: "seqwrite-1M-qd32", Write: true, BlockSize: 1 << 20, QD: 32},
}

// Bench runs every Workload as a sub-benchmark of b on dev, over the whole
// device. Reads of never-written space are fast on sparse files and thin
// devices, so fill the device first (Fill) for honest read figures. Writes
// are not synced: like fio without fsync, the figures are for WriteAt.
func Bench(b *testing.B, dev backend.Device) {
	for _, w := range Workloads {
		b.Run(w.Name, func(b *testing.B) { BenchWorkload(b, dev, w) })
	}
}

// BenchWorkload runs one workload on dev for b.N I/Os, spread over w.QD
// goroutines. It reports bytes per I/O (so MB/s) and allocations, which
// are zero per I/O in steady state for a conforming backend.
func BenchWorkload(b *testing.B, dev backend.Device, w Workload) {
	bs := int64(w.BlockSize)
	span := dev.Size() / bs * bs
	share := span / int64(w.QD) / bs * bs
	if share < bs || bs%int64(dev.Alignment()) != 0 {
		b.Fatalf("%s: device of %d bytes, alignment %d, cannot run %d-byte I/Os at queue depth %d",
			w.Name, dev.Size(), dev.Alignment(), bs, w.QD)
	}
	ctx := context.Background()
	type worker struct {
		buf []byte
		rng *rand.Rand
		pos int64 // sequential: next offset within the share
	}
	workers := make([]worker, w.QD)
	for j := range workers {
		workers[j].buf = backend.AlignedBuffer(int(bs))
		fill(workers[j].buf, int64(j)*bs, 1)
		workers[j].rng = rand.New(rand.NewPCG(uint64(j), 7))
	}
	b.SetBytes(bs)
	b.ReportAllocs()
	var left atomic.Int64
	var (
		errMu    sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
		left.Store(0)
	}
	left.Store(int64(b.N))
	b.ResetTimer()
	var wg sync.WaitGroup
	for j := range workers {
		wk := &workers[j]
		base := int64(j) * share
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				var off int64
				if w.Random {
					off = wk.rng.Int64N(span/bs) * bs
				} else {
					off = base + wk.pos
					if wk.pos += bs; wk.pos >= share {
						wk.pos = 0
					}
				}
				var err error
				if w.Write {
					err = dev.WriteAt(ctx, wk.buf, off)
				} else {
					err = dev.ReadAt(ctx, wk.buf, off)
				}
				if err != nil {
					fail(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if firstErr != nil {
		b.Fatalf("%s: %v", w.Name, firstErr)
	}
}

// Fill writes a pattern over the whole of dev in 1 MiB writes and syncs, so
// that reads in benchmarks hit allocated, written blocks.
func Fill(tb testing.TB, dev backend.Device) {
	tb.Helper()
	ctx := context.Background()
	chunk := int64(1 << 20)
	buf := backend.AlignedBuffer(int(chunk))
	for off := int64(0); off < dev.Size(); off += chunk {
		n := min(chunk, dev.Size()-off)
		fill(buf[:n], off, 1)
		if err := dev.WriteAt(ctx, buf[:n], off); err != nil {
			tb.Fatalf("fill: %v", err)
		}
	}
	if err := dev.Sync(ctx); err != nil {
		tb.Fatalf("fill: sync: %v", err)
	}
}

// String describes a workload in fio's terms, for logs.
func (w Workload) String() string {
	rw := "read"
	if w.Write {
		rw = "write"
	}
	if w.Random {
		rw = "rand" + rw
	}
	return fmt.Sprintf("rw=%s bs=%d numjobs=%d", rw, w.BlockSize, w.QD)
}
