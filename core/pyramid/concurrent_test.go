package pyramid_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shalestore/shale/core/pyramid"
)

// TestConcurrent runs writers, readers and iterators against background
// flushes and merges. Each writer owns one medium and writes runs stamped
// with an increasing version; after each acknowledged write it publishes
// the version per sector. Readers check they never see a sector older than
// what was acknowledged before their read started, nor a version that goes
// backwards; iterators check order and non-overlap. At the end power is
// cut while the writers are still persisting: every acknowledged version
// must come back (unacknowledged ones may or may not).
func TestConcurrent(t *testing.T) { testConcurrent(t, kitDev) }

// TestConcurrentStore is TestConcurrent on core/store and core/nvlog.
func TestConcurrentStore(t *testing.T) { testConcurrent(t, kitStore) }

func testConcurrent(t *testing.T, kit string) {
	const writers, sectors = 4, 256
	dur := 2 * time.Second
	if testing.Short() {
		dur = 500 * time.Millisecond
	}
	if *long {
		dur = 30 * time.Second
	}
	e := newKitEnv(t, kit, 1, pyramid.Options{FlushBytes: 64 << 10, MaxDRAMBytes: 256 << 10, PageBytes: 1024,
		MaxPageTuples: 32, CacheBytes: 1 << 20, MergeFanout: 2, MaxPatches: 4})
	bmap := e.rel(pyramid.BlockMap)
	var acked [writers][sectors]atomic.Uint64
	var seqOf [writers]sync.Map // version -> sequence number, for diagnostics
	// Run for dur, then on until background flushes and merges have run a
	// few times (a loaded machine may need longer), at most 30 s more.
	ctx, cancel := context.WithTimeout(context.Background(), dur+30*time.Second)
	defer cancel()
	var cut atomic.Bool // power is cut: errors are expected from now on
	go func() {
		select {
		case <-time.After(dur):
		case <-ctx.Done():
			return
		}
		for ctx.Err() == nil {
			if st := e.db.Stats().Snapshot(); st.Flushes >= 5 && st.Merges >= 2 {
				cut.Store(true)
				e.rail.Cut() // mid-flight: persists, flushes, merges, trims
				time.Sleep(20 * time.Millisecond)
				cancel()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	fail := func(format string, args ...any) {
		if cut.Load() {
			cancel()
			return
		}
		select {
		case errs <- fmt.Errorf(format, args...):
		default:
		}
		cancel()
	}
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			med := uint64(w + 1)
			for v := uint64(1); ctx.Err() == nil; v++ {
				var b pyramid.Batch
				var runs [][2]uint64
				for i := 0; i < 1+rng.IntN(3); i++ {
					a := uint64(rng.IntN(sectors))
					n := min(uint64(1+rng.IntN(40)), sectors-a)
					runs = append(runs, [2]uint64{a, n})
					if err := b.Insert(bmap, med, a, n, pyramid.KindData, v, uint64(i), 4096, 0); err != nil {
						fail("insert: %v", err)
						return
					}
				}
				// ctx: after the cut, flushes fail, DRAM stays full and
				// Persist would wait for room until ctx ends.
				seq, err := e.db.Persist(ctx, &b)
				seqOf[w].Store(v, seq)
				if err != nil {
					if ctx.Err() == nil {
						fail("persist: %v", err)
					}
					return
				}
				if cut.Load() {
					return // acknowledged after the cut: cannot tell if durable
				}
				for _, r := range runs {
					for s := r[0]; s < r[0]+r[1]; s++ {
						acked[w][s].Store(v)
					}
				}
			}
		}()
	}
	for rd := 0; rd < 2; rd++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(rd), 7))
			var last [writers][sectors]uint64
			for ctx.Err() == nil {
				w := rng.IntN(writers)
				s := uint64(rng.IntN(sectors))
				floor := acked[w][s].Load()
				got, ok, err := bmap.Get(context.Background(), []uint64{uint64(w + 1), s}, nil, pyramid.ReadOptions{})
				if err != nil {
					fail("get: %v", err)
					return
				}
				var v uint64
				if ok {
					v = got[pyramid.BMSegment]
				}
				if v < floor || v < last[w][s] {
					fs, _ := seqOf[w].Load(floor)
					fail("medium %d sector %d: read version %d, acknowledged %d (seq %v), read before %d; sources now:\n%s",
						w+1, s, v, floor, fs, last[w][s], strings.Join(bmap.DebugSources(context.Background(), []uint64{uint64(w + 1), s}), "\n"))
					return
				}
				last[w][s] = v
			}
		}()
	}
	wg.Add(1)
	go func() { // the engine's part: trim the log as flushes allow
		defer wg.Done()
		for ctx.Err() == nil {
			if err := e.trim(); err != nil {
				fail("trim: %v", err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	wg.Add(1)
	go func() { // iterators
		defer wg.Done()
		for ctx.Err() == nil {
			it := bmap.NewIter(context.Background(), pyramid.IterOptions{})
			var prev []uint64
			for it.Next() {
				t := it.Tuple()
				if prev != nil && prev[0] == t[0] && prev[1]+prev[2] > t[1] {
					fail("iterator: %v overlaps %v", prev, t)
				}
				if prev != nil && (prev[0] > t[0] || prev[0] == t[0] && prev[1] >= t[1]) {
					fail("iterator: %v before %v", prev, t)
				}
				prev = append(prev[:0], t...)
			}
			if err := it.Err(); err != nil {
				fail("iterator: %v", err)
			}
			it.Close()
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if !cut.Load() {
		t.Fatal("the run ended before power was cut")
	}
	st := e.db.Stats().Snapshot()
	t.Logf("persists %d, flushes %d, merges %d, flattens %d, seals %d, waits %d, patches %d",
		st.Persists, st.Flushes, st.Merges, st.Flattens, st.Seals, st.PersistWaits, len(bmap.Patches()))
	if st.Flushes == 0 || st.Merges == 0 {
		t.Errorf("no background flush or merge ran")
	}
	e.crash(rand.New(rand.NewPCG(5, 5)))
	bmap = e.rel(pyramid.BlockMap)
	for w := 0; w < writers; w++ {
		for s := uint64(0); s < sectors; s++ {
			want := acked[w][s].Load()
			got, ok, err := bmap.Get(e.ctx, []uint64{uint64(w + 1), s}, nil, pyramid.ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if want == 0 {
				continue
			}
			if !ok || got[pyramid.BMSegment] < want {
				t.Fatalf("after crash: medium %d sector %d: %v %v, acknowledged version %d", w+1, s, got, ok, want)
			}
		}
	}
}
