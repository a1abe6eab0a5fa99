package sim

import (
	"bytes"
	"errors"
	"math/bits"
	"testing"
	"time"

	"github.com/shalestore/shale/backend"
)

func TestFaultFailStop(t *testing.T) {
	d := newDev(t, Options{Size: 1 << 20})
	d.AddFault(Fault{Op: OpWrite, Nth: 3, Effect: FailStop})
	mustWrite(t, d, 0, fill(4096, 1))
	mustWrite(t, d, 4096, fill(4096, 2))
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteAt(ctx, fill(4096, 3), 8192); !errors.Is(err, backend.ErrFailed) {
		t.Fatalf("3rd write: %v", err)
	}
	for name, err := range map[string]error{
		"read":    d.ReadAt(ctx, make([]byte, 512), 0),
		"write":   d.WriteAt(ctx, make([]byte, 512), 0),
		"sync":    d.Sync(ctx),
		"discard": d.Discard(ctx, 0, 4096),
	} {
		if !errors.Is(err, backend.ErrFailed) {
			t.Errorf("%s after fail-stop: %v", name, err)
		}
	}
	// The dead drive's image is still obtainable, without the failed write.
	d2, err := d.PowerLoss()
	if err != nil {
		t.Fatal(err)
	}
	img := mustRead(t, d2, 0, 12288)
	if !bytes.Equal(img, append(append(fill(4096, 1), fill(4096, 2)...), fill(4096, 0)...)) {
		t.Fatal("image after fail-stop")
	}
	if st := d.Stats(); st.FaultsFired != 1 || st.FaultErrors != 1 {
		t.Fatalf("fault counters %d %d", st.FaultsFired, st.FaultErrors)
	}
}

func TestFaultErrorOnceAndSticky(t *testing.T) {
	d := newDev(t, Options{Size: 1 << 20})
	mustWrite(t, d, 0, fill(8192, 1))
	id := d.AddFault(Fault{Op: OpRead, Off: 4096, Len: 4096, Nth: 2, Effect: Error, Err: backend.ErrCorrupt})
	buf := make([]byte, 4096)
	if err := d.ReadAt(ctx, buf, 4096); err != nil {
		t.Fatalf("1st matching read: %v", err)
	}
	if err := d.ReadAt(ctx, buf, 0); err != nil { // outside the range: no match
		t.Fatalf("read outside the range: %v", err)
	}
	if err := d.ReadAt(ctx, buf, 2048); !errors.Is(err, backend.ErrCorrupt) { // overlaps: 2nd match
		t.Fatalf("2nd matching read: %v", err)
	}
	if err := d.ReadAt(ctx, buf, 4096); err != nil {
		t.Fatalf("once-rule fired twice: %v", err)
	}
	d.RemoveFault(id) // already gone: harmless

	id = d.AddFault(Fault{Op: OpWrite, Effect: Error, Sticky: true})
	for i := 0; i < 3; i++ {
		if err := d.WriteAt(ctx, fill(4096, 9), 0); !errors.Is(err, backend.ErrFailed) {
			t.Fatalf("sticky write error %d: %v", i, err)
		}
	}
	if got := mustRead(t, d, 0, 4096); !bytes.Equal(got, fill(4096, 1)) {
		t.Fatal("a failed write changed the data")
	}
	// Sync matches only rules without a range.
	d.AddFault(Fault{Op: OpSync, Off: 0, Len: 4096, Effect: Error, Sticky: true})
	if err := d.Sync(ctx); err != nil {
		t.Fatalf("sync matched a ranged rule: %v", err)
	}
	d.RemoveFault(id)
	mustWrite(t, d, 0, fill(4096, 2))
	sid := d.AddFault(Fault{Op: OpSync, Effect: Error})
	if err := d.Sync(ctx); !errors.Is(err, backend.ErrFailed) {
		t.Fatalf("sync error: %v", err)
	}
	d.RemoveFault(sid)
	// A failed sync made nothing durable: the write may still be lost.
	if d.undo.pending() == 0 {
		t.Fatal("failed sync dropped the unsynced record")
	}
}

// pattern returns which of n reads fail under a probabilistic rule.
func pattern(t *testing.T, seed int64, n int) []bool {
	d := newDev(t, Options{Size: 1 << 20, Seed: seed})
	d.AddFault(Fault{Op: OpRead, Probability: 0.3, Sticky: true, Effect: Error})
	out := make([]bool, n)
	buf := make([]byte, 512)
	for i := range out {
		out[i] = d.ReadAt(ctx, buf, 0) != nil
	}
	return out
}

