package pyramid_test

import (
	"context"
	"errors"
	"flag"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shalestore/shale/backend"
	"github.com/shalestore/shale/backend/sim"
	"github.com/shalestore/shale/core/pyramid"
	"github.com/shalestore/shale/core/pyramid/pyramidtest"
)

var benchTuples = flag.Int("pyramid.tuples", 1_000_000, "block-map tuples in the pyramid benchmarks (the recorded run uses 10000000)")

// seqVolume generates the block map of a sequentially written volume:
// medium 1, one run per 32 KiB cblock (64 sectors), compressed to 8..32 KiB
// and packed back to back into segments of 56 MiB (7 data AUs of 8 MiB).
type seqVolume struct {
	rng      *rand.Rand
	lba, off uint64
	seg      uint64
}

func newSeqVolume() *seqVolume { return &seqVolume{rng: rand.New(rand.NewPCG(1, 2)), seg: 1} }

func (v *seqVolume) next(t []uint64) []uint64 {
	clen := uint64(8192 + v.rng.IntN(24577))
	if v.off+clen > 56<<20 {
		v.seg++
		v.off = 0
	}
	t = append(t[:0], 1, v.lba, 64, pyramid.KindData, v.seg, v.off, clen, 0)
	v.lba += 64
	v.off += clen
	return t
}

// benchDB opens a DB on memory devices with an in-memory log (no
// durability cost: the benchmarks measure the pyramid, not the log).
func benchDB(tb testing.TB, cacheBytes int64) (*pyramid.DB, *sim.Device) {
	ctx := context.Background()
	dev := func(size int64) *sim.Device {
		d, err := sim.New(sim.Options{Size: size, Kind: backend.SSD, Profile: sim.SSDProfile().ZeroLatency(),
			Time: sim.Virtual, Logger: quiet})
		if err != nil {
			tb.Fatal(err)
		}
		return d
	}
	pagesDev := dev(64 << 30)
	ps, err := pyramidtest.OpenPageStore(ctx, pagesDev)
	if err != nil {
		tb.Fatal(err)
	}
	rs, err := pyramidtest.OpenRootStore(ctx, dev(1<<20))
	if err != nil {
		tb.Fatal(err)
	}
	db, err := pyramid.Open(ctx, pyramid.Options{Pages: ps, Roots: rs, Log: &pyramidtest.MemLog{},
		Schemas: pyramid.StandardSchemas(), CacheBytes: cacheBytes, Logger: quiet})
	if err != nil {
		tb.Fatal(err)
	}
	return db, pagesDev
}

// randomVolume generates 4 KiB overwrites (8-sector runs, one cblock each)
// at random aligned places of a volume of the given sectors.
type randomVolume struct {
	seqVolume
	sectors uint64
}

func (v *randomVolume) next(t []uint64) []uint64 {
	t = v.seqVolume.next(t)
	t[pyramid.BMLBA] = v.rng.Uint64N(v.sectors/8) * 8
	t[pyramid.BMLen] = 8
	return t
}

type volume interface{ next(t []uint64) []uint64 }

// fill persists n tuples of a sequential volume, four cblocks (a 128 KiB
// write) per persist, and waits for the background flushes and merges to
// settle into one patch.
func fill(tb testing.TB, db *pyramid.DB, n int) time.Duration {
	return fillWith(tb, db, n, newSeqVolume())
}

func fillWith(tb testing.TB, db *pyramid.DB, n int, vol volume) time.Duration {
	ctx := context.Background()
	bmap := db.Relation(pyramid.BlockMap)
	var b pyramid.Batch
	var t []uint64
	start := time.Now()
	for i := 0; i < n; i++ {
		t = vol.next(t)
		if err := b.Insert(bmap, t...); err != nil {
			tb.Fatal(err)
		}
		if b.Len() == 4 || i == n-1 {
			if _, err := db.Persist(ctx, &b); err != nil {
				tb.Fatal(err)
			}
			b.Reset()
		}
	}
	elapsed := time.Since(start)
	if err := db.Flush(ctx); err != nil {
		tb.Fatal(err)
	}
	for len(bmap.Patches()) > 1 {
		ps := bmap.Patches()
		m, err := bmap.Merge(ctx, 0, len(ps)-1)
		if errors.Is(err, pyramid.ErrStale) {
			continue // the background merger got there first
		}
		if err != nil {
			tb.Fatal(err)
		}
		if err := bmap.Flatten(ctx, m); err != nil && !errors.Is(err, pyramid.ErrStale) {
			tb.Fatal(err)
		}
	}
	return elapsed
}

