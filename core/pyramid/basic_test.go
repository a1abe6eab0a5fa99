package pyramid_test

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/shalestore/shale/core/pyramid"
)

func bm(medium, lba, n, seg, off uint64) []uint64 {
	return []uint64{medium, lba, n, pyramid.KindData, seg, off, 4096, 0}
}

func TestBlockMapOverwriteFlushReopen(t *testing.T) {
	e := newEnv(t, pyramid.Options{Manual: true})
	r := e.rel(pyramid.BlockMap)
	e.persist(r, bm(1, 0, 100, 7, 0))
	e.persist(r, bm(1, 40, 10, 8, 0))
	want := [][]uint64{
		{1, 0, 40, 0, 7, 0, 4096, 0},
		{1, 40, 10, 0, 8, 0, 4096, 0},
		{1, 50, 50, 0, 7, 0, 4096, 50},
	}
	check := func(stage string) {
		t.Helper()
		if got := e.scan(r, pyramid.IterOptions{}); !slices.EqualFunc(got, want, slices.Equal) {
			t.Fatalf("%s: scan\n%v\nwant\n%v", stage, got, want)
		}
		got, ok, err := r.Get(e.ctx, []uint64{1, 45}, nil, pyramid.ReadOptions{})
		if err != nil || !ok || !slices.Equal(got, want[1]) {
			t.Fatalf("%s: Get 45 = %v %v %v", stage, got, ok, err)
		}
		var pieces [][]uint64
		if err := r.Resolve(e.ctx, []uint64{1}, 30, 30, pyramid.ReadOptions{}, func(t []uint64) error {
			pieces = append(pieces, slices.Clone(t))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		wantP := [][]uint64{
			{1, 30, 10, 0, 7, 0, 4096, 30},
			{1, 40, 10, 0, 8, 0, 4096, 0},
			{1, 50, 10, 0, 7, 0, 4096, 50},
		}
		if !slices.EqualFunc(pieces, wantP, slices.Equal) {
			t.Fatalf("%s: Resolve\n%v\nwant\n%v", stage, pieces, wantP)
		}
	}
	check("dram")
	if err := r.Flush(e.ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(r.Patches()); n != 1 {
		t.Fatalf("%d patches", n)
	}
	check("flushed")
	e.crash(rand.New(rand.NewPCG(1, 1)))
	r = e.rel(pyramid.BlockMap)
	check("reopened")
	// A newer write in DRAM over the persisted patch.
	e.persist(r, bm(1, 45, 10, 9, 0))
	want = [][]uint64{
		{1, 0, 40, 0, 7, 0, 4096, 0},
		{1, 40, 5, 0, 8, 0, 4096, 0},
		{1, 45, 10, 0, 9, 0, 4096, 0},
		{1, 55, 45, 0, 7, 0, 4096, 55},
	}
	if got := e.scan(r, pyramid.IterOptions{}); !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("scan\n%v\nwant\n%v", got, want)
	}
	if err := r.Flush(e.ctx); err != nil {
		t.Fatal(err)
	}
	m, err := r.Merge(e.ctx, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flatten(e.ctx, m); err != nil {
		t.Fatal(err)
	}
	if got := e.scan(r, pyramid.IterOptions{}); !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("after merge scan\n%v\nwant\n%v", got, want)
	}
	if p := r.Patches(); len(p) != 1 || p[0].Tuples != 4 {
		t.Fatalf("patches %+v", p)
	}
}

func TestElideMedium(t *testing.T) {
	e := newEnv(t, pyramid.Options{Manual: true})
	r := e.rel(pyramid.BlockMap)
	el := e.rel(pyramid.MediumElide)
	for m := uint64(1); m <= 5; m++ {
		e.persist(r, bm(m, 0, 10, m, 0))
	}
	if err := r.Flush(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.elide(el, 2, 3)
	e.elide(el, 4, 4)
	got := e.scan(r, pyramid.IterOptions{})
	if len(got) != 2 || got[0][0] != 1 || got[1][0] != 5 {
		t.Fatalf("after elide: %v", got)
	}
	if relaxed := e.scan(r, pyramid.IterOptions{Relaxed: true}); len(relaxed) != 5 {
		t.Fatalf("relaxed: %v", relaxed)
	}
	if ranges := e.scan(el, pyramid.IterOptions{}); len(ranges) != 2 {
		t.Fatalf("elide table in DRAM: %v", ranges)
	}
	if err := el.Flush(e.ctx); err != nil {
		t.Fatal(err)
	}
	if ranges := e.scan(el, pyramid.IterOptions{}); len(ranges) != 1 || !slices.Equal(ranges[0], []uint64{2, 3}) {
		t.Fatalf("elide table flushed: %v, want one coalesced range", ranges)
	}
	did, err := r.Compact(e.ctx)
	if err != nil || !did {
		t.Fatalf("compact: %v %v", did, err)
	}
	if p := r.Patches(); len(p) != 1 || p[0].Tuples != 2 {
		t.Fatalf("after rewrite: %+v", p)
	}
	if relaxed := e.scan(r, pyramid.IterOptions{Relaxed: true}); len(relaxed) != 2 {
		t.Fatalf("relaxed after rewrite: %v", relaxed)
	}
	e.crash(rand.New(rand.NewPCG(2, 2)))
	r = e.rel(pyramid.BlockMap)
	if got := e.scan(r, pyramid.IterOptions{}); len(got) != 2 {
		t.Fatalf("after crash: %v", got)
	}
}

// TestPatchPages checks that PatchPages lists every page once (the leaves
// PatchInfo counts and the index pages above them), and that LivePages
// keeps the patches an open iterator reads live across a flatten.
func TestPatchPages(t *testing.T) {
	e := newEnv(t, pyramid.Options{Manual: true, PageBytes: 1024, MaxPageTuples: 4})
	r := e.rel(pyramid.BlockMap)
	var b pyramid.Batch
	for i := uint64(0); i < 100; i++ {
		if err := b.Insert(r, bm(1, i*2, 1, 3, i*512)...); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.db.Persist(e.ctx, &b); err != nil {
		t.Fatal(err)
	}
	must(t, r.Flush(e.ctx))
	pi := r.Patches()[0]
	seen := map[pyramid.Addr]bool{}
	leaves, levels := 0, map[int]int{}
	must(t, r.PatchPages(e.ctx, pi, func(a pyramid.Addr, level int) error {
		if seen[a] {
			t.Fatalf("page %s twice", a)
		}
		seen[a] = true
		levels[level]++
		if level == 0 {
			leaves++
		}
		return nil
	}))
	if uint64(leaves) != pi.LeafPages || len(levels) != pi.Levels+1 || levels[pi.Levels] != 1 {
		t.Fatalf("%d leaves (info says %d), pages per level %v, info levels %d", leaves, pi.LeafPages, levels, pi.Levels)
	}
	if pi.Levels < 2 {
		t.Fatalf("want a deeper index for this test, got %d levels", pi.Levels)
	}
	var live []pyramid.PatchInfo
	r.LivePages(func(p pyramid.PatchInfo) { live = append(live, p) })
	if len(live) != 1 || live[0].Root != pi.Root {
		t.Fatalf("live %v", live)
	}
	// An iterator open across a merge keeps the old patches live.
	e.persist(r, bm(1, 1, 1, 4, 0))
	must(t, r.Flush(e.ctx))
	it := r.NewIter(e.ctx, pyramid.IterOptions{})
	m, err := r.Merge(e.ctx, 0, 1)
	must(t, err)
	must(t, r.Flatten(e.ctx, m))
	count := func() int {
		n := 0
		r.LivePages(func(pyramid.PatchInfo) { n++ })
		return n
	}
	if n := count(); n != 3 {
		t.Fatalf("%d live patches with an iterator open, want 3 (the merged one and its two inputs)", n)
	}
	n := 0
	for it.Next() {
		n++
	}
	must(t, it.Err())
	it.Close()
	if n != 101 {
		t.Fatalf("iterator saw %d tuples", n)
	}
	if n := count(); n != 1 {
		t.Fatalf("%d live patches after Close, want 1", n)
	}
}

// TestElideRewritePolicy: Compact rewrites a patch for elision only when
// the index shows a good share of its leaves elided; the rest waits for
// the next merge.
func TestElideRewritePolicy(t *testing.T) {
	e := newEnv(t, pyramid.Options{Manual: true, PageBytes: 1024, MaxPageTuples: 8})
	r, el := e.rel(pyramid.BlockMap), e.rel(pyramid.MediumElide)
	var b pyramid.Batch
	for med := uint64(1); med <= 20; med++ {
		for i := uint64(0); i < 16; i++ {
			must(t, b.Insert(r, bm(med, i*4, 2, med, i*512)...))
		}
	}
	_, err := e.db.Persist(e.ctx, &b)
	must(t, err)
	must(t, r.Flush(e.ctx))
	before := r.Patches()[0]
	e.elide(el, 7, 7) // 1 medium of 20: 5% of the leaves
	did, err := r.Compact(e.ctx)
	must(t, err)
	if did || r.Patches()[0].Root != before.Root {
		t.Fatalf("rewrote a patch for 5%% elided")
	}
	if got := len(e.scan(r, pyramid.IterOptions{})); got != 19*16 {
		t.Fatalf("%d tuples visible", got)
	}
	e.elide(el, 1, 6) // now 7 of 20
	did, err = r.Compact(e.ctx)
	must(t, err)
	if !did {
		t.Fatal("did not rewrite a patch 35% elided")
	}
	if p := r.Patches()[0]; p.Tuples != 13*16 {
		t.Fatalf("rewritten patch holds %d tuples, want %d", p.Tuples, 13*16)
	}
	if did, _ := r.Compact(e.ctx); did {
		t.Fatal("rewrote again with nothing new elided")
	}
}