func TestFaultProbabilityRepeats(t *testing.T) {
	a, b, c := pattern(t, 5, 1000), pattern(t, 5, 1000), pattern(t, 6, 1000)
	fails := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatal("same seed, different fault pattern")
		}
		if a[i] {
			fails++
		}
	}
	if fails < 240 || fails > 360 {
		t.Fatalf("%d of 1000 reads failed at p=0.3", fails)
	}
	same := true
	for i := range a {
		same = same && a[i] == c[i]
	}
	if same {
		t.Fatal("different seeds, same fault pattern")
	}
}

func TestFaultSlow(t *testing.T) {
	d := newDev(t, Options{Size: 32 << 20, Profile: testProfile()})
	mustWrite(t, d, 0, make([]byte, 4096))
	read := func() error { return d.ReadAt(ctx, make([]byte, 4096), 0) }
	base := lat(t, d, read) // 15 µs
	id := d.AddFault(Fault{Op: OpRead, Sticky: true, Effect: Slow, SlowFactor: 10, SlowDelay: time.Millisecond})
	if got, want := lat(t, d, read), 10*base+time.Millisecond; got != want {
		t.Fatalf("slow read %v, want %v", got, want)
	}
	d.RemoveFault(id)
	if got := lat(t, d, read); got != base {
		t.Fatalf("read after removing the rule: %v", got)
	}
}

func diffBits(a, b []byte) (nbits int, sectors map[int]bool) {
	sectors = map[int]bool{}
	for i := range a {
		if x := a[i] ^ b[i]; x != 0 {
			nbits += bits.OnesCount8(x)
			sectors[i/512] = true
		}
	}
	return nbits, sectors
}

func corruptRun(t *testing.T, seed int64, op Op) []byte {
	d := newDev(t, Options{Size: 1 << 20, Seed: seed})
	data := fill(64<<10, 0x5a)
	if op == OpRead {
		mustWrite(t, d, 0, data)
	}
	d.AddFault(Fault{Op: op, Effect: Corrupt, Sectors: 3, Bits: 2})
	if op == OpWrite {
		mustWrite(t, d, 0, data)
	}
	first := mustRead(t, d, 0, len(data))
	if again := mustRead(t, d, 0, len(data)); !bytes.Equal(first, again) {
		t.Fatal("corruption is not stable across reads")
	}
	nb, secs := diffBits(first, data)
	if nb == 0 || nb > 6 || len(secs) > 3 || nb != 2*len(secs) {
		t.Fatalf("%v corruption: %d bits in %d sectors, want 2 bits in each of ≤ 3 sectors", op, nb, len(secs))
	}
	return first
}

func TestFaultCorrupt(t *testing.T) {
	for _, op := range []Op{OpWrite, OpRead} {
		a, b, c := corruptRun(t, 1, op), corruptRun(t, 1, op), corruptRun(t, 2, op)
		if !bytes.Equal(a, b) {
			t.Fatalf("%v: same seed, different corruption", op)
		}
		if bytes.Equal(a, c) {
			t.Fatalf("%v: different seeds, same corruption", op)
		}
	}
}

