package pyramid_test

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/shalestore/shale/core/pyramid"
)

// long is -long: run long model, crash and concurrency tests.
var long = pyramid.LongTests

// model is the plain in-memory truth the pyramid is checked against: the
// block map per sector, the segment table per key, and what was elided.
type model struct {
	sectors  map[[2]uint64][5]uint64 // (medium, lba) -> kind, segment, offset, clen, sector
	segs     map[[2]uint64][3]uint64 // (segment, shard) -> drive, au, flags
	mediums  []uint64                // live mediums
	nextMed  uint64
	segsLive []uint64
	nextSeg  uint64
	elMed    map[uint64]bool
	elSeg    map[uint64]bool
}

func newModel() *model {
	m := &model{sectors: map[[2]uint64][5]uint64{}, segs: map[[2]uint64][3]uint64{},
		elMed: map[uint64]bool{}, elSeg: map[uint64]bool{}, nextMed: 1, nextSeg: 100}
	for i := 0; i < 3; i++ {
		m.mediums = append(m.mediums, m.nextMed)
		m.nextMed++
		m.segsLive = append(m.segsLive, m.nextSeg)
		m.nextSeg++
	}
	return m
}

// applyRun writes a block-map run into the model.
func (m *model) applyRun(t []uint64) {
	for i := uint64(0); i < t[pyramid.BMLen]; i++ {
		m.sectors[[2]uint64{t[0], t[1] + i}] = [5]uint64{t[3], t[4], t[5], t[6], t[7] + i}
	}
}

// expand turns block-map tuples into a per-sector map.
func expand(tb testing.TB, tuples [][]uint64) map[[2]uint64][5]uint64 {
	out := map[[2]uint64][5]uint64{}
	for _, t := range tuples {
		for i := uint64(0); i < t[pyramid.BMLen]; i++ {
			k := [2]uint64{t[0], t[1] + i}
			if _, dup := out[k]; dup {
				tb.Fatalf("sector %v mapped twice (tuple %v)", k, t)
			}
			out[k] = [5]uint64{t[3], t[4], t[5], t[6], t[7] + i}
		}
	}
	return out
}

// visible is what readers must see: the model minus elided mediums.
func (m *model) visibleSectors() map[[2]uint64][5]uint64 {
	out := map[[2]uint64][5]uint64{}
	for k, v := range m.sectors {
		if !m.elMed[k[0]] {
			out[k] = v
		}
	}
	return out
}

func (m *model) visibleSegs() map[[2]uint64][3]uint64 {
	out := map[[2]uint64][3]uint64{}
	for k, v := range m.segs {
		if !m.elSeg[k[0]] {
			out[k] = v
		}
	}
	return out
}

// crashPanic is what the CrashHook panics with.
type crashPanic struct{ point string }

// harness drives random operations against a DB and the model.
type harness struct {
	t   *testing.T
	e   *env
	m   *model
	rng *rand.Rand
	// armed counts down CrashHook calls; at zero the hook panics.
	armed   int
	crashes map[string]int
	log     []string
}

func (h *harness) hook(point string) {
	if h.armed <= 0 {
		return
	}
	h.armed--
	if h.armed == 0 {
		panic(crashPanic{point})
	}
}

// do runs fn; a crashPanic from the hook becomes a crash and recovery.
func (h *harness) do(what string, fn func() error) {
	h.t.Helper()
	h.log = append(h.log, what)
	crashed := ""
	func() {
		defer func() {
			if p := recover(); p != nil {
				cp, ok := p.(crashPanic)
				if !ok {
					panic(p)
				}
				crashed = cp.point
			}
		}()
		if err := fn(); err != nil && !errors.Is(err, pyramid.ErrStale) {
			h.t.Fatalf("%s: %v\nops: %v", what, err, h.tail())
		}
	}()
	if crashed != "" {
		h.crashes[crashed]++
		h.log = append(h.log, "crash at "+crashed)
		h.e.abandon()
		h.e.crash(h.rng)
	}
}

func (h *harness) tail() []string {
	return h.log[max(0, len(h.log)-30):]
}

