package core

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"
)

// dedupStats returns the array's dedup counters and physical bytes.
func dedupStats(e *simEnv) (sectors, physical int64) {
	st := e.a.Stats()
	return st.Counters["dedup_sectors"], st.PhysicalBytes
}

// TestDedupShiftedCopy is the issue's: a 1 MiB copy written 3 sectors off
// its original alignment is found duplicate for at least 90 % of its
// sectors, stores less than 10 % of its size, and both copies read back.
func TestDedupShiftedCopy(t *testing.T) {
	e := newSimEnv(t, simConfig{})
	if _, err := e.a.CreateVolume(e.ctx, "vol", 8<<20); err != nil {
		t.Fatal(err)
	}
	v := e.volume("vol")
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 1<<20)
	fillData(rng, data, false)
	if err := v.WriteAt(e.ctx, data, 0); err != nil {
		t.Fatal(err)
	}
	sec0, phys0 := dedupStats(e)
	const copyAt = 4<<20 + 3*SectorSize
	if err := v.WriteAt(e.ctx, data, copyAt); err != nil {
		t.Fatal(err)
	}
	sec1, phys1 := dedupStats(e)
	if got := sec1 - sec0; got*10 < int64(len(data)/SectorSize)*9 {
		t.Errorf("%d of %d sectors of the copy deduplicated, want ≥ 90 %%", got, len(data)/SectorSize)
	}
	if grew := phys1 - phys0; grew*10 >= int64(len(data)) {
		t.Errorf("physical bytes grew by %d for a 1 MiB copy, want < 10 %%", grew)
	}
	for _, at := range []int64{0, copyAt} {
		got := make([]byte, len(data))
		if err := v.ReadAt(e.ctx, got, at); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("copy at %d reads back wrong", at)
		}
	}
	// The original's recorded sectors (one in 8) reach the dedup table,
	// in the background.
	waitCounter(t, e, "dedup_table_tuples", int64(len(data)/SectorSize/8))
	if d := e.a.Stats().Counters["dedup_table_dropped"]; d != 0 {
		t.Errorf("dedup table: %d tuples dropped", d)
	}
}

// TestDedupCollisions: with every sector hashing alike, writes of fresh
// data, of copies and of copies with one sector changed all read back
// exactly; the copies are still found (the hit is confirmed, not trusted).
func TestDedupCollisions(t *testing.T) {
	e := newSimEnv(t, simConfig{dedupHash: func([]byte) uint64 { return 7 }})
	if _, err := e.a.CreateVolume(e.ctx, "vol", 8<<20); err != nil {
		t.Fatal(err)
	}
	v := e.volume("vol")
	rng := rand.New(rand.NewPCG(3, 4))
	want := make([]byte, 8<<20)
	write := func(p []byte, at int64) {
		t.Helper()
		if err := v.WriteAt(e.ctx, p, at); err != nil {
			t.Fatal(err)
		}
		copy(want[at:], p)
	}
	base := make([]byte, 64<<10)
	fillData(rng, base, false)
	write(base, 0)
	for i := range 40 {
		p := make([]byte, 64<<10)
		switch i % 3 {
		case 0:
			fillData(rng, p, i%2 == 0)
		case 1:
			copy(p, base)
		case 2:
			copy(p, base)
			p[rng.IntN(len(p))] ^= 0xff
		}
		write(p, int64(1+rng.IntN(100))*64<<10+int64(rng.IntN(8))*SectorSize)
	}
	got := make([]byte, len(want))
	if err := v.ReadAt(e.ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("contents differ from what was written")
	}
	if d, _ := dedupStats(e); d == 0 {
		t.Error("no duplicates found with a colliding hash")
	}
}

// TestDedupCrash: a write acknowledged as a duplicate before a power loss
// reads back after it (its tuples are in its own NVRAM entry, and the
// cblock it names was durable before its location was indexed).
func TestDedupCrash(t *testing.T) {
	for seed := range int64(4) {
		e := newSimEnv(t, simConfig{seed: seed})
		if _, err := e.a.CreateVolume(e.ctx, "vol", 8<<20); err != nil {
			t.Fatal(err)
		}
		v := e.volume("vol")
		rng := rand.New(rand.NewPCG(uint64(seed), 5))
		data := make([]byte, 256<<10)
		fillData(rng, data, seed%2 == 0)
		if err := v.WriteAt(e.ctx, data, 0); err != nil {
			t.Fatal(err)
		}
		if err := v.WriteAt(e.ctx, data, 1<<20+5*SectorSize); err != nil {
			t.Fatal(err)
		}
		if d, _ := dedupStats(e); d < int64(len(data)/SectorSize)*9/10 {
			t.Fatalf("seed %d: only %d sectors deduplicated", seed, d)
		}
		e.powerLoss()
		v = e.volume("vol")
		for _, at := range []int64{0, 1<<20 + 5*SectorSize} {
			got := make([]byte, len(data))
			if err := v.ReadAt(e.ctx, got, at); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("seed %d: data at %d lost in the power loss", seed, at)
			}
		}
	}
}

