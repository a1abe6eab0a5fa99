// Package dedup finds the sectors of a write that are already stored, the
// inline half of shale's deduplication (DESIGN.md §3 step 3; the paper's
// §4 on dedup).
//
// Every 512-byte sector gets a stable 64-bit hash (xxhash64, the same in
// every process and release: the full dedup table persists hashes). Of the
// data a write stores, only every RecordEvery-th sector by position (its
// address in the volume is a multiple of RecordEvery) is recorded in the
// Index, a bounded cache of recent and popular hashes; every sector of a
// write is looked up. A hit is only a hint: Plan confirms it byte for byte
// against the stored cblock and extends the match sector by sector in both
// directions, so a run duplicated at any alignment is found as long as it
// is at least RecordEvery sectors long (one of its source sectors was then
// recorded). A hash collision costs a read, never correctness.
//
// The package does no I/O: Plan gets the stored data through a callback,
// so the matching rules are tested on their own.
package dedup

import "github.com/cespare/xxhash/v2"

// SectorSize is the unit of deduplication.
const SectorSize = 512

// RecordEvery: one sector in RecordEvery, by position, is recorded.
const RecordEvery = 8

// MinRun is the shortest duplicate run Plan reports: a shorter one saves
// less than the block-map tuple and the read it costs. RecordEvery is the
// shortest run Plan is sure to find. Zero sectors next to a run count
// towards it (they cost nothing either way): the last block of a small
// file, a few sectors of data and zeros up to the filesystem's block,
// is a duplicate like any other block.
const MinRun = RecordEvery

// Hash is the stable 64-bit hash of one sector.
func Hash(sector []byte) uint64 { return xxhash.Sum64(sector) }

// Loc is where a recorded sector is stored: a cblock (segment, offset,
// stored length) and the sector's index among the cblock's Sectors
// logical sectors.
type Loc struct {
	Segment uint64
	Offset  int64
	CLen    int32
	Sector  uint16
	Sectors uint16
}

// Run is a piece of a write's plan: sectors [Start, End) of the write are
// new data (Dup false) or the same bytes as sectors Src.Sector.. of the
// cblock at Src (Dup true).
type Run struct {
	Start, End int
	Dup        bool
	Src        Loc
}

// Source gives Plan what it needs about the stored data.
type Source interface {
	// Lookup returns the location recorded for h.
	Lookup(h uint64) (Loc, bool)
	// Cblock returns the logical sectors of the cblock at loc (loc.Sector
	// aside), or ok false when it cannot be read now (a miss, not an
	// error). The slice is valid until the next call.
	Cblock(loc Loc) (data []byte, ok bool)
}

// Plan cuts the n sectors of p into runs, in order, covering all of them:
// duplicate runs found through src, and the new runs between them.
// hashes[i] is Hash of sector i. Zero sectors are never looked up (the
// write path stores them as metadata). plan is reused for the result.
//
// A duplicate run is MinRun sectors or more, counting the zero sectors
// next to it and the duplicate runs it abuts: a duplicate region of the
// write spans several stored cblocks, each piece a run of its own, and a
// piece at a cblock boundary that is not a multiple of RecordEvery may be
// short. A short piece that ends where its cblock ends waits for the next
// piece to abut it; one that starts where the previous duplicate run ends
// joins it.
func Plan(p []byte, hashes []uint64, src Source, isZero func(i int) bool, plan []Run) []Run {
	n := len(p) / SectorSize
	plan = plan[:0]
	sector := func(i int) []byte { return p[i*SectorSize : (i+1)*SectorSize] }
	done := 0 // sectors before done are planned
	// wait is a short duplicate run that ended at its cblock's end, kept
	// until the next run found shows whether they abut (none when
	// wait.End == 0). Its sectors are not planned yet: when the next run
	// does not abut it, they are new data.
	var wait Run
	for i := 0; i < n; {
		if isZero(i) {
			i++
			continue
		}
		loc, ok := src.Lookup(hashes[i])
		if !ok || loc.Sector >= loc.Sectors {
			i++
			continue
		}
		data, ok := src.Cblock(loc)
		if !ok || len(data) < int(loc.Sectors)*SectorSize {
			i++
			continue
		}
		stored := func(k int) []byte { return data[k*SectorSize : (k+1)*SectorSize] }
		k := int(loc.Sector)
		if string(stored(k)) != string(sector(i)) {
			i++ // a collision, or the cblock was not what the index said
			continue
		}
		floor := max(done, wait.End)
		back := 0
		for i-back-1 >= floor && k-back-1 >= 0 && string(stored(k-back-1)) == string(sector(i-back-1)) {
			back++
		}
		fwd := 1
		for i+fwd < n && k+fwd < int(loc.Sectors) && string(stored(k+fwd)) == string(sector(i+fwd)) {
			fwd++
		}
		start, end := i-back, i+fwd
		run := Run{Start: start, End: end, Dup: true, Src: loc}
		run.Src.Sector = uint16(k - back)
		waiting := wait.End > 0 && wait.End == start
		long := end-start >= MinRun ||
			end-start+zeroRun(start-1, -1, floor, isZero)+zeroRun(end, 1, n, isZero) >= MinRun ||
			start == done && len(plan) > 0 && plan[len(plan)-1].Dup ||
			waiting && end-wait.Start >= MinRun
		if !long {
			if k+fwd == int(loc.Sectors) && end < n {
				// Ends where its cblock does: the next piece may abut it.
				// (A wait it replaces is dropped: two pieces are not
				// kept waiting.)
				wait = run
				i = end
				continue
			}
			i++
			continue
		}
		if waiting {
			start = wait.Start
		}
		if start > done {
			plan = append(plan, Run{Start: done, End: start})
		}
		if waiting {
			plan = append(plan, wait)
		}
		plan = append(plan, run)
		wait = Run{}
		done, i = end, end
	}
	if done < n {
		plan = append(plan, Run{Start: done, End: n})
	}
	return plan
}

// zeroRun counts the zero sectors from i in direction dir (1 or -1) up to
// limit (exclusive; -1 goes down to and including limit), at most MinRun.
func zeroRun(i, dir, limit int, isZero func(int) bool) int {
	c := 0
	for c < MinRun && (dir > 0 && i < limit || dir < 0 && i >= limit) && isZero(i) {
		c++
		i += dir
	}
	return c
}