// BenchmarkInsertBlockMap persists -pyramid.tuples block-map tuples of a
// sequentially written volume (4 per persist) with background flushes and
// merges running, and reports tuples/s (insert rate, until the last
// persist returns) and bytes per tuple on disk once merged into one patch.
func BenchmarkInsertBlockMap(b *testing.B) {
	n := *benchTuples
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		db, _ := benchDB(b, 256<<20)
		elapsed := fill(b, db, n)
		ps := db.Relation(pyramid.BlockMap).Patches()
		b.ReportMetric(float64(n)/elapsed.Seconds(), "tuples/s")
		b.ReportMetric(float64(ps[0].Bytes)/float64(ps[0].Tuples), "disk-bytes/tuple")
		st := db.Stats().Snapshot()
		b.ReportMetric(float64(st.FlushBytes+st.MergeBytes)/float64(n), "written-bytes/tuple")
		db.Close()
	}
}

// BenchmarkInsertBlockMapRandom persists -pyramid.tuples random 4 KiB
// overwrites (4 per persist) over a volume of as many 4 KiB blocks: most
// land on runs already in DRAM or on disk, so inserts split runs and
// merges resolve overlaps.
func BenchmarkInsertBlockMapRandom(b *testing.B) {
	n := *benchTuples
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		db, _ := benchDB(b, 256<<20)
		elapsed := fillWith(b, db, n, &randomVolume{seqVolume: *newSeqVolume(), sectors: uint64(n) * 8})
		ps := db.Relation(pyramid.BlockMap).Patches()
		b.ReportMetric(float64(n)/elapsed.Seconds(), "tuples/s")
		b.ReportMetric(float64(ps[0].Tuples), "runs")
		b.ReportMetric(float64(ps[0].Bytes)/float64(ps[0].Tuples), "disk-bytes/run")
		db.Close()
	}
}

var (
	lookupOnce sync.Once
	lookupDB   *pyramid.DB
)

// BenchmarkGetBlockMap looks up random sectors of a volume of
// -pyramid.tuples block-map tuples, merged into one persisted patch, read
// through the page cache (large enough to hold every page once warm).
// Parallel over GOMAXPROCS goroutines; ns/op is per lookup.
func BenchmarkGetBlockMap(b *testing.B) {
	lookupOnce.Do(func() {
		lookupDB, _ = benchDB(b, 1<<30)
		fill(b, lookupDB, *benchTuples)
	})
	benchGet(b, lookupDB)
}

// BenchmarkGetBlockMapSmallCache is BenchmarkGetBlockMap with a 4 MiB page
// cache: most lookups miss and read pages from the (memory) page store.
func BenchmarkGetBlockMapSmallCache(b *testing.B) {
	db, _ := benchDB(b, 4<<20)
	defer db.Close()
	fill(b, db, min(*benchTuples, 1_000_000))
	benchGet(b, db)
}

func benchGet(b *testing.B, db *pyramid.DB) {
	bmap := db.Relation(pyramid.BlockMap)
	sectors := uint64(bmap.Patches()[0].LastEnd)
	misses := db.Stats().CacheMisses.Load()
	b.ReportAllocs()
	b.ResetTimer()
	var seed uint64
	var mu sync.Mutex
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		seed++
		rng := rand.New(rand.NewPCG(seed, 3))
		mu.Unlock()
		ctx := context.Background()
		key := []uint64{1, 0}
		var dst []uint64
		for pb.Next() {
			key[1] = rng.Uint64N(sectors)
			var ok bool
			var err error
			dst, ok, err = bmap.Get(ctx, key, dst[:0], pyramid.ReadOptions{})
			if err != nil || !ok {
				b.Fatalf("Get %v: %v %v", key, ok, err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
	b.ReportMetric(float64(db.Stats().CacheMisses.Load()-misses)/float64(b.N), "misses/op")
}

// BenchmarkGetBaselineSorted is the baseline for BenchmarkGetBlockMap: the
// same random lookups as a binary search over a plain sorted []uint64 of
// the run starts held in memory (no pages, no cache, no DRAM patch), the
// best an in-memory index of this volume could do.
func BenchmarkGetBaselineSorted(b *testing.B) {
	n := *benchTuples
	starts := make([]uint64, n)
	vol := newSeqVolume()
	var t []uint64
	for i := range starts {
		t = vol.next(t)
		starts[i] = t[pyramid.BMLBA]
	}
	sectors := starts[n-1] + 64
	b.ReportAllocs()
	b.ResetTimer()
	var seed atomic.Uint64
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(seed.Add(1), 3))
		for pb.Next() {
			x := rng.Uint64N(sectors)
			i, _ := slices.BinarySearch(starts, x+1)
			if i == 0 || starts[i-1] > x {
				b.Fatal("not found")
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
}
