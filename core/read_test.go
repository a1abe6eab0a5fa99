package core

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/shalestore/shale/backend/sim"
	"github.com/shalestore/shale/core/segment"
)

// readTestVolume writes an 8 MiB volume in 1 MiB writes (so 32 KiB
// cblocks), alternately incompressible (raw cblocks) and compressible,
// then some small overwrites, flushes metadata and restarts, so reads
// start from the drives with an empty cache. It returns the model.
func readTestVolume(t *testing.T, e *simEnv, rng *rand.Rand) []byte {
	t.Helper()
	if _, err := e.a.CreateVolume(e.ctx, "vol", 8<<20); err != nil {
		t.Fatal(err)
	}
	model := make([]byte, 8<<20)
	v := e.volume("vol")
	for off := 0; off < len(model); off += 1 << 20 {
		fillData(rng, model[off:off+1<<20], off>>20%2 == 1)
		if err := v.WriteAt(e.ctx, model[off:off+1<<20], int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	for range 20 {
		p := make([]byte, (1+rng.IntN(24))*512)
		off := rng.IntN((len(model)-len(p))/512) * 512
		fillData(rng, p, rng.IntN(2) == 0)
		if err := v.WriteAt(e.ctx, p, int64(off)); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], p)
	}
	if err := e.a.db.Flush(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.restart()
	return model
}

// TestReadParts reads random ranges (a sector to 64 KiB) of a volume of
// raw and compressed cblocks with no fault, a failed drive and two drives
// returning corrupt data: every read returns the model's bytes, reads of
// part of a raw cblock take the partial path (only its blocks read),
// reads that see a bad unit fall back to whole-cblock reads, and a part
// read twice ends up in the cache.
func TestReadParts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		drives []int
		effect sim.Effect
	}{
		{"none", nil, 0},
		{"failstop-1", []int{2}, sim.FailStop},
		{"corrupt-2", []int{1, 5}, sim.Corrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newSimEnv(t, simConfig{seed: 7, drives: 6 + len(tc.drives)})
			rng := rand.New(rand.NewPCG(7, 7))
			model := readTestVolume(t, e, rng)
			for _, d := range tc.drives {
				f := sim.Fault{Op: sim.OpRead, Sticky: true, Effect: tc.effect}
				if tc.effect == sim.Corrupt {
					f.Sectors, f.Bits = 4, 3
				}
				e.drives[d].AddFault(f)
			}
			v := e.volume("vol")
			sizes := []int{512, 4096, 8192, 12288, 32768, 65536, 256 << 10, 1 << 20}
			type read struct{ off, n int }
			var done []read
			for i := range 600 {
				var r read
				if i%4 == 3 && len(done) > 0 {
					r = done[rng.IntN(len(done))] // again: the second part read fills the cache
				} else {
					r.n = sizes[rng.IntN(len(sizes))]
					if rng.IntN(4) == 0 {
						r.n = (1 + rng.IntN(64)) * 512
					}
					r.off = rng.IntN((len(model)-r.n)/512) * 512
					if rng.IntN(2) == 0 {
						r.off = r.off / 4096 * 4096
					}
				}
				done = append(done, r)
				got := make([]byte, r.n)
				if err := v.ReadAt(e.ctx, got, int64(r.off)); err != nil {
					t.Fatalf("read %d at %d: %v", r.n, r.off, err)
				}
				if !bytes.Equal(got, model[r.off:r.off+r.n]) {
					t.Fatalf("read %d at %d: data differs", r.n, r.off)
				}
			}
			c := e.a.Stats().Counters
			t.Logf("partial %d, batched %d, hits %d, misses %d, degraded %d", c["partial_reads"], c["batched_reads"], c["cache_hits"], c["cache_misses"], c["degraded_reads"])
			if c["partial_reads"] == 0 {
				t.Error("no read of part of a raw cblock took the partial path")
			}
			if c["batched_reads"] == 0 {
				t.Error("no read of adjacent whole cblocks was batched")
			}
			if c["cache_hits"] == 0 {
				t.Error("no cache hit on reads repeated")
			}
			if len(tc.drives) > 0 && c["degraded_reads"] == 0 {
				t.Error("no degraded read counted with bad drives")
			}
		})
	}
}

// TestReadCacheChurn: concurrent readers of a region eight times the
// cblock cache, whole cblocks and parts, so entries leave the cache
// (and their buffers go back to the pools) while others read them: every
// read returns the model's bytes (run with -race).
func TestReadCacheChurn(t *testing.T) {
	e := newSimEnv(t, simConfig{seed: 8})
	e.opts.CacheBytes = 1 << 20
	rng := rand.New(rand.NewPCG(8, 8))
	model := readTestVolume(t, e, rng)
	v := e.volume("vol")
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for range 300 {
				n := 32 << 10
				if rng.IntN(2) == 0 {
					n = 4 << 10
				}
				off := rng.IntN(len(model)/n) * n
				got := make([]byte, n)
				if err := v.ReadAt(e.ctx, got, int64(off)); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, model[off:off+n]) {
					errs <- fmt.Errorf("read %d at %d: data differs", n, off)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if c := e.a.Stats().Counters; c["cache_hits"] == 0 || c["cache_misses"] == 0 {
		t.Fatalf("hits %d, misses %d: the cache did not churn", c["cache_hits"], c["cache_misses"])
	}
}

func TestSeenSet(t *testing.T) {
	var s seenSet
	s.init(0)
	if len(s.slots) != 1024 {
		t.Fatalf("%d slots, want 1024", len(s.slots))
	}
	for _, k := range []uint64{0, 1, 1 << 63, 12345} {
		if s.again(k) {
			t.Fatalf("key %d seen before it was recorded", k)
		}
		if !s.again(k) {
			t.Fatalf("key %d not seen again", k)
		}
		if s.again(k) {
			t.Fatalf("key %d seen again after it was dropped", k)
		}
	}
	// Keys sharing a bucket: up to seenWays are all remembered, so two
	// read in turn do not knock each other out; many more push one out.
	bucket := func(k uint64) uint64 { return (k * 0x9e3779b97f4a7c15) >> s.shift }
	var same []uint64
	for k := uint64(100); len(same) < 64; k++ {
		if bucket(k) == bucket(100) {
			same = append(same, k)
		}
	}
	for round := range 3 {
		for _, k := range same[:seenWays] {
			if got := s.again(k); got != (round == 1) {
				t.Fatalf("round %d: key %d again = %v", round, k, got)
			}
		}
	}
	s.again(same[0])
	for _, k := range same[1:] {
		s.again(k)
	}
	if s.again(same[0]) {
		t.Fatal("key still seen after 63 others of its bucket")
	}
}

func TestCachedCblockRefs(t *testing.T) {
	buf := getSpan()
	c := &cachedCblock{addr: segment.Addr{Segment: 1}, data: buf.b[:10], buf: buf}
	c.refs.Store(1)
	if !c.acquire() {
		t.Fatal("acquire failed on a cached entry")
	}
	c.release() // the reader's
	if c.refs.Load() != 1 {
		t.Fatalf("refs %d after a reader, want 1", c.refs.Load())
	}
	onCacheExit(c) // the cache's: the buffer goes back
	if c.acquire() {
		t.Fatal("acquire succeeded after the entry left the cache")
	}
	onCacheExit(nil)
}
