package core

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/shalestore/shale/core/pyramid"
)

func TestPlanShortcut(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sectors uint64
		written [][2]uint64
		below   []mtRun
		max     int
		want    []mtRun
		ok      bool
	}{
		{"nothing written, no parent", 100, nil, []mtRun{{0, 100, 0, 0}}, 8,
			[]mtRun{{0, 100, 0, 0}}, true},
		{"nothing written, parent", 100, nil, []mtRun{{0, 100, 3, 0}}, 8,
			[]mtRun{{0, 100, 3, 0}}, true},
		{"all written", 100, [][2]uint64{{0, 100}}, []mtRun{{0, 100, 3, 0}}, 8,
			[]mtRun{{0, 100, 7, 0}}, true},
		{"holes", 100, [][2]uint64{{10, 20}, {50, 60}}, []mtRun{{0, 100, 3, 0}}, 8,
			[]mtRun{{0, 10, 3, 0}, {10, 10, 7, 10}, {20, 30, 3, 20}, {50, 10, 7, 50}, {60, 40, 3, 60}}, true},
		{"below shortcut already, grown past it", 100, [][2]uint64{{40, 60}},
			[]mtRun{{0, 20, 3, 0}, {20, 20, 2, 20}}, 8,
			[]mtRun{{0, 20, 3, 0}, {20, 20, 2, 20}, {40, 20, 7, 40}, {60, 40, 0, 0}}, true},
		{"shrunk: written beyond the end", 50, [][2]uint64{{40, 80}}, []mtRun{{0, 100, 3, 0}}, 8,
			[]mtRun{{0, 40, 3, 0}, {40, 10, 7, 40}}, true},
		{"too many runs", 100, [][2]uint64{{1, 2}, {3, 4}, {5, 6}}, []mtRun{{0, 100, 3, 0}}, 4, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := planShortcut(7, tc.sectors, tc.written, tc.below, tc.max)
			if ok != tc.ok || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v %v, want %v %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestShortcutChain takes many snapshots without writes between them:
// the volume's medium keeps mapping straight to the medium that holds the
// data instead of through every empty layer.
func TestShortcutChain(t *testing.T) {
	e := newSimEnv(t, simConfig{seed: 6})
	if _, err := e.a.CreateVolume(e.ctx, "vol", 1<<20); err != nil {
		t.Fatal(err)
	}
	first := e.a.cat.Volumes[0].Medium
	if err := e.volume("vol").WriteAt(e.ctx, make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	data := []byte("shortcut")
	p := make([]byte, 512)
	copy(p, data)
	if err := e.volume("vol").WriteAt(e.ctx, p, 8192); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := e.a.CreateSnapshot(e.ctx, "vol", fmt.Sprint("s", i)); err != nil {
			t.Fatal(err)
		}
	}
	cur := e.a.cat.Volumes[0].Medium
	it := e.a.mt.NewIter(e.ctx, pyramid.IterOptions{Lower: []uint64{cur}, Upper: []uint64{cur + 1}})
	var targets []uint64
	for it.Next() {
		targets = append(targets, it.Tuple()[pyramid.MTTarget])
	}
	it.Close()
	for _, tg := range targets {
		if tg != first && tg != 0 {
			t.Fatalf("medium %d maps to %v after 20 empty snapshots, want only %d (or none)", cur, targets, first)
		}
	}
	got := make([]byte, 512)
	for _, name := range []string{"vol", "vol@s0", "vol@s19"} {
		if err := e.volume(name).ReadAt(e.ctx, got, 8192); err != nil || string(got[:len(data)]) != string(data) {
			t.Fatalf("%s: %q %v", name, got[:len(data)], err)
		}
	}
	// Deleting every snapshot leaves the volume readable.
	for i := range 20 {
		if err := e.a.DeleteSnapshot(e.ctx, fmt.Sprint("vol@s", i)); err != nil {
			t.Fatal(err)
		}
	}
	e.restart()
	if err := e.volume("vol").ReadAt(e.ctx, got, 8192); err != nil || string(got[:len(data)]) != string(data) {
		t.Fatalf("after deleting the snapshots: %q %v", got[:len(data)], err)
	}
}

// TestSnapshotsManyLayers takes snapshot after snapshot with writes in
// between and metadata flushed to pages now and then, checking every
// snapshot at once against the model (shortcut plans read whole medium
// tables and block maps, across many pages).
func TestSnapshotsManyLayers(t *testing.T) {
	e := newSimEnv(t, simConfig{seed: 8})
	const size = 1 << 20
	if _, err := e.a.CreateVolume(e.ctx, "vol", size); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(8, 8))
	model := make([]byte, size)
	snaps := map[string][]byte{}
	check := func(name string, want []byte) {
		t.Helper()
		got := make([]byte, size)
		if err := e.volume(name).ReadAt(e.ctx, got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s differs from the model", name)
		}
	}
	for i := range 80 {
		for range 12 {
			off := int64(rng.IntN(size/512-64)) * 512
			p := make([]byte, (1+rng.IntN(64))*512)
			fillData(rng, p, false)
			if err := e.volume("vol").WriteAt(e.ctx, p, off); err != nil {
				t.Fatal(err)
			}
			copy(model[off:], p)
		}
		if i%2 == 1 {
			if err := e.a.db.Flush(e.ctx); err != nil {
				t.Fatal(err)
			}
		}
		name := fmt.Sprint("s", i)
		if _, err := e.a.CreateSnapshot(e.ctx, "vol", name); err != nil {
			t.Fatal(err)
		}
		snaps["vol@"+name] = bytes.Clone(model)
		check("vol", model)
		check("vol@"+name, model)
		if i%7 == 6 { // delete an older snapshot: its medium stays, hidden
			old := fmt.Sprint("vol@s", i-5)
			if err := e.a.DeleteSnapshot(e.ctx, old); err != nil {
				t.Fatal(err)
			}
			delete(snaps, old)
		}
	}
	e.restart()
	check("vol", model)
	for n, want := range snaps {
		check(n, want)
	}
}
