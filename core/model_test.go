package core

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

var long = flag.Bool("long", false, "run the long versions of the model and crash tests")

// model is the plain in-memory truth: each volume's and snapshot's bytes.
type model struct {
	vols  map[string][]byte // "VOL" and "VOL@SNAP"
	snaps map[string]bool   // which names are snapshots
}

func (m *model) names(snapshots bool) []string {
	var out []string
	for n := range m.vols {
		if m.snaps[n] == snapshots {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// modelRun drives random operations against an array and the model,
// checking reads against the model, with restarts and power losses.
type modelRun struct {
	t    *testing.T
	e    *simEnv
	rng  *rand.Rand
	m    model
	next int // name counter
	// dedupSectors: deduplicated sectors counted by arrays already closed.
	dedupSectors int64
}

func (r *modelRun) pick(names []string) string { return names[r.rng.IntN(len(names))] }

func (r *modelRun) data(n int) []byte {
	p := make([]byte, n)
	switch r.rng.IntN(7) {
	case 5, 6: // a copy of stored data: any volume or snapshot, any sector
		names := append(r.m.names(false), r.m.names(true)...)
		if src := r.m.vols[r.pick(names)]; len(src) >= n {
			at := r.rng.IntN((len(src)-n)/512+1) * 512
			copy(p, src[at:at+n])
			return p
		}
		fillData(r.rng, p, false)
	case 0: // zeros
	case 1: // half zeros, half data, at a sector boundary
		fillData(r.rng, p[:n/1024*512], r.rng.IntN(2) == 0)
	case 2:
		fillData(r.rng, p, true)
	default:
		fillData(r.rng, p, false)
	}
	return p
}

// span picks a sector-aligned range inside size, up to maxBytes long.
func (r *modelRun) span(size int64, maxBytes int) (int64, int64) {
	sectors := size / 512
	n := 1 + r.rng.Int64N(min(int64(maxBytes/512), sectors))
	off := r.rng.Int64N(sectors - n + 1)
	return off * 512, n * 512
}

func (r *modelRun) check(name string, off, n int64) {
	r.t.Helper()
	v, err := r.e.a.Volume(name)
	if err != nil {
		r.t.Fatalf("open %s: %v", name, err)
	}
	got := make([]byte, n)
	if err := v.ReadAt(r.e.ctx, got, off); err != nil {
		r.t.Fatalf("read %s %d+%d: %v", name, off, n, err)
	}
	want := r.m.vols[name][off : off+n]
	if !bytes.Equal(got, want) {
		i := 0
		for got[i] == want[i] {
			i++
		}
		r.t.Fatalf("read %s %d+%d: first difference at byte %d (volume sector %d)", name, off, n, i, (off+int64(i))/512)
	}
}

func (r *modelRun) checkAll(stage string) {
	r.t.Helper()
	vols := r.e.a.Volumes()
	snaps := r.e.a.Snapshots("")
	var got []string
	for _, v := range append(vols, snaps...) {
		got = append(got, v.Name)
		if want := int64(len(r.m.vols[v.Name])); v.Size != want {
			r.t.Fatalf("%s: %s has size %d, model %d", stage, v.Name, v.Size, want)
		}
	}
	slices.Sort(got)
	want := slices.Sorted(maps.Keys(r.m.vols))
	if !slices.Equal(got, want) {
		r.t.Fatalf("%s: names %v, model %v", stage, got, want)
	}
	for _, n := range want {
		r.check(n, 0, int64(len(r.m.vols[n])))
	}
}

func (r *modelRun) step(i int) {
	t, e, rng := r.t, r.e, r.rng
	vols, snaps := r.m.names(false), r.m.names(true)
	op := rng.IntN(100)
	switch {
	case len(vols) == 0 || op < 3:
		if len(vols) >= 6 {
			return
		}
		r.next++
		name := fmt.Sprintf("v%d", r.next)
		size := int64(1+rng.IntN(8)) * 256 << 10
		if _, err := e.a.CreateVolume(e.ctx, name, size); err != nil {
			t.Fatalf("op %d: create %s: %v", i, name, err)
		}
		r.m.vols[name] = make([]byte, size)
	case op < 55:
		name := r.pick(vols)
		off, n := r.span(int64(len(r.m.vols[name])), 256<<10)
		p := r.data(int(n))
		if err := r.e.volume(name).WriteAt(e.ctx, p, off); err != nil {
			t.Fatalf("op %d: write %s %d+%d: %v", i, name, off, n, err)
		}
		copy(r.m.vols[name][off:], p)
	case op < 60:
		name := r.pick(vols)
		off, n := r.span(int64(len(r.m.vols[name])), 1<<20)
		v := r.e.volume(name)
		var err error
		if rng.IntN(2) == 0 {
			err = v.Trim(e.ctx, off, n)
		} else {
			err = v.WriteZeroes(e.ctx, off, n)
		}
		if err != nil {
			t.Fatalf("op %d: trim/zero %s: %v", i, name, err)
		}
		clear(r.m.vols[name][off : off+n])
	case op < 80:
		all := append(vols, snaps...)
		name := r.pick(all)
		off, n := r.span(int64(len(r.m.vols[name])), 512<<10)
		r.check(name, off, n)
	case op < 85:
		name := r.pick(vols)
		r.next++
		snap := fmt.Sprintf("s%d", r.next)
		if _, err := e.a.CreateSnapshot(e.ctx, name, snap); err != nil {
			t.Fatalf("op %d: snapshot %s: %v", i, name, err)
		}
		full := name + "@" + snap
		r.m.vols[full] = bytes.Clone(r.m.vols[name])
		r.m.snaps[full] = true
		if err := r.e.volume(full).WriteAt(e.ctx, make([]byte, 512), 0); !errors.Is(err, ErrReadOnly) {
			t.Fatalf("op %d: write to snapshot: %v", i, err)
		}
	case op < 89 && len(snaps) > 0 && len(vols) < 6:
		snap := r.pick(snaps)
		r.next++
		name := fmt.Sprintf("c%d", r.next)
		if _, err := e.a.Clone(e.ctx, snap, name); err != nil {
			t.Fatalf("op %d: clone %s: %v", i, snap, err)
		}
		r.m.vols[name] = bytes.Clone(r.m.vols[snap])
	case op < 92:
		name := r.pick(vols)
		size := int64(1+rng.IntN(8)) * 256 << 10
		if _, err := e.a.ResizeVolume(e.ctx, name, size); err != nil {
			t.Fatalf("op %d: resize %s: %v", i, name, err)
		}
		old := r.m.vols[name]
		nv := make([]byte, size)
		copy(nv, old)
		r.m.vols[name] = nv
	case op < 94 && len(snaps) > 0:
		snap := r.pick(snaps)
		if err := e.a.DeleteSnapshot(e.ctx, snap); err != nil {
			t.Fatalf("op %d: delete %s: %v", i, snap, err)
		}
		delete(r.m.vols, snap)
		delete(r.m.snaps, snap)
	case op < 96:
		name := r.pick(vols)
		h := r.e.volume(name)
		if err := e.a.DeleteVolume(e.ctx, name); err != nil {
			t.Fatalf("op %d: delete %s: %v", i, name, err)
		}
		delete(r.m.vols, name)
		for s := range r.m.snaps {
			if v, _, _ := splitSnapshot(s); v == name {
				delete(r.m.vols, s)
				delete(r.m.snaps, s)
			}
		}
		if err := h.ReadAt(e.ctx, make([]byte, 512), 0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("op %d: read of a deleted volume: %v", i, err)
		}
	case op < 98:
		r.checkAll(fmt.Sprintf("op %d before restart", i))
		r.dedupSectors += e.a.Stats().Counters["dedup_sectors"]
		e.restart()
		r.checkAll(fmt.Sprintf("op %d after restart", i))
	default:
		r.dedupSectors += e.a.Stats().Counters["dedup_sectors"]
		e.powerLoss()
		r.checkAll(fmt.Sprintf("op %d after power loss", i))
	}
}

func TestModel(t *testing.T) {
	seeds, ops := 3, 200
	if *long {
		seeds, ops = 20, 3000
	}
	runModel(t, seeds, ops, simConfig{nvramBytes: 8 << 20})
}

// TestModelDedupCollisions: the model with a dedup hash that collides all
// the time (four values): every hit is confirmed, nothing reads wrong.
func TestModelDedupCollisions(t *testing.T) {
	runModel(t, 1, 200, simConfig{nvramBytes: 8 << 20, dedupHash: func(p []byte) uint64 { return uint64(p[0] & 3) }})
}

// TestModelNoDedup: the model with dedup off (Options.NoDedup).
func TestModelNoDedup(t *testing.T) {
	runModel(t, 1, 200, simConfig{nvramBytes: 8 << 20, noDedup: true})
}

func runModel(t *testing.T, seeds, ops int, c simConfig) {
	for seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			c := c
			c.seed = int64(seed)
			e := newSimEnv(t, c)
			r := &modelRun{t: t, e: e, rng: rand.New(rand.NewPCG(uint64(seed), 77)),
				m: model{vols: map[string][]byte{}, snaps: map[string]bool{}}}
			for i := range ops {
				r.step(i)
			}
			r.checkAll("end")
			if d := r.dedupSectors + e.a.Stats().Counters["dedup_sectors"]; (d > 0) == c.noDedup {
				t.Errorf("%d sectors deduplicated with NoDedup %v", d, c.noDedup)
			}
			e.powerLoss()
			r.checkAll("end after power loss")
		})
	}
}