func TestFaultPowerCut(t *testing.T) {
	run := func(seed int64) []byte {
		d := newDev(t, Options{Size: 256 << 10, Seed: seed})
		mustWrite(t, d, 0, fill(4096, 1))
		if err := d.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		d.AddFault(Fault{Op: OpWrite, Nth: 10, Effect: PowerCut})
		var err error
		for i := 1; err == nil; i++ {
			err = d.WriteAt(ctx, fill(8192, byte(i+1)), int64(i)*8192)
			if i > 10 {
				t.Fatal("power cut did not fire")
			}
		}
		if !errors.Is(err, backend.ErrFailed) || !d.PoweredOff() {
			t.Fatalf("write at the cut: %v, powered off %v", err, d.PoweredOff())
		}
		if err := d.ReadAt(ctx, make([]byte, 512), 0); !errors.Is(err, backend.ErrFailed) {
			t.Fatalf("read after the cut: %v", err)
		}
		d2, err := d.PowerLoss()
		if err != nil {
			t.Fatal(err)
		}
		img := image(t, d2)
		if !bytes.Equal(img[:4096], fill(4096, 1)) {
			t.Fatal("synced data lost")
		}
		return img
	}
	a, b := run(3), run(3)
	if !bytes.Equal(a, b) {
		t.Fatal("same seed, different image after an injected power cut")
	}
	differ := false
	for seed := int64(4); seed < 8 && !differ; seed++ {
		differ = !bytes.Equal(a, run(seed))
	}
	if !differ {
		t.Fatal("5 seeds gave the same image")
	}

	// A cut at a sync leaves the writes before it unsynced.
	d := newDev(t, Options{Size: 256 << 10, Seed: 1})
	d.AddFault(Fault{Op: OpSync, Effect: PowerCut})
	for i := 0; i < 32; i++ {
		mustWrite(t, d, int64(i)*4096, fill(4096, 7))
	}
	if err := d.Sync(ctx); !errors.Is(err, backend.ErrFailed) {
		t.Fatalf("sync at the cut: %v", err)
	}
	d2, err := d.PowerLoss()
	if err != nil {
		t.Fatal(err)
	}
	if img := mustRead(t, d2, 0, 32*4096); bytes.Equal(img, fill(32*4096, 7)) {
		t.Fatal("all 32 writes survived a cut at the sync that would have made them durable (seed 1)")
	}
}

func TestFaultValidation(t *testing.T) {
	d := newDev(t, Options{Size: 1 << 20})
	for _, f := range []Fault{
		{},
		{Effect: Error, Err: errors.New("other")},
		{Effect: Corrupt, Bits: 65},
		{Effect: Slow, Probability: 2},
		{Effect: Error, Off: -1},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("AddFault(%+v) accepted", f)
				}
			}()
			d.AddFault(f)
		}()
	}
}

func TestRail(t *testing.T) {
	rail := NewRail()
	a := newDev(t, Options{Size: 256 << 10, Seed: 1, Rail: rail, Name: "a"})
	b := newDev(t, Options{Size: 256 << 10, Seed: 2, Rail: rail, Name: "b", Path: t.TempDir() + "/b"})
	other := newDev(t, Options{Size: 256 << 10})
	for _, d := range []*Device{a, b} {
		mustWrite(t, d, 0, fill(4096, 1))
		if err := d.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	a.AddFault(Fault{Op: OpWrite, Nth: 3, Effect: PowerCut})
	var errA error
	for i := 1; errA == nil; i++ {
		mustWrite(t, b, int64(i)*4096, fill(4096, 2))
		errA = a.WriteAt(ctx, fill(4096, 2), int64(i)*4096)
	}
	if !errors.Is(errA, backend.ErrFailed) || !a.PoweredOff() || !b.PoweredOff() || other.PoweredOff() {
		t.Fatalf("after the cut: a %v, powered off a %v b %v other %v", errA, a.PoweredOff(), b.PoweredOff(), other.PoweredOff())
	}
	if err := b.WriteAt(ctx, fill(512, 3), 0); !errors.Is(err, backend.ErrFailed) {
		t.Fatalf("write to b after the rail was cut: %v", err)
	}
	if _, err := b.Reopen(); err == nil {
		t.Fatal("Reopen of a device whose rail was cut")
	}
	a2, err := a.PowerLoss()
	if err != nil {
		t.Fatal(err)
	}
	b2, err := b.PowerLoss()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []*Device{a2, b2} {
		if d.PoweredOff() {
			t.Fatal("revived device is off")
		}
		if got := mustRead(t, d, 0, 4096); !bytes.Equal(got, fill(4096, 1)) {
			t.Fatalf("%s: synced data lost", d.name)
		}
	}
	// Cutting the rail again takes both revived devices down; closing the
	// file-backed one leaves its post-crash image in the file.
	mustWrite(t, b2, 8192, fill(4096, 5))
	rail.Cut()
	if err := a2.Sync(ctx); !errors.Is(err, backend.ErrFailed) {
		t.Fatalf("sync after rail cut: %v", err)
	}
	if err := b2.Close(); err != nil {
		t.Fatal(err)
	}
	b3 := newDev(t, Options{Size: 256 << 10, Path: b.opts.Path})
	if got := mustRead(t, b3, 0, 4096); !bytes.Equal(got, fill(4096, 1)) {
		t.Fatal("file-backed device lost synced data across a rail cut and reopen")
	}
}
