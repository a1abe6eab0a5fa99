package core

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

func fillData(rng *rand.Rand, p []byte, compressible bool) {
	if compressible {
		for i := range p {
			p[i] = byte(i/64) ^ byte(rng.IntN(2))
		}
		return
	}
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
}

func TestWriteReadRestart(t *testing.T) {
	e := newSimEnv(t, simConfig{seed: 1})
	if _, err := e.a.CreateVolume(e.ctx, "vol0", 16<<20); err != nil {
		t.Fatal(err)
	}
	v := e.volume("vol0")
	rng := rand.New(rand.NewPCG(1, 1))
	model := make([]byte, 16<<20)
	for i := range 200 {
		off := int64(rng.IntN(len(model)/4096-64)) * 4096
		n := (1 + rng.IntN(64)) * 512
		p := make([]byte, n)
		fillData(rng, p, i%2 == 0)
		if err := v.WriteAt(e.ctx, p, off); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], p)
	}
	check := func(stage string) {
		t.Helper()
		v := e.volume("vol0")
		got := make([]byte, len(model))
		if err := v.ReadAt(e.ctx, got, 0); err != nil {
			t.Fatalf("%s: %v", stage, err)
		}
		if !bytes.Equal(got, model) {
			for i := range got {
				if got[i] != model[i] {
					t.Fatalf("%s: first difference at byte %d (sector %d)", stage, i, i/512)
				}
			}
		}
	}
	check("before restart")
	e.restart()
	check("after restart")
	e.powerLoss()
	check("after power loss")
	if err := v.WriteAt(e.ctx, make([]byte, 512), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("write on a closed array's handle: %v", err)
	}
}

// TestLargeWrite writes more than one NVRAM entry's worth at once, on an
// NVRAM smaller than the write.
func TestLargeWrite(t *testing.T) {
	e := newSimEnv(t, simConfig{seed: 2, nvramBytes: 4 << 20})
	if _, err := e.a.CreateVolume(e.ctx, "vol", 32<<20); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 9<<20+512)
	fillData(rand.New(rand.NewPCG(2, 2)), p, false)
	v := e.volume("vol")
	if err := v.WriteAt(e.ctx, p, 512); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(p))
	for stage := range 2 {
		if err := e.volume("vol").ReadAt(e.ctx, got, 512); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, p) {
			t.Fatalf("stage %d: data differs", stage)
		}
		e.powerLoss()
	}
}

// TestExtents checks holes, zeros and data as Extents reports them,
// through a snapshot and a clone.
func TestExtents(t *testing.T) {
	e := newSimEnv(t, simConfig{seed: 3})
	if _, err := e.a.CreateVolume(e.ctx, "vol", 1<<20); err != nil {
		t.Fatal(err)
	}
	v := e.volume("vol")
	data := bytes.Repeat([]byte{1}, 8192)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(v.WriteAt(e.ctx, data, 0))                   // [0,8K) data
	must(v.WriteZeroes(e.ctx, 8192, 4096))            // [8K,12K) zero
	must(v.WriteAt(e.ctx, make([]byte, 4096), 12288)) // [12K,16K) zero (all-zero write)
	must(v.WriteAt(e.ctx, data, 65536))               // [64K,72K) data, trimmed below
	must(v.Trim(e.ctx, 65536, 4096))                  // [64K,68K) hole
	want := []Extent{
		{Length: 8192}, {Length: 8192, Zero: true}, {Length: 65536 - 16384, Hole: true, Zero: true},
		{Length: 4096, Hole: true, Zero: true}, {Length: 4096}, {Length: 1<<20 - 73728, Hole: true, Zero: true},
	}
	// Merge the two adjacent hole runs the table lists apart for clarity.
	want = []Extent{want[0], want[1], {Length: 65536 - 16384 + 4096, Hole: true, Zero: true}, want[4], want[5]}
	check := func(name string) {
		t.Helper()
		got, err := e.volume(name).Extents(e.ctx, 0, 1<<20, nil)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: extents %v, want %v", name, got, want)
		}
	}
	check("vol")
	if _, err := e.a.CreateSnapshot(e.ctx, "vol", "s"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.a.Clone(e.ctx, "vol@s", "c"); err != nil {
		t.Fatal(err)
	}
	check("vol")
	check("vol@s")
	check("c")
	e.restart()
	check("c")
}