// TestDedupAcrossDeletes: duplicates name cblocks another volume, or a
// snapshot alone, stored; deleting that volume or snapshot leaves them
// readable, across a restart.
func TestDedupAcrossDeletes(t *testing.T) {
	e := newSimEnv(t, simConfig{})
	rng := rand.New(rand.NewPCG(6, 7))
	a := make([]byte, 256<<10)
	b := make([]byte, 256<<10)
	fillData(rng, a, false)
	fillData(rng, b, true)
	for _, name := range []string{"v1", "v2"} {
		if _, err := e.a.CreateVolume(e.ctx, name, 4<<20); err != nil {
			t.Fatal(err)
		}
	}
	write := func(name string, p []byte, at int64) {
		t.Helper()
		if err := e.volume(name).WriteAt(e.ctx, p, at); err != nil {
			t.Fatal(err)
		}
	}
	// v2 gets a copy of v1's data; v1 goes away.
	write("v1", a, 0)
	d0, _ := dedupStats(e)
	write("v2", a, 3*SectorSize)
	// v2: A only in a snapshot (overwritten in the volume), then a copy
	// of A elsewhere; the snapshot goes away.
	write("v2", a, 2<<20)
	if _, err := e.a.CreateSnapshot(e.ctx, "v2", "s"); err != nil {
		t.Fatal(err)
	}
	write("v2", b, 2<<20)
	write("v2", a, 3<<20+SectorSize)
	if d, _ := dedupStats(e); d-d0 < 3*int64(len(a)/SectorSize)*9/10 {
		t.Fatalf("%d sectors deduplicated by three copies of %d", d-d0, len(a)/SectorSize)
	}
	if err := e.a.DeleteVolume(e.ctx, "v1"); err != nil {
		t.Fatal(err)
	}
	if err := e.a.DeleteSnapshot(e.ctx, "v2@s"); err != nil {
		t.Fatal(err)
	}
	check := func(stage string) {
		t.Helper()
		for _, c := range []struct {
			at   int64
			want []byte
		}{{3 * SectorSize, a}, {2 << 20, b}, {3<<20 + SectorSize, a}} {
			got := make([]byte, len(c.want))
			if err := e.volume("v2").ReadAt(e.ctx, got, c.at); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, c.want) {
				t.Fatalf("%s: v2 at %d reads back wrong", stage, c.at)
			}
		}
	}
	check("after the deletes")
	e.restart()
	check("after a restart")
}

// TestDedupAfterRestart: data written before a restart is found again
// after it: the index is filled from the dedup table when the array
// opens.
func TestDedupAfterRestart(t *testing.T) {
	e := newSimEnv(t, simConfig{})
	if _, err := e.a.CreateVolume(e.ctx, "vol", 8<<20); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	data := make([]byte, 512<<10)
	fillData(rng, data, false)
	if err := e.volume("vol").WriteAt(e.ctx, data, 0); err != nil {
		t.Fatal(err)
	}
	waitCounter(t, e, "dedup_table_tuples", int64(len(data)/SectorSize/8))
	e.restart()
	waitCounter(t, e, "dedup_index_loaded", int64(len(data)/SectorSize/8))
	before, _ := dedupStats(e)
	const copyAt = 2<<20 + 3*SectorSize
	if err := e.volume("vol").WriteAt(e.ctx, data, copyAt); err != nil {
		t.Fatal(err)
	}
	if after, _ := dedupStats(e); (after-before)*10 < int64(len(data)/SectorSize)*9 {
		t.Errorf("after a restart, %d of %d sectors of a copy deduplicated", after-before, len(data)/SectorSize)
	}
	got := make([]byte, len(data))
	if err := e.volume("vol").ReadAt(e.ctx, got, copyAt); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("copy reads back wrong (%v)", err)
	}
}

// waitCounter waits up to 10 s for counter name to reach want.
func waitCounter(t *testing.T, e *simEnv, name string, want int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.a.Stats().Counters[name] < want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := e.a.Stats().Counters[name]; got < want {
		t.Fatalf("%s is %d after 10 s, want at least %d", name, got, want)
	}
}
