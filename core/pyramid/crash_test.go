package pyramid_test

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"

	"github.com/shalestore/shale/core/pyramid"
)

// TestCrashAtEveryPoint crashes at each crash point of flush, merge and
// flatten (the hook panics there, then every device loses power, keeping a
// random subset of unsynced blocks), recovers, checks the contents, redoes
// the interrupted work to completion and checks again.
func TestCrashAtEveryPoint(t *testing.T) {
	seeds := 6
	if testing.Short() {
		seeds = 2
	}
	if *long {
		seeds = 50
	}
	for _, kit := range []string{kitDev, kitStore} {
		for _, point := range pyramid.CrashPoints {
			for seed := 0; seed < seeds; seed++ {
				t.Run(fmt.Sprintf("%s/%s/%d", kit, point, seed), func(t *testing.T) {
					crashAt(t, kit, point, uint64(seed))
				})
			}
		}
	}
}

func crashAt(t *testing.T, kit, point string, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 42))
	fired := false
	armed := false
	opts := pyramid.Options{Manual: true, PageBytes: 1024, MaxPageTuples: 8, CacheBytes: 1 << 20}
	opts.CrashHook = func(p string) {
		if armed && p == point {
			armed, fired = false, true
			panic(crashPanic{p})
		}
	}
	e := newKitEnv(t, kit, int64(seed), opts)
	m := newModel()
	bmap, el := e.rel(pyramid.BlockMap), e.rel(pyramid.MediumElide)
	write := func(n int) {
		for i := 0; i < n; i++ {
			med := uint64(1 + rng.IntN(3))
			a := uint64(rng.IntN(400))
			run := []uint64{med, a, uint64(1 + rng.IntN(60)), 0, uint64(rng.IntN(5)), uint64(rng.IntN(1000)), 4096, uint64(rng.IntN(8))}
			e.persist(bmap, run)
			m.applyRun(run)
		}
	}
	check := func(stage string) {
		t.Helper()
		got := expand(t, e.scan(e.rel(pyramid.BlockMap), pyramid.IterOptions{}))
		if want := m.visibleSectors(); !maps.Equal(got, want) {
			t.Fatalf("%s: %d sectors visible, model has %d", stage, len(got), len(want))
		}
	}
	// Three patches and a DRAM patch, medium 2 elided in the middle.
	write(40)
	must(t, bmap.Flush(e.ctx))
	write(40)
	must(t, bmap.Flush(e.ctx))
	e.elide(el, 2, 2)
	m.elMed[2] = true
	must(t, el.Flush(e.ctx))
	write(40)
	must(t, bmap.Flush(e.ctx))
	write(20)
	check("before")

	// The interrupted work: flush, then merge everything and flatten.
	work := func() error {
		bmap := e.rel(pyramid.BlockMap)
		if err := bmap.Flush(e.ctx); err != nil {
			return err
		}
		mg, err := bmap.Merge(e.ctx, 0, len(bmap.Patches())-1)
		if err != nil {
			return err
		}
		return bmap.Flatten(e.ctx, mg)
	}
	armed = true
	crashed := func() (crashed bool) {
		defer func() {
			if p := recover(); p != nil {
				if _, ok := p.(crashPanic); !ok {
					panic(p)
				}
				crashed = true
			}
		}()
		must(t, work())
		return false
	}()
	if !fired || !crashed {
		t.Fatalf("crash point %s never reached", point)
	}
	e.abandon()
	e.crash(rng)
	check("recovered")
	// Redo to completion: idempotent, same contents, one patch.
	must(t, work())
	check("redone")
	if n := len(e.rel(pyramid.BlockMap).Patches()); n != 1 {
		t.Fatalf("%d patches after the redone merge", n)
	}
	e.crash(rng)
	check("redone and recovered")
	// The merge dropped medium 2 for good.
	for _, tup := range e.scan(e.rel(pyramid.BlockMap), pyramid.IterOptions{Relaxed: true}) {
		if tup[0] == 2 {
			t.Fatalf("elided medium survived the merge: %v", tup)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
