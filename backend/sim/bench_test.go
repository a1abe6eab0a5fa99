package sim

import (
	"fmt"

	"github.com/shalestore/shale/backend/backendtest"
	"sync/atomic"
	"testing"
)

// Benchmarks of the simulator itself (memory, zero latency, virtual time):
// how much the sim costs the engine's tests per I/O.

func benchDev(b *testing.B) *Device {
	d, err := New(Options{Size: 1 << 30, Profile: SSDProfile().ZeroLatency()})
	if err != nil {
		b.Fatal(err)
	}
	return d
}

func benchIO(b *testing.B, size int, write, parallel bool) {
	d := benchDev(b)
	span := d.Size() / 4 / int64(size) // stay within 256 MiB
	buf := make([]byte, size)
	for i := int64(0); i < span; i++ { // reads hit mapped pages
		if err := d.WriteAt(ctx, buf, i*int64(size)); err != nil {
			b.Fatal(err)
		}
	}
	if err := d.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	var ops atomic.Int64
	syncEvery := max(1, int64(4<<20/size)) // sync every 4 MiB written
	do := func(buf []byte, i int64) {
		off := (i * 7919 % span) * int64(size)
		var err error
		if write {
			err = d.WriteAt(ctx, buf, off)
			if err == nil && i%syncEvery == syncEvery-1 {
				err = d.Sync(ctx)
			}
		} else {
			err = d.ReadAt(ctx, buf, off)
		}
		if err != nil {
			b.Error(err)
		}
	}
	b.ResetTimer()
	if !parallel {
		for i := range int64(b.N) {
			do(buf, i)
		}
		return
	}
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, size)
		for pb.Next() {
			do(buf, ops.Add(1))
		}
	})
}

// benchCopy is the baseline: copying the same bytes out of a 256 MiB
// array at the same offsets, with no device around it.
func benchCopy(b *testing.B, size int) {
	mem := make([]byte, 256<<20)
	for i := range mem {
		mem[i] = byte(i)
	}
	span := int64(len(mem) / size)
	buf := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range int64(b.N) {
		off := (i * 7919 % span) * int64(size)
		copy(buf, mem[off:off+int64(size)])
	}
}

func BenchmarkIO(b *testing.B) {
	for _, size := range []int{4 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("Copy%dK", size>>10), func(b *testing.B) { benchCopy(b, size) })
		for _, write := range []bool{false, true} {
			for _, par := range []bool{false, true} {
				name := fmt.Sprintf("%s%dK", map[bool]string{false: "Read", true: "Write"}[write], size>>10)
				if par {
					name += "Parallel"
				}
				b.Run(name, func(b *testing.B) { benchIO(b, size, write, par) })
			}
		}
	}
}

// BenchmarkDevice runs backendtest's device workloads (the ones the file
// and nvme backends report) on a filled 256 MiB memory sim without
// latency.
func BenchmarkDevice(b *testing.B) {
	d, err := New(Options{Size: 256 << 20, Profile: SSDProfile().ZeroLatency()})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	backendtest.Fill(b, d)
	backendtest.Bench(b, d)
}
