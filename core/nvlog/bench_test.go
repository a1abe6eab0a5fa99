package nvlog

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shalestore/shale/backend"
	_ "github.com/shalestore/shale/backend/file" // registers "file"
	"github.com/shalestore/shale/backend/sim"
)

// Benchmark geometry: entry sizes are a write's payload plus 256 bytes of
// facts; committers are concurrent goroutines.
var (
	benchEntries = []struct {
		name  string
		bytes int
	}{{"4K", 4096 + 256}, {"64K", 64<<10 + 256}}
	benchCommitters = []int{1, 8, 64}
)

const benchRegionBytes = 128 << 20

// benchDevice opens a device for benchmarks: "file" is backend/file in a
// temporary directory on this machine's disk (pwrite + fdatasync,
// preallocated), "sim" is backend/sim's NVRAM profile in real time, "null"
// keeps only the superblocks and costs nothing (the log's own overhead).
func benchDevice(b *testing.B, kind string) backend.Device {
	b.Helper()
	switch kind {
	case "file":
		d, err := backend.Open(backend.Spec{
			Name: "nvram", Backend: "file", Kind: backend.NVRAM,
			Path:    filepath.Join(b.TempDir(), "nvram"),
			Size:    regionOff + benchRegionBytes,
			Options: map[string]any{"preallocate": true},
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { d.Close() })
		return d
	case "sim":
		d, err := sim.New(sim.Options{Size: regionOff + benchRegionBytes, Kind: backend.NVRAM, Time: sim.Real, Seed: 1, Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { d.Close() })
		return d
	case "null":
		return &quietDev{size: regionOff + benchRegionBytes}
	}
	b.Fatalf("unknown device %q", kind)
	return nil
}

// BenchmarkCommit measures group commit: c committers call Commit in a loop
// while a trimmer keeps the log from filling (as the segment writer
// would). Reported: commits/s, latency percentiles from Stats, entries per
// batch. Next to each log run, "naive" is the baseline the log competes
// with, measured right after it on a fresh device of the same kind: every
// committer writes its own entry (padded to the alignment) and syncs, one
// write and one sync per entry. "null" is a device that costs nothing: the
// log's own overhead.
func BenchmarkCommit(b *testing.B) {
	for _, kind := range []string{"file", "sim", "null"} {
		for _, e := range benchEntries {
			for _, c := range benchCommitters {
				name := fmt.Sprintf("%s/%s/c%d", kind, e.name, c)
				b.Run(name+"/log", func(b *testing.B) {
					benchCommit(b, benchDevice(b, kind), e.bytes, c)
				})
				if kind != "null" {
					b.Run(name+"/naive", func(b *testing.B) {
						benchBaseline(b, benchDevice(b, kind), e.bytes, c)
					})
				}
			}
		}
	}
}

func benchCommit(b *testing.B, dev backend.Device, entryBytes, committers int) {
	ctx := context.Background()
	o := testOpts() // default MaxBatchBytes and MaxDelay, as the engine runs
	if err := Format(ctx, dev, o); err != nil {
		b.Fatal(err)
	}
	l, err := Open(ctx, dev, o)
	if err != nil {
		b.Fatal(err)
	}
	stopTrim := make(chan struct{})
	trimDone := make(chan struct{})
	go func() {
		defer close(trimDone)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopTrim:
				return
			case <-tick.C:
			}
			if s := l.Stats(); s.BytesInUse > s.RegionBytes/4 {
				if err := l.Trim(ctx, s.DurableSeq); err != nil {
					b.Error(err)
					return
				}
			}
		}
	}()
	entry := make([]byte, entryBytes)
	b.SetBytes(int64(entryBytes))
	b.ReportAllocs()
	var n atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range committers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n.Add(1) <= int64(b.N) {
				if _, err := l.Commit(ctx, entry); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(stopTrim)
	<-trimDone
	s := l.Stats()
	l.Close()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "commits/s")
	b.ReportMetric(float64(s.LatencyP50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(s.LatencyP99.Microseconds()), "p99-µs")
	b.ReportMetric(s.MeanBatchEntries, "entries/batch")
	b.ReportMetric(0, "ns/op") // commits/s says it better
}

// benchBaseline is the naive commit: each committer writes its entry to
// its own place and syncs; no batching beyond what the device or kernel
// does with concurrent syncs.
func benchBaseline(b *testing.B, dev backend.Device, entryBytes, committers int) {
	ctx := context.Background()
	slot := roundUp(int64(entryBytes), int64(dev.Alignment()))
	slots := benchRegionBytes / slot
	b.SetBytes(int64(entryBytes))
	b.ReportAllocs()
	var n atomic.Int64
	var wg sync.WaitGroup
	var lat histogram
	var latMu sync.Mutex
	b.ResetTimer()
	start := time.Now()
	for range committers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := backend.AlignedBuffer(int(slot))
			for {
				i := n.Add(1)
				if i > int64(b.N) {
					return
				}
				t0 := time.Now()
				if err := dev.WriteAt(ctx, buf, regionOff+(i%slots)*slot); err != nil {
					b.Error(err)
					return
				}
				if err := dev.Sync(ctx); err != nil {
					b.Error(err)
					return
				}
				latMu.Lock()
				lat.record(int64(time.Since(t0)))
				latMu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	var q [2]time.Duration
	lat.quantiles([]float64{0.5, 0.99}, q[:])
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "commits/s")
	b.ReportMetric(float64(q[0].Microseconds()), "p50-µs")
	b.ReportMetric(float64(q[1].Microseconds()), "p99-µs")
	b.ReportMetric(0, "ns/op")
}
