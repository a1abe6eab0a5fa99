package core

import (
	"fmt"
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
