package pyramid_test

import (
	"slices"
	"testing"

	"github.com/shalestore/shale/core/pyramid"
)

// TestIterLowerPrefixAcrossIndexPages: an iterator whose Lower is a prefix
// of the key (a medium, without an lba) must start at the first tuple with
// that prefix even when the prefix spans many leaf pages under one index
// page. Index descent for seekGE once picked the last child whose key
// prefix was ≤ the probe, so it started at the prefix's last leaf page
// and skipped the tuples before it.
func TestIterLowerPrefixAcrossIndexPages(t *testing.T) {
	e := newEnv(t, pyramid.Options{Manual: true, MaxPageTuples: 4})
	r := e.rel(pyramid.BlockMap)
	var want [][]uint64
	for m := uint64(1); m <= 3; m++ {
		for i := uint64(0); i < 40; i++ {
			// Gaps between runs keep them from coalescing.
			tu := bm(m, i*10, 5, 100+i, 0)
			e.persist(r, tu)
			if m == 2 {
				want = append(want, tu)
			}
		}
	}
	check := func(stage string) {
		t.Helper()
		for _, lower := range [][]uint64{{2}, {2, 0}} {
			got := e.scan(r, pyramid.IterOptions{Lower: lower, Upper: []uint64{3}})
			if !slices.EqualFunc(got, want, slices.Equal) {
				t.Errorf("%s: Lower %v: %d tuples, first %v; want %d, first %v", stage, lower, len(got), first(got), len(want), want[0])
			}
		}
	}
	check("dram")
	if err := r.Flush(e.ctx); err != nil {
		t.Fatal(err)
	}
	if p := r.Patches(); len(p) != 1 || p[0].Levels < 1 {
		t.Fatalf("want one persisted patch with an index level, got %+v", p)
	}
	check("persisted")
}

func first(ts [][]uint64) []uint64 {
	if len(ts) == 0 {
		return nil
	}
	return ts[0]
}
