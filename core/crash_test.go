package core

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/shalestore/shale/core/nvlog"
	"github.com/shalestore/shale/core/pyramid"
	"github.com/shalestore/shale/core/store"
)

// TestCrashPoints cuts power to every device at a named crash point (the
// engine's, the store's, the segment writer's, the NVRAM log's, the boot
// region's and the pyramid's) under a workload of writes and admin
// operations, recovers, and checks that every acknowledged operation is
// there; the operation in flight may or may not be.
func TestCrashPoints(t *testing.T) {
	points := slices.Concat(CrashPoints, store.CrashPoints, pyramid.CrashPoints)
	hits := 1
	if *long {
		hits = 6
	}
	// Points only Format and Open reach, and merges (which need many
	// flushes), are not hit by this short workload: run them with -long.
	rare := []string{nvlog.CrashFormatFirstCopy, nvlog.CrashOpenTailCleared, nvlog.CrashOpenSessionWritten, store.PointRecoverScanned, store.PointRecoverMounted,
		store.PointRefillPlanned, store.PointFrontierPersisted, pyramid.CrashMergePageAppended,
		pyramid.CrashMergePagesDurable, pyramid.CrashFlattenBeforeRoot, pyramid.CrashFlattenRootSet}
	for _, point := range points {
		if !*long && slices.Contains(rare, point) {
			continue
		}
		for nth := 1; nth <= hits; nth += max(1, hits/2) {
			t.Run(fmt.Sprintf("%s/%d", point, nth), func(t *testing.T) { crashAt(t, point, nth) })
		}
	}
}

func crashAt(t *testing.T, point string, nth int) {
	e := newSimEnv(t, simConfig{seed: int64(nth), nvramBytes: 4 << 20})
	var mu sync.Mutex
	count, cut, armed := 0, false, false
	hook := func(p string) {
		mu.Lock()
		defer mu.Unlock()
		if p != point || cut || !armed {
			return
		}
		count++
		if count >= nth {
			cut = true
			e.rail.Cut()
		}
	}
	e.hook.Store(&hook)
	isCut := func() bool { mu.Lock(); defer mu.Unlock(); return cut }
	const size = 1 << 20
	if _, err := e.a.CreateVolume(e.ctx, "vol", size); err != nil {
		if isCut() {
			t.Skip("cut during setup")
		}
		t.Fatal(err)
	}
	mu.Lock()
	armed = true // count hits from the workload on, not from setup
	mu.Unlock()
	rng := rand.New(rand.NewPCG(uint64(nth), 3))
	m := map[string][]byte{"vol": make([]byte, size)}
	// The operation in flight when the cut hit: it may or may not be there.
	var maybe func(m map[string][]byte)
	ops := 250
	if *long {
		ops = 1000
	}
	for i := 0; i < ops && !isCut(); i++ {
		switch op := rng.IntN(20); {
		case op < 17:
			off := int64(rng.IntN(size/512-64)) * 512
			p := make([]byte, (1+rng.IntN(64))*512)
			fillData(rng, p, i%2 == 0)
			if err := e.volume("vol").WriteAt(e.ctx, p, off); err != nil {
				maybe = func(m map[string][]byte) { copy(m["vol"][off:], p) }
				break
			}
			copy(m["vol"][off:], p)
		case op < 19:
			name := fmt.Sprint("s", i)
			if _, err := e.a.CreateSnapshot(e.ctx, "vol", name); err != nil {
				snap := bytes.Clone(m["vol"])
				maybe = func(m map[string][]byte) { m["vol@"+name] = snap }
				break
			}
			m["vol@"+name] = bytes.Clone(m["vol"])
			if *long && !matchesNow(t, e, m) {
				t.Fatalf("op %d: snapshot %s differs from the model at once", i, name)
			}
		default:
			var snaps []string
			for n := range m {
				if n != "vol" {
					snaps = append(snaps, n)
				}
			}
			if len(snaps) == 0 {
				continue
			}
			slices.Sort(snaps)
			name := snaps[rng.IntN(len(snaps))]
			if err := e.a.DeleteSnapshot(e.ctx, name); err != nil {
				maybe = func(m map[string][]byte) { delete(m, name) }
				break
			}
			delete(m, name)
		}
		if maybe != nil {
			break
		}
	}
	// Disarm first: the maintenance goroutine hits its crash points on its
	// own schedule and could cut the power in the middle of the check.
	mu.Lock()
	armed = false
	mu.Unlock()
	if !isCut() {
		if maybe == nil && !matchesNow(t, e, m) {
			t.Fatalf("without a cut, contents differ from the model")
		}
		t.Skipf("crash point %s hit %d times, fewer than %d", point, count, nth)
	}
	e.cutOnly()
	if err := e.tryOpen(); err != nil {
		t.Fatalf("recovery after a cut at %s: %v", point, err)
	}
	matches := func(m map[string][]byte) bool {
		names := []string{"vol"}
		for _, s := range e.a.Snapshots("vol") {
			names = append(names, s.Name)
		}
		if len(names) != len(m) {
			t.Logf("names %v, model has %d", names, len(m))
			return false
		}
		for _, n := range names {
			want, ok := m[n]
			if !ok {
				return false
			}
			got := make([]byte, len(want))
			if err := e.volume(n).ReadAt(e.ctx, got, 0); err != nil {
				t.Fatalf("read %s: %v", n, err)
			}
			if !bytes.Equal(got, want) {
				i := 0
				for got[i] == want[i] {
					i++
				}
				t.Logf("%s differs first at byte %d (sector %d)", n, i, i/512)
				t.Log(e.explain(e.a.vols[n].medium, uint64(i/512)))
				return false
			}
		}
		return true
	}
	if matches(m) {
		return
	}
	if maybe != nil {
		m2 := map[string][]byte{}
		for k, v := range m {
			m2[k] = bytes.Clone(v)
		}
		maybe(m2)
		if matches(m2) {
			return
		}
	}
	t.Fatalf("after a cut at %s (hit %d): contents match neither the acknowledged state nor it plus the operation in flight", point, nth)
}