func (h *harness) randomRun() []uint64 {
	m := h.m
	med := m.mediums[h.rng.IntN(len(m.mediums))]
	n := uint64(1 + h.rng.IntN(48))
	if h.rng.IntN(10) == 0 {
		n = uint64(1 + h.rng.IntN(300))
	}
	lba := uint64(h.rng.IntN(512))
	kind := uint64(pyramid.KindData)
	if h.rng.IntN(8) == 0 {
		kind = pyramid.KindZero
	}
	return []uint64{med, lba, n, kind, uint64(h.rng.IntN(4)), uint64(h.rng.IntN(1 << 20)), uint64(512 + h.rng.IntN(32768)), uint64(h.rng.IntN(64))}
}

func (h *harness) step() {
	e, m, rng := h.e, h.m, h.rng
	bmap, st := e.rel(pyramid.BlockMap), e.rel(pyramid.SegmentTable)
	switch op := rng.IntN(100); {
	case op < 45: // a write: one to three runs, maybe a segment-table fact
		var b pyramid.Batch
		var runs [][]uint64
		for i := 0; i < 1+rng.IntN(3); i++ {
			t := h.randomRun()
			runs = append(runs, t)
			if err := b.Insert(bmap, t...); err != nil {
				h.t.Fatal(err)
			}
		}
		var segT []uint64
		if rng.IntN(3) == 0 {
			seg := m.segsLive[rng.IntN(len(m.segsLive))]
			segT = []uint64{seg, uint64(rng.IntN(9)), uint64(rng.IntN(12)), uint64(rng.IntN(1000)), uint64(rng.IntN(2))}
			if err := b.Insert(st, segT...); err != nil {
				h.t.Fatal(err)
			}
		}
		h.do(fmt.Sprintf("persist %v %v", runs, segT), func() error {
			_, err := e.db.Persist(e.ctx, &b)
			return err
		})
		for _, t := range runs {
			m.applyRun(t)
		}
		if segT != nil {
			m.segs[[2]uint64{segT[0], segT[1]}] = [3]uint64{segT[2], segT[3], segT[4]}
		}
	case op < 48: // drop a medium, start a new one
		if len(m.mediums) < 2 {
			return
		}
		i := rng.IntN(len(m.mediums))
		med := m.mediums[i]
		h.do(fmt.Sprintf("elide medium %d", med), func() error {
			var b pyramid.Batch
			if err := b.Elide(e.rel(pyramid.MediumElide), med, med); err != nil {
				return err
			}
			_, err := e.db.Persist(e.ctx, &b)
			return err
		})
		m.elMed[med] = true
		m.mediums = append(m.mediums[:i], m.mediums[i+1:]...)
		m.mediums = append(m.mediums, m.nextMed)
		m.nextMed++
	case op < 50: // drop a segment
		i := rng.IntN(len(m.segsLive))
		seg := m.segsLive[i]
		h.do(fmt.Sprintf("elide segment %d", seg), func() error {
			var b pyramid.Batch
			if err := b.Elide(e.rel(pyramid.SegmentElide), seg, seg); err != nil {
				return err
			}
			_, err := e.db.Persist(e.ctx, &b)
			return err
		})
		m.elSeg[seg] = true
		m.segsLive[i] = m.nextSeg
		m.nextSeg++
	case op < 62: // flush one relation
		r := e.db.Relations()[rng.IntN(len(e.db.Relations()))]
		h.do("flush "+r.Name(), func() error { return r.Flush(e.ctx) })
	case op < 72: // merge a random contiguous run of patches, then flatten
		r := []*pyramid.Relation{bmap, st, e.rel(pyramid.MediumElide)}[rng.IntN(3)]
		n := len(r.Patches())
		if n == 0 {
			return
		}
		a := rng.IntN(n)
		b := a + rng.IntN(n-a)
		h.do(fmt.Sprintf("merge %s %d..%d of %d", r.Name(), a, b, n), func() error {
			mg, err := r.Merge(e.ctx, a, b)
			if err != nil {
				return err
			}
			if rng.IntN(8) == 0 { // a flush slips in between
				if err := r.Flush(e.ctx); err != nil {
					return err
				}
			}
			if err := r.Flatten(e.ctx, mg); err != nil {
				return err
			}
			return r.Flatten(e.ctx, mg) // again: a no-op
		})
	case op < 78: // the policy
		r := []*pyramid.Relation{bmap, st}[rng.IntN(2)]
		h.do("compact "+r.Name(), func() error {
			_, err := r.Compact(e.ctx)
			return err
		})
	case op < 80: // power loss between operations
		h.log = append(h.log, "power loss")
		h.e.crash(rng)
	case op < 82: // arm a crash inside the next few protocol steps
		h.armed = 1 + rng.IntN(6)
	case op < 86: // trim the commit log as far as the pyramid allows
		h.log = append(h.log, fmt.Sprintf("trim log through %d", e.db.DurableSeq()))
		if err := e.trim(); err != nil {
			h.t.Fatal(err)
		}
	default:
		h.checkSome()
	}
}

