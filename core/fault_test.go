package core

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/shalestore/shale/backend/sim"
)

// TestDegradedReads fails or corrupts up to parity drives after data and
// metadata are on the drives: everything still reads back, writes go on,
// and a restart works.
func TestDegradedReads(t *testing.T) {
	for _, tc := range []struct {
		name   string
		drives []int
		effect sim.Effect
	}{
		{"none", nil, 0},
		{"failstop-1", []int{2}, sim.FailStop},
		{"failstop-2", []int{0, 4}, sim.FailStop},
		{"corrupt-2", []int{1, 5}, sim.Corrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Failed drives are skipped by new segments: keep 6 healthy.
			e := newSimEnv(t, simConfig{seed: 5, drives: 6 + len(tc.drives)})
			if _, err := e.a.CreateVolume(e.ctx, "vol", 8<<20); err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(5, 5))
			model := make([]byte, 8<<20)
			write := func(n int) {
				v := e.volume("vol")
				for i := range n {
					off := int64(rng.IntN(len(model)/512-512)) * 512
					p := make([]byte, (1+rng.IntN(256))*512)
					fillData(rng, p, i%3 == 0)
					if err := v.WriteAt(e.ctx, p, off); err != nil {
						t.Fatal(err)
					}
					copy(model[off:], p)
				}
			}
			check := func(stage string) {
				t.Helper()
				got := make([]byte, len(model))
				if err := e.volume("vol").ReadAt(e.ctx, got, 0); err != nil {
					t.Fatalf("%s: %v", stage, err)
				}
				if !bytes.Equal(got, model) {
					t.Fatalf("%s: data differs", stage)
				}
			}
			write(100)
			// Metadata to the drives too, then a fresh cache.
			if err := e.a.db.Flush(e.ctx); err != nil {
				t.Fatal(err)
			}
			e.restart()
			for _, d := range tc.drives {
				f := sim.Fault{Op: sim.OpRead, Sticky: true, Effect: tc.effect}
				if tc.effect == sim.Corrupt {
					f.Sectors, f.Bits = 4, 3
				}
				e.drives[d].AddFault(f)
			}
			check("degraded")
			if tc.effect == sim.Corrupt && len(tc.drives) > 0 {
				if n := e.a.Stats().Counters["degraded_reads"]; n == 0 {
					t.Fatal("no degraded read counted with corrupt drives")
				}
			}
			write(100)
			check("degraded after more writes")
			e.restart()
			check("after restart")
		})
	}
}

// TestNoSpace fills a small array: writes end with ErrNoSpace, everything
// acknowledged reads back, metadata operations and reads go on, and a
// restart works.
func TestNoSpace(t *testing.T) {
	e := newSimEnv(t, simConfig{seed: 9, drives: 6, driveBytes: 16 << 20, nvramBytes: 8 << 20})
	if _, err := e.a.CreateVolume(e.ctx, "vol", 256<<20); err != nil {
		t.Fatal(err)
	}
	capacity := e.a.Stats().CapacityBytes
	rng := rand.New(rand.NewPCG(9, 9))
	model := make([]byte, 256<<20)
	v := e.volume("vol")
	var off int64
	full := false
	for off+64<<10 <= int64(len(model)) {
		p := make([]byte, 64<<10)
		fillData(rng, p, false)
		err := v.WriteAt(e.ctx, p, off)
		if errors.Is(err, ErrNoSpace) {
			full = true
			break
		}
		if err != nil {
			t.Fatalf("write at %d: %v", off, err)
		}
		copy(model[off:], p)
		off += int64(len(p))
	}
	if !full {
		t.Fatalf("wrote %d bytes on an array of %d without ErrNoSpace", off, capacity)
	}
	if off < capacity/2 {
		t.Fatalf("ErrNoSpace after %d bytes of a %d-byte array", off, capacity)
	}
	t.Logf("full after %d MiB of %d MiB capacity", off>>20, capacity>>20)
	check := func(stage string) {
		t.Helper()
		got := make([]byte, off)
		if err := e.volume("vol").ReadAt(e.ctx, got, 0); err != nil {
			t.Fatalf("%s: %v", stage, err)
		}
		if !bytes.Equal(got, model[:off]) {
			t.Fatalf("%s: data differs", stage)
		}
	}
	check("full")
	// Metadata-only writes still work: zeroes over the tail.
	if err := v.WriteZeroes(e.ctx, off-4096, 4096); err != nil {
		t.Fatalf("write zeroes on a full array: %v", err)
	}
	clear(model[off-4096 : off])
	if err := v.WriteAt(e.ctx, bytes.Repeat([]byte{7}, 4096), 0); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("data write on a full array: %v", err)
	}
	check("full, zeroed tail")
	e.restart()
	check("full, after restart")
	if err := e.volume("vol").WriteAt(e.ctx, bytes.Repeat([]byte{7}, 4096), 0); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("data write on a full array after restart: %v", err)
	}
	e.powerLoss()
	check("full, after power loss")
	if st := e.a.Stats(); st.FreeBytes >= int64(reserveSegments)*int64(testGeometry.Data)*testGeometry.AUSize {
		t.Fatalf("free bytes %d on a full array", st.FreeBytes)
	}
}
