package dedup

import (
	"sync"
	"sync/atomic"
)

// Index is the inline dedup index: sector hash -> Loc, a bounded cache of
// recent and popular hashes. Its memory is allocated once, at its bound,
// so what stats report is what it takes.
//
// It is a set-associative table: a hash has one bucket of Ways entries
// (a bucket's hashes fill one 64-byte cache line, so a miss, the common
// case, costs one line). A full bucket replaces the entry hits have
// used least (GCLOCK): every entry has a small hit count; a Put into a
// full bucket ages the bucket (takes one from every count) until an entry
// is at zero, and replaces the first such entry after the bucket's hand,
// which then moves past it. New data is thus kept in the order it came
// (the hand makes a full bucket of unused entries first in, first out),
// and an entry hit again and again outlives a stream of new writes.
//
// Why not ristretto, which shale's other caches use: measured on the
// corpus of bench/dedup-vs-ref.sh, its buffered Set dropped 15-30% of the
// entries when writes came fast, it took about 340 bytes of heap per entry
// (this table takes 33), and its lookups cost the write path a quarter of
// its throughput on new data.
//
// Safe for concurrent use: buckets are guarded by striped locks.
type Index struct {
	hashes []uint64 // Ways per bucket; 0 is an empty entry; written atomically (Prefetch reads them unlocked)
	locs   []Loc
	counts []uint8
	hands  []uint8 // per bucket
	nb     uint64  // buckets
	locks  [indexLocks]sync.Mutex
	bytes  int64

	entries, evictions, puts atomic.Int64
}

// Ways is the number of entries of a bucket.
const Ways = 8

// maxCount bounds an entry's hit count (GCLOCK's weight).
const maxCount = 7

// indexLocks is the number of lock stripes (a power of two).
const indexLocks = 1024

// EntryBytes is the memory of one entry: its hash, its Loc and its count.
const EntryBytes = 8 + 24 + 1

// MinIndexBytes is the smallest bound NewIndex accepts.
const MinIndexBytes = 1 << 20

// NewIndex returns an index taking at most maxBytes (at least
// MinIndexBytes): as many buckets as fit.
func NewIndex(maxBytes int64) *Index {
	maxBytes = max(maxBytes, MinIndexBytes)
	nb := uint64((maxBytes - indexLocks*8) / (Ways*EntryBytes + 1))
	x := &Index{
		hashes: make([]uint64, nb*Ways),
		locs:   make([]Loc, nb*Ways),
		counts: make([]uint8, nb*Ways),
		hands:  make([]uint8, nb),
		nb:     nb,
	}
	x.bytes = int64(nb*(Ways*EntryBytes+1)) + int64(len(x.locks))*8
	return x
}

// bucket returns the bucket of h (the high half of h scaled to the
// bucket count, so any count works) and the stored form of h (never 0,
// which marks an empty entry).
func (x *Index) bucket(h uint64) (uint64, uint64) {
	if h == 0 {
		h = 1
	}
	return (h >> 32) * x.nb >> 32, h
}

func (x *Index) lock(b uint64) *sync.Mutex { return &x.locks[b&(indexLocks-1)] }

// Get returns the location recorded for hash h, and counts the hit.
func (x *Index) Get(h uint64) (Loc, bool) {
	b, h := x.bucket(h)
	first := b * Ways
	mu := x.lock(b)
	mu.Lock()
	for i := first; i < first+Ways; i++ {
		if x.hashes[i] == h {
			if x.counts[i] < maxCount {
				x.counts[i]++
			}
			loc := x.locs[i]
			mu.Unlock()
			return loc, true
		}
	}
	mu.Unlock()
	return Loc{}, false
}

// Prefetch touches the buckets of hashes so that the Gets that follow
// find them in the CPU cache: the loads here do not depend on each other,
// so the CPU overlaps their cache misses, where Get's, one after another
// under a lock, wait for each in turn.
func (x *Index) Prefetch(hashes []uint64) {
	var sink uint64
	for _, h := range hashes {
		b, _ := x.bucket(h)
		// Atomic: Puts store hashes under a lock this does not take.
		sink += atomic.LoadUint64(&x.hashes[b*Ways])
	}
	prefetchSink.Store(sink)
}

// prefetchSink keeps Prefetch's loads from being optimised away.
var prefetchSink atomic.Uint64

// Put records that a sector hashing to h is at loc; an entry of the same
// hash takes the new location (newer data is likelier to be read again
// soon, and to survive GC).
func (x *Index) Put(h uint64, loc Loc) {
	b, h := x.bucket(h)
	first := b * Ways
	mu := x.lock(b)
	mu.Lock()
	defer mu.Unlock()
	x.puts.Add(1)
	free := -1
	for i := first; i < first+Ways; i++ {
		switch x.hashes[i] {
		case h:
			x.locs[i] = loc
			return
		case 0:
			if free < 0 {
				free = int(i)
			}
		}
	}
	if free >= 0 {
		atomic.StoreUint64(&x.hashes[free], h)
		x.locs[free], x.counts[free] = loc, 0
		x.entries.Add(1)
		return
	}
	// Full: age the bucket until an entry has no hits left, and replace
	// the first such entry from the hand on.
	c := x.counts[first : first+Ways]
	least := c[0]
	for _, n := range c[1:] {
		least = min(least, n)
	}
	if least > 0 {
		for i := range c {
			c[i] -= least
		}
	}
	hand := int(x.hands[b])
	for k := range Ways {
		w := (hand + k) % Ways
		if c[w] == 0 {
			i := first + uint64(w)
			atomic.StoreUint64(&x.hashes[i], h)
			x.locs[i], c[w] = loc, 0
			x.hands[b] = uint8((w + 1) % Ways)
			x.evictions.Add(1)
			return
		}
	}
}

// Add records h at loc only where that displaces nothing: h is absent
// and its bucket has a free entry. It reports whether it added h. For
// filling the index from the dedup table at start, while writes put
// newer locations.
func (x *Index) Add(h uint64, loc Loc) bool {
	b, h := x.bucket(h)
	first := b * Ways
	mu := x.lock(b)
	mu.Lock()
	defer mu.Unlock()
	free := -1
	for i := first; i < first+Ways; i++ {
		switch x.hashes[i] {
		case h:
			return false
		case 0:
			if free < 0 {
				free = int(i)
			}
		}
	}
	if free < 0 {
		return false
	}
	atomic.StoreUint64(&x.hashes[free], h)
	x.locs[free], x.counts[free] = loc, 0
	x.entries.Add(1)
	return true
}

// Bytes is the memory the index holds: all of it from the start, at most
// the bound it was made with.
func (x *Index) Bytes() int64 { return x.bytes }

// IndexStats are an index's counters.
type IndexStats struct {
	// Entries is the number of hashes held; Capacity how many fit.
	Entries, Capacity int64
	// Puts, Evictions: entries recorded, and entries they replaced.
	Puts, Evictions int64
}

// Stats returns the index's counters.
func (x *Index) Stats() IndexStats {
	return IndexStats{Entries: x.entries.Load(), Capacity: int64(x.nb * Ways),
		Puts: x.puts.Load(), Evictions: x.evictions.Load()}
}