// checkSome does a few point and range reads against the model.
func (h *harness) checkSome() {
	e, m, rng := h.e, h.m, h.rng
	bmap := e.rel(pyramid.BlockMap)
	vis := m.visibleSectors()
	for i := 0; i < 5; i++ {
		med := uint64(1 + rng.IntN(int(m.nextMed)))
		lba := uint64(rng.IntN(600))
		got, ok, err := bmap.Get(e.ctx, []uint64{med, lba}, nil, pyramid.ReadOptions{})
		if err != nil {
			h.t.Fatal(err)
		}
		want, wok := vis[[2]uint64{med, lba}]
		if ok != wok {
			h.t.Fatalf("Get(%d,%d): found %v, model %v (%v)\nops: %v", med, lba, ok, wok, got, h.tail())
		}
		if ok {
			d := lba - got[1]
			if v := [5]uint64{got[3], got[4], got[5], got[6], got[7] + d}; v != want {
				h.t.Fatalf("Get(%d,%d) = %v, model %v\nops: %v", med, lba, got, want, h.tail())
			}
		}
		// Resolve a range.
		n := uint64(1 + rng.IntN(100))
		seen := map[[2]uint64][5]uint64{}
		if err := bmap.Resolve(e.ctx, []uint64{med}, lba, n, pyramid.ReadOptions{}, func(t []uint64) error {
			for j := uint64(0); j < t[2]; j++ {
				seen[[2]uint64{med, t[1] + j}] = [5]uint64{t[3], t[4], t[5], t[6], t[7] + j}
			}
			return nil
		}); err != nil {
			h.t.Fatal(err)
		}
		for s := lba; s < lba+n; s++ {
			w, wok := vis[[2]uint64{med, s}]
			g, gok := seen[[2]uint64{med, s}]
			if wok != gok || w != g {
				h.t.Fatalf("Resolve(%d, %d+%d) sector %d: %v %v, model %v %v\nops: %v", med, lba, n, s, g, gok, w, wok, h.tail())
			}
		}
		if len(seen) > int(n) {
			h.t.Fatalf("Resolve returned sectors outside the range")
		}
	}
}

// checkAll compares everything a full scan returns with the model.
func (h *harness) checkAll(stage string) {
	h.t.Helper()
	e, m := h.e, h.m
	got := expand(h.t, e.scan(e.rel(pyramid.BlockMap), pyramid.IterOptions{}))
	if want := m.visibleSectors(); !maps.Equal(got, want) {
		for k, v := range want {
			if g, ok := got[k]; !ok || g != v {
				h.t.Fatalf("%s: block map sector %v = %v %v, model %v\nops: %v", stage, k, g, ok, v, h.tail())
			}
		}
		for k, v := range got {
			if _, ok := want[k]; !ok {
				h.t.Fatalf("%s: block map sector %v = %v, not in the model\nops: %v", stage, k, v, h.tail())
			}
		}
	}
	segs := map[[2]uint64][3]uint64{}
	for _, t := range e.scan(e.rel(pyramid.SegmentTable), pyramid.IterOptions{}) {
		segs[[2]uint64{t[0], t[1]}] = [3]uint64{t[2], t[3], t[4]}
	}
	if want := m.visibleSegs(); !maps.Equal(segs, want) {
		h.t.Fatalf("%s: segment table\n%v\nmodel\n%v\nops: %v", stage, segs, want, h.tail())
	}
	// Relaxed reads see at least everything strict reads see.
	relaxed := expand(h.t, e.scan(e.rel(pyramid.BlockMap), pyramid.IterOptions{Relaxed: true}))
	for k, v := range got {
		if relaxed[k] != v {
			h.t.Fatalf("%s: relaxed read lost sector %v", stage, k)
		}
	}
	// Relaxed tuples not visible strictly must be elided ones.
	for k, v := range relaxed {
		if _, ok := got[k]; !ok && !m.elMed[k[0]] {
			h.t.Fatalf("%s: relaxed read shows sector %v = %v of a live medium", stage, k, v)
		}
	}
	// Elide ranges never overlap.
	for _, name := range []string{pyramid.MediumElide, pyramid.SegmentElide} {
		ranges := e.scan(e.rel(name), pyramid.IterOptions{})
		for i := 1; i < len(ranges); i++ {
			if ranges[i-1][0]+ranges[i-1][1] > ranges[i][0] {
				h.t.Fatalf("%s: elide ranges overlap: %v", stage, ranges)
			}
		}
	}
}

