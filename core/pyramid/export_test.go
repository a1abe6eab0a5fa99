package pyramid

import (
	"context"
	"fmt"
)

// LongTests is the -long flag, for the external tests.
var LongTests = long

// DebugSources describes, source by source (DRAM patches then persisted
// patches, newest first), the tuple each holds at or before key: for
// diagnosing a wrong read in tests.
func (r *Relation) DebugSources(ctx context.Context, key []uint64) []string {
	v := r.cur.Load()
	var out []string
	for i, m := range v.mems {
		n, e := m.seekLE(key)
		if n == nil {
			out = append(out, fmt.Sprintf("mem %d (minSeq %d hi %d): nothing ≤ key", i, m.minSeq, m.hi))
			continue
		}
		out = append(out, fmt.Sprintf("mem %d (minSeq %d hi %d): %v %v seq %d match %v", i, m.minSeq, m.hi, n.key, e.vals, e.seq, m.matches(n, e, key)))
	}
	for i, pt := range v.patches {
		it := &patchIter{ctx: ctx, pt: pt}
		n, med := 0, map[uint64]int{}
		for ok := it.first(); ok; ok = it.next() {
			n++
			med[it.cur()[0]]++
		}
		out = append(out, fmt.Sprintf("patch %d (%s) seq %d..%d: info tuples %d leaves %d levels %d keys %v..%v; scan finds %d (err %v) per first field %v",
			i, pt.origin, pt.info.SeqLo, pt.info.SeqHi, pt.info.Tuples, pt.info.LeafPages, pt.info.Levels, pt.info.MinKey, pt.info.MaxKey, n, it.err(), med))
		p, j, err := pt.getLE(ctx, key)
		switch {
		case err != nil:
			out = append(out, fmt.Sprintf("patch %d seq %d..%d: %v", i, pt.info.SeqLo, pt.info.SeqHi, err))
		case p == nil:
			out = append(out, fmt.Sprintf("patch %d seq %d..%d: nothing ≤ key (mayHold %v)", i, pt.info.SeqLo, pt.info.SeqHi, pt.mayHold(key)))
		default:
			out = append(out, fmt.Sprintf("patch %d seq %d..%d: %v (mayHold %v)", i, pt.info.SeqLo, pt.info.SeqHi, p.Tuple(j, nil), pt.mayHold(key)))
		}
	}
	return out
}
