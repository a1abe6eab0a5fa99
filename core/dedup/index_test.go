package dedup

import (
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
)

func TestIndex(t *testing.T) {
	x := NewIndex(MinIndexBytes)
	const n = 1000
	key := func(i uint64) uint64 { return (i + 1) * 0x9e3779b97f4a7c15 }
	for i := range uint64(n) {
		x.Put(key(i), Loc{Offset: int64(i), Sectors: 1})
	}
	for i := range uint64(n) {
		if l, ok := x.Get(key(i)); !ok || l.Offset != int64(i) {
			t.Fatalf("entry %d: %+v, %v", i, l, ok)
		}
	}
	// A hash put again takes the new location.
	x.Put(key(5), Loc{Offset: 99, Sectors: 1})
	if l, _ := x.Get(key(5)); l.Offset != 99 {
		t.Errorf("updated entry: %+v", l)
	}
	if _, ok := x.Get(key(n + 1)); ok {
		t.Error("hit for a hash never put")
	}
	// Hash 0 is stored too (0 marks empty entries inside).
	x.Put(0, Loc{Offset: 7})
	if l, ok := x.Get(0); !ok || l.Offset != 7 {
		t.Errorf("hash 0: %+v, %v", l, ok)
	}
	st := x.Stats()
	if st.Entries != n+1 || st.Puts != n+2 || st.Evictions != 0 || st.Capacity < n {
		t.Errorf("stats %+v", st)
	}
	if b := x.Bytes(); b > MinIndexBytes || b < MinIndexBytes*9/10 {
		t.Errorf("Bytes() = %d for a bound of %d", b, MinIndexBytes)
	}
}

// TestIndexReplacement: a full index keeps the entries that lookups use
// while new ones stream through, and among unused entries the newest.
func TestIndexReplacement(t *testing.T) {
	x := NewIndex(MinIndexBytes)
	capacity := x.Stats().Capacity
	rng := rand.New(rand.NewPCG(1, 2))
	popular := make([]uint64, capacity/20)
	for i := range popular {
		popular[i] = rng.Uint64()
		x.Put(popular[i], Loc{Offset: int64(i)})
	}
	// Ten times the capacity of new hashes, the popular ones looked up
	// now and then (each about once per capacity/4 puts).
	var recent []uint64
	for i := range 10 * capacity {
		h := rng.Uint64()
		x.Put(h, Loc{Offset: -1})
		if i >= 10*capacity-capacity/4 {
			recent = append(recent, h)
		}
		if i%5 == 0 {
			x.Get(popular[rng.IntN(len(popular))])
		}
	}
	kept := 0
	for _, h := range popular {
		if _, ok := x.Get(h); ok {
			kept++
		}
	}
	if kept < len(popular)*9/10 {
		t.Errorf("%d of %d popular entries kept", kept, len(popular))
	}
	kept = 0
	for _, h := range recent {
		if _, ok := x.Get(h); ok {
			kept++
		}
	}
	if kept < len(recent)*8/10 {
		t.Errorf("%d of the last %d new entries kept", kept, len(recent))
	}
	if st := x.Stats(); st.Entries > st.Capacity || st.Evictions == 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestIndexMemory: the heap the index takes is what Bytes reports.
func TestIndexMemory(t *testing.T) {
	for _, bound := range []int64{MinIndexBytes, 24 << 20} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		x := NewIndex(bound)
		for i := range uint64(x.Stats().Capacity * 2) {
			x.Put(i*0x9E3779B97F4A7C15, Loc{Segment: i})
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
		t.Logf("bound %d: Bytes %d, heap %d", bound, x.Bytes(), heap)
		if x.Bytes() > bound || heap > bound*21/20 || heap < x.Bytes()*9/10 {
			t.Errorf("bound %d: Bytes %d, heap grew by %d", bound, x.Bytes(), heap)
		}
		runtime.KeepAlive(x)
	}
}

// TestIndexConcurrent: puts and gets from several goroutines (run with
// -race) never return a location that was not put for the hash.
func TestIndexConcurrent(t *testing.T) {
	x := NewIndex(MinIndexBytes)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 3))
			for range 50000 {
				h := rng.Uint64N(100000)
				if rng.IntN(2) == 0 {
					x.Put(h, Loc{Segment: h})
				} else if l, ok := x.Get(h); ok && l.Segment != h {
					t.Errorf("hash %d: location of %d", h, l.Segment)
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkIndexGetMiss(b *testing.B) {
	x := NewIndex(64 << 20)
	rng := rand.New(rand.NewPCG(1, 1))
	for range x.Stats().Capacity {
		x.Put(rng.Uint64(), Loc{})
	}
	b.ResetTimer()
	for i := range uint64(b.N) {
		x.Get(i * 0x9E3779B97F4A7C15)
	}
}

// TestIndexAdd: Add fills free room only; it never replaces an entry.
func TestIndexAdd(t *testing.T) {
	x := NewIndex(MinIndexBytes)
	if !x.Add(42, Loc{Offset: 1}) || x.Add(42, Loc{Offset: 2}) {
		t.Fatal("Add of a new hash, then of the same hash again")
	}
	if l, _ := x.Get(42); l.Offset != 1 {
		t.Errorf("Add replaced a location: %+v", l)
	}
	// Fill the index with Put, then Add must not evict anything.
	rng := rand.New(rand.NewPCG(4, 4))
	for range 3 * x.Stats().Capacity {
		x.Put(rng.Uint64(), Loc{})
	}
	ev := x.Stats().Evictions
	added := 0
	for range 10000 {
		if x.Add(rng.Uint64(), Loc{}) {
			added++
		}
	}
	if x.Stats().Evictions != ev || added > 100 {
		t.Errorf("Add into a full index: %d added, %d evictions", added, x.Stats().Evictions-ev)
	}
}

// BenchmarkIndexGet64 looks up a write's worth of new hashes (64 sectors,
// all misses) in a full 64 MiB index, with and without Prefetch first.
func BenchmarkIndexGet64(b *testing.B) {
	x := NewIndex(64 << 20)
	rng := rand.New(rand.NewPCG(1, 1))
	for range x.Stats().Capacity {
		x.Put(rng.Uint64(), Loc{})
	}
	hs := make([]uint64, 64)
	for _, pre := range []bool{false, true} {
		b.Run(map[bool]string{false: "get", true: "prefetch+get"}[pre], func(b *testing.B) {
			for b.Loop() {
				for i := range hs {
					hs[i] = rng.Uint64()
				}
				if pre {
					x.Prefetch(hs)
				}
				for _, h := range hs {
					x.Get(h)
				}
			}
		})
	}
}