// TestOrphanMedium cuts power after a create's facts and before its
// catalog: the medium id is never reused and the orphan is elided.
func TestOrphanMedium(t *testing.T) {
	e := newSimEnv(t, simConfig{seed: 4})
	if _, err := e.a.CreateVolume(e.ctx, "a", 1<<20); err != nil {
		t.Fatal(err)
	}
	orphan := e.a.cat.NextMedium
	hook := func(p string) {
		if p == CrashAdminFacts {
			e.rail.Cut()
		}
	}
	e.hook.Store(&hook)
	if _, err := e.a.CreateVolume(e.ctx, "x", 1<<20); err == nil {
		t.Fatal("create survived a power cut before its catalog")
	}
	e.hook.Store(nil)
	e.powerLoss()
	if _, err := e.a.Volume("x"); err == nil {
		t.Fatal("volume x exists although its catalog never became durable")
	}
	if e.a.cat.NextMedium <= orphan {
		t.Fatalf("next medium %d would reuse orphan %d", e.a.cat.NextMedium, orphan)
	}
	it := e.a.mt.NewIter(e.ctx, pyramid.IterOptions{Lower: []uint64{orphan}, Upper: []uint64{orphan + 1}})
	defer it.Close()
	if it.Next() {
		t.Fatalf("orphan medium %d still in the medium table: %v", orphan, it.Tuple())
	}
	if _, err := e.a.CreateVolume(e.ctx, "y", 1<<20); err != nil {
		t.Fatal(err)
	}
}

// matchesNow reports whether the array holds exactly m.
func matchesNow(t *testing.T, e *simEnv, m map[string][]byte) bool {
	t.Helper()
	for n, want := range m {
		got := make([]byte, len(want))
		if err := e.volume(n).ReadAt(e.ctx, got, 0); err != nil {
			t.Fatalf("read %s: %v", n, err)
		}
		if !bytes.Equal(got, want) {
			i := 0
			for got[i] == want[i] {
				i++
			}
			t.Logf("%s differs first at byte %d (sector %d)", n, i, i/512)
			return false
		}
	}
	return true
}
