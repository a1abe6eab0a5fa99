package pyramid

import "sort"

// elideRange is a closed range [lo, hi] of deleted values, with the highest
// sequence number of the elide records that built it.
type elideRange struct {
	lo, hi, seq uint64
}

// elideSet is the in-memory form of an elide table: sorted, disjoint ranges,
// adjacent ones coalesced. It is immutable; adding makes a new set, so
// readers filter without locks.
//
// Its size is bounded the way the paper argues (§4.10): ranges coalesce, and
// the keys of elide tables are dense, never-reused ids (medium, segment), so
// deleted ids collapse into few ranges.
type elideSet struct {
	r      []elideRange
	maxSeq uint64
}

var emptyElideSet = &elideSet{}

// contains reports whether v is in a deleted range.
func (s *elideSet) contains(v uint64) bool {
	r := s.r
	if len(r) == 0 {
		return false
	}
	i := sort.Search(len(r), func(i int) bool { return r[i].hi >= v })
	return i < len(r) && r[i].lo <= v
}

// covers reports whether every value in [lo, hi] is deleted.
func (s *elideSet) covers(lo, hi uint64) bool {
	r := s.r
	i := sort.Search(len(r), func(i int) bool { return r[i].hi >= lo })
	return i < len(r) && r[i].lo <= lo && hi <= r[i].hi
}

// add returns the set with [lo, hi] added.
func (s *elideSet) add(lo, hi, seq uint64) *elideSet {
	out := &elideSet{r: make([]elideRange, 0, len(s.r)+1), maxSeq: max(s.maxSeq, seq)}
	nr := elideRange{lo: lo, hi: hi, seq: seq}
	placed := false
	for _, x := range s.r {
		switch {
		case x.hi < nr.lo && x.hi+1 != nr.lo: // wholly before, not adjacent
			out.r = append(out.r, x)
		case nr.hi < x.lo && nr.hi+1 != x.lo: // wholly after
			if !placed {
				out.r = append(out.r, nr)
				placed = true
			}
			out.r = append(out.r, x)
		default: // overlapping or adjacent: absorb
			nr.lo, nr.hi, nr.seq = min(nr.lo, x.lo), max(nr.hi, x.hi), max(nr.seq, x.seq)
		}
	}
	if !placed {
		out.r = append(out.r, nr)
	}
	return out
}

// maxSeqOverlapping returns the highest sequence number of the ranges that
// meet [lo, hi], 0 if none do.
func (s *elideSet) maxSeqOverlapping(lo, hi uint64) uint64 {
	r := s.r
	i := sort.Search(len(r), func(i int) bool { return r[i].hi >= lo })
	var m uint64
	for ; i < len(r) && r[i].lo <= hi; i++ {
		m = max(m, r[i].seq)
	}
	return m
}

// rule is a resolved elide rule.
type rule struct {
	field int
	table *Relation
}
