package core

import (
	"bytes"
	"errors"
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
