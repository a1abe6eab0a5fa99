package pyramid

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// TestMemPatchRandom inserts random runs with random sequence numbers (out
// of order, repeated) into a DRAM patch and checks, after every insert,
// that linked runs do not overlap and that every position holds the
// newest run (the latest inserted among equal sequence numbers).
var long = flag.Bool("long", false, "run long model, crash and concurrency tests")

func TestMemPatchRandom(t *testing.T) {
	s := StandardSchemas()[0] // block map
	sh := newShape(&s)
	for seed := uint64(1); seed <= 8; seed++ {
		rng := rand.New(rand.NewPCG(seed, 5))
		m := newMemPatch(&sh)
		type val struct{ seq, v, off uint64 }
		model := map[[2]uint64]val{}
		for step := 0; step < 400; step++ {
			med := uint64(1 + rng.IntN(2))
			a := uint64(rng.IntN(200))
			n := uint64(1 + rng.IntN(40))
			if rng.IntN(10) == 0 {
				n = uint64(1 + rng.IntN(200))
			}
			seq := uint64(1 + rng.IntN(50))
			v := uint64(step)
			tu := []uint64{med, a, n, 0, v, 0, 4096, uint64(rng.IntN(8))}
			m.insert(tu, seq)
			for i := uint64(0); i < n; i++ {
				k := [2]uint64{med, a + i}
				if old, ok := model[k]; !ok || old.seq <= seq {
					model[k] = val{seq, v, tu[7] + i}
				}
			}
			// Walk level 0: sorted, non-overlapping, matching the model.
			got := map[[2]uint64]val{}
			var prev *memNode
			var prevEnd uint64
			for x := m.head.next[0].Load(); x != nil; x = x.next[0].Load() {
				e := x.ent.Load()
				st, en := x.key[1], x.key[1]+e.vals[BMLen-2]
				if prev != nil && prev.key[0] == x.key[0] && prevEnd > st {
					t.Fatalf("seed %d step %d: run %v+%d overlaps the previous ending at %d", seed, step, x.key, e.vals[0], prevEnd)
				}
				for p := st; p < en; p++ {
					got[[2]uint64{x.key[0], p}] = val{e.seq, e.vals[BMSegment-2], e.vals[BMSector-2] + (p - st)}
				}
				prev, prevEnd = x, en
			}
			if len(got) != len(model) {
				t.Fatalf("seed %d step %d: %d positions mapped, model %d", seed, step, len(got), len(model))
			}
			for k, want := range model {
				if g := got[k]; g != want {
					t.Fatalf("seed %d step %d: position %v = %+v, model %+v", seed, step, k, g, want)
				}
			}
			// Every level is a sorted sublist of level 0.
			linked := map[*memNode]bool{}
			for x := m.head.next[0].Load(); x != nil; x = x.next[0].Load() {
				linked[x] = true
			}
			for l := 1; l < maxHeight; l++ {
				var last []uint64
				for x := m.head.next[l].Load(); x != nil; x = x.next[l].Load() {
					if last != nil && m.cmp(x.key, last) <= 0 {
						t.Fatalf("seed %d step %d: level %d out of order", seed, step, l)
					}
					if !linked[x] {
						t.Fatalf("seed %d step %d: level %d holds an unlinked node", seed, step, l)
					}
					last = x.key
				}
			}
		}
	}
}

// TestMemPatchConcurrentReaders: one writer inserts random runs (in
// sequence order, several per sequence number, like batches) while readers
// look up random positions. Once a position is covered it stays covered in
// a DRAM patch, so a reader must find a covering run for every position
// covered before its lookup began, and never a version older than the one
// it saw before.
func TestMemPatchConcurrentReaders(t *testing.T) {
	s := StandardSchemas()[0]
	sh := newShape(&s)
	const positions = 300
	m := newMemPatch(&sh)
	var covered [positions]atomic.Uint64 // version covering the position, once inserted
	done := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 9))
			var last [positions]uint64
			for {
				select {
				case <-done:
					return
				default:
				}
				p := uint64(rng.IntN(positions))
				floor := covered[p].Load()
				n, e := m.seekLE([]uint64{1, p})
				var v uint64
				if n != nil && m.matches(n, e, []uint64{1, p}) {
					v = e.vals[BMSegment-2]
				}
				if v < floor || v < last[p] {
					select {
					case errs <- fmt.Sprintf("position %d: read version %d, covered by %d before the read, read %d before", p, v, floor, last[p]):
					default:
					}
					return
				}
				last[p] = v
			}
		}()
	}
	rng := rand.New(rand.NewPCG(1, 1))
	n := 30000
	if testing.Short() {
		n = 10000
	}
	if *long {
		n = 1000000
	}
	for v := uint64(1); v <= uint64(n); v++ {
		// A batch: one to three runs under one sequence number, some on
		// other prefixes (mediums 0 and 2 around the readers' medium 1).
		type run struct{ a, l uint64 }
		var runs []run
		for i := 0; i < 1+rng.IntN(3); i++ {
			med := uint64(rng.IntN(3))
			a := uint64(rng.IntN(positions))
			l := min(uint64(1+rng.IntN(40)), positions-a)
			m.insert([]uint64{med, a, l, 0, v, uint64(i), 4096, 0}, v)
			if med == 1 {
				runs = append(runs, run{a, l})
			}
		}
		for _, r := range runs {
			for p := r.a; p < r.a+r.l; p++ {
				covered[p].Store(v)
			}
		}
		if len(errs) > 0 {
			break
		}
	}
	close(done)
	wg.Wait()
	select {
	case e := <-errs:
		t.Fatal(e)
	default:
	}
}

// TestMemPatchSteps checks the invariant readers rely on after every single
// step an insert publishes: every position covered before the insert is
// still covered (by its old or its new value).
func TestMemPatchSteps(t *testing.T) {
	s := StandardSchemas()[0]
	sh := newShape(&s)
	const positions = 120
	m := newMemPatch(&sh)
	var covered [3][positions]uint64
	var steps []string
	memStepHook = func(mm *memPatch, step string) {
		if mm != m {
			return
		}
		steps = append(steps, step)
		for med := uint64(0); med < 3; med++ {
			for p := uint64(0); p < positions; p++ {
				if covered[med][p] == 0 {
					continue
				}
				n, e := m.seekLE([]uint64{med, p})
				if n == nil || !m.matches(n, e, []uint64{med, p}) {
					t.Fatalf("after steps %v: medium %d position %d (covered by %d) not covered; found %v %v", steps, med, p, covered[med][p], n != nil, e)
				}
			}
		}
	}
	defer func() { memStepHook = nil }()
	rng := rand.New(rand.NewPCG(3, 3))
	for v := uint64(1); v <= 3000; v++ {
		steps = steps[:0]
		med := uint64(rng.IntN(3))
		a := uint64(rng.IntN(positions))
		l := min(uint64(1+rng.IntN(30)), positions-a)
		m.insert([]uint64{med, a, l, 0, v, 0, 4096, 0}, v)
		for p := a; p < a+l; p++ {
			covered[med][p] = v
		}
	}
}