func runModel(t *testing.T, kit string, seed uint64, steps int, opts pyramid.Options) map[string]int {
	h := &harness{t: t, m: newModel(), rng: rand.New(rand.NewPCG(seed, seed*7+1)), crashes: map[string]int{}}
	opts.CrashHook = h.hook
	h.e = newKitEnv(t, kit, int64(seed), opts)
	for i := 0; i < steps; i++ {
		h.step()
		if i%50 == 49 {
			h.checkAll(fmt.Sprintf("step %d", i))
		}
	}
	h.checkAll("end")
	h.armed = 0
	// Everything flushed and merged to one patch per relation, then a
	// crash: still the same.
	for _, r := range h.e.db.Relations() {
		if err := r.Flush(h.e.ctx); err != nil {
			t.Fatal(err)
		}
		if n := len(r.Patches()); n > 1 {
			mg, err := r.Merge(h.e.ctx, 0, n-1)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Flatten(h.e.ctx, mg); err != nil {
				t.Fatal(err)
			}
		}
	}
	h.checkAll("merged")
	// Merging everything dropped every elided tuple: relaxed reads, which
	// skip the filter, now see exactly what strict reads see.
	bmap := h.e.rel(pyramid.BlockMap)
	strict, relaxed := h.e.scan(bmap, pyramid.IterOptions{}), h.e.scan(bmap, pyramid.IterOptions{Relaxed: true})
	if !slices.EqualFunc(strict, relaxed, slices.Equal) {
		t.Fatalf("after a full merge relaxed reads still see %d elided tuples", len(relaxed)-len(strict))
	}
	h.e.crash(h.rng)
	h.checkAll("merged and recovered")
	return h.crashes
}

// TestModel runs random inserts, elides, flushes, merges, flattens, log
// trims and crashes (power loss between operations, and panics at crash
// points inside them) against the plain model, several seeds and page
// shapes, on pyramidtest's stores.
func TestModel(t *testing.T) {
	steps, seeds := 600, 4
	if *long {
		steps, seeds = 5000, 40
	}
	if testing.Short() {
		steps, seeds = 200, 2
	}
	testModel(t, kitDev, steps, seeds)
}

// TestModelStore is TestModel on the production storage: core/store
// (segments and the boot region) and core/nvlog.
func TestModelStore(t *testing.T) {
	steps, seeds := 400, 2
	if *long {
		steps, seeds = 3000, 20
	}
	if testing.Short() {
		steps, seeds = 150, 1
	}
	testModel(t, kitStore, steps, seeds)
}

func testModel(t *testing.T, kit string, steps, seeds int) {
	total := map[string]int{}
	for seed := uint64(1); seed <= uint64(seeds); seed++ {
		opts := pyramid.Options{Manual: true, PageBytes: 1024, MaxPageTuples: 8, CacheBytes: 1 << 20}
		if seed%2 == 0 {
			opts.PageBytes, opts.MaxPageTuples = 4096, 4096
		}
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			for p, n := range runModel(t, kit, seed, steps, opts) {
				total[p] += n
			}
		})
	}
	t.Logf("crashes by point: %v", total)
	points := slices.Sorted(maps.Keys(total))
	if len(points) < 4 {
		t.Errorf("crashed at only %v", points)
	}
}
