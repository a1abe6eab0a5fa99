package sim

import (
	"testing"
	"time"
)

const us = int64(time.Microsecond)

func TestDieQueue(t *testing.T) {
	var d die
	// A run of 4 programs of 100 µs from t=0.
	d.push(0, dieOp{ready: 0, dur: 100 * us, count: 4, kind: kindProgram})
	if got := d.tailEnd(); got != 400*us {
		t.Fatalf("tail %d", got)
	}
	// A read at 150 µs waits for the second program only.
	end, waited := d.read(150*us, 1, 10*us)
	if end != 210*us || waited != kindProgram {
		t.Fatalf("read: end %d waited %v", end, waited)
	}
	// A second read queues behind the first, ahead of the programs.
	end, waited = d.read(160*us, 2, 10*us)
	if end != 230*us || waited != kindProgram {
		t.Fatalf("second read: end %d waited %v", end, waited)
	}
	// The programs move back by the reads' 30 µs.
	if got := d.tailEnd(); got != 430*us {
		t.Fatalf("tail after reads %d", got)
	}
	// An erase queued behind; a read just after the programs finish
	// waits for the whole erase it lands on.
	d.push(200*us, dieOp{ready: 200 * us, dur: 1000 * us, count: 1, kind: kindErase})
	if d.programsEnd() != 430*us {
		t.Fatalf("programs end %d", d.programsEnd())
	}
	end, waited = d.read(430*us, 1, 10*us)
	if end != 1440*us || waited != kindErase {
		t.Fatalf("read during erase: end %d waited %v", end, waited)
	}
	// An idle die serves a read at once.
	end, waited = d.read(5000*us, 1, 10*us)
	if end != 5010*us || waited != kindNone {
		t.Fatalf("idle read: end %d waited %v", end, waited)
	}
	d.settle(6000 * us)
	if !d.empty() {
		t.Fatalf("queue not drained: %+v", d.ops[d.head:])
	}
}

func TestDieCachePages(t *testing.T) {
	var d die
	d.push(0, dieOp{ready: 0, dur: 100 * us, count: 3, kind: kindProgram, cachePages: 2})
	for _, tc := range []struct{ at, want int64 }{{0, 6}, {99 * us, 6}, {100 * us, 4}, {250 * us, 2}, {300 * us, 0}} {
		if got := d.cachePagesAt(tc.at); got != tc.want {
			t.Errorf("cache pages at %d: %d, want %d", tc.at, got, tc.want)
		}
	}
}

// testProfile is a small write-through drive with round numbers.
func testProfile() Profile {
	return Profile{
		Name: "test", Alignment: 512, PagesPerBlock: 64, Dies: 4, Planes: 1, OverProvision: 0.1,
		Read: 10 * time.Microsecond, Program: 100 * time.Microsecond, Erase: time.Millisecond,
		Command: 5 * time.Microsecond, Flush: 20 * time.Microsecond,
	}
}

// lat runs fn and returns how far it moved the device's virtual clock.
func lat(t *testing.T, d *Device, fn func() error) time.Duration {
	t.Helper()
	before := d.Clock().Now()
	if err := fn(); err != nil {
		t.Fatal(err)
	}
	return d.Clock().Now() - before
}

func TestVirtualLatency(t *testing.T) {
	d := newDev(t, Options{Size: 32 << 20, Profile: testProfile()})
	if g := d.Geometry(); g.Dies != 4 {
		t.Fatalf("geometry %+v", g)
	}
	w := func(off int64, n int) func() error {
		return func() error { return d.WriteAt(ctx, make([]byte, n), off) }
	}
	r := func(off int64, n int) func() error {
		return func() error { return d.ReadAt(ctx, make([]byte, n), off) }
	}
	const mus = time.Microsecond
	for _, tc := range []struct {
		name string
		fn   func() error
		want time.Duration
	}{
		{"4K write: command + program", w(0, 4096), 105 * mus},
		{"4K read: command + read", r(0, 4096), 15 * mus},
		{"unmapped read: command only", r(1<<20, 4096), 5 * mus},
		{"16K write: 4 dies in parallel", w(1<<20, 16384), 105 * mus},
		{"32K write: 2 programs per die", w(2<<20, 32768), 205 * mus},
		{"32K read: 2 reads per die", r(2<<20, 32768), 25 * mus},
		{"sync: command + flush", func() error { return d.Sync(ctx) }, 25 * mus},
		{"discard: command", func() error { return d.Discard(ctx, 0, 4096) }, 5 * mus},
	} {
		if got := lat(t, d, tc.fn); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestWriteCache(t *testing.T) {
	p := testProfile()
	p.CacheBytes = 16 << 10
	p.Dies = 1
	d := newDev(t, Options{Size: 8 << 20, Profile: p})
	buf := make([]byte, 4096)
	if got := lat(t, d, func() error { return d.WriteAt(ctx, buf, 0) }); got != 5*time.Microsecond {
		t.Fatalf("cached write took %v", got)
	}
	// Sync waits for the program (100 µs from 5 µs) plus the flush.
	if got := lat(t, d, func() error { return d.Sync(ctx) }); got != (105+20-5)*time.Microsecond {
		t.Fatalf("sync took %v", got)
	}
	// A burst larger than the cache stalls.
	for i := 0; i < 16; i++ {
		if err := d.WriteAt(ctx, buf, int64(i)*4096); err != nil {
			t.Fatal(err)
		}
	}
	st := d.Stats()
	if st.WriteStalls == 0 || st.Write.Max < 90*time.Microsecond {
		t.Fatalf("burst: %d write stalls, max write latency %v", st.WriteStalls, st.Write.Max)
	}
	// Reads jump the programs queued in the cache.
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 64<<10)
	if got := lat(t, d, func() error { return d.WriteAt(ctx, big, 1<<20) }); got > 6*100*time.Microsecond {
		t.Fatalf("64K write with 16K cache took %v", got)
	}
	before := d.Stats()
	got := lat(t, d, func() error { return d.ReadAt(ctx, buf, 0) })
	if got > 5*time.Microsecond+100*time.Microsecond+10*time.Microsecond {
		t.Fatalf("read behind queued programs took %v: waited for more than the one in progress", got)
	}
	if after := d.Stats(); after.ReadStalls != before.ReadStalls+1 {
		t.Fatalf("read behind a program not counted as a stall")
	}
}

func TestParallelism1M(t *testing.T) {
	p := SSDProfile()
	d := newDev(t, Options{Size: 1 << 30, Profile: p})
	buf := make([]byte, 1<<20)
	mustWrite(t, d, 0, buf)
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	d.Clock().Advance(time.Second)
	// 256 pages over 8 dies x 4 planes: 8 multi-plane reads per die.
	want := p.Command + 8*p.Read + time.Duration(xfer(&p, 1<<20))
	if got := lat(t, d, func() error { return d.ReadAt(ctx, buf, 0) }); got != want {
		t.Fatalf("1 MiB read: %v, want %v", got, want)
	}
}

func TestRealTime(t *testing.T) {
	p := testProfile()
	p.Program = 3 * time.Millisecond
	d := newDev(t, Options{Size: 1 << 20, Profile: p, Time: Real})
	start := time.Now()
	mustWrite(t, d, 0, make([]byte, 4096))
	if el := time.Since(start); el < 3*time.Millisecond {
		t.Fatalf("real-time write returned after %v, modelled 3ms", el)
	}
	z := newDev(t, Options{Size: 1 << 20, Profile: p.ZeroLatency(), Time: Real})
	start = time.Now()
	for i := 0; i < 2000; i++ {
		mustWrite(t, z, int64(i%256)*4096, make([]byte, 4096))
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("2000 zero-latency real-time writes took %v", el)
	}
	if st := z.Stats(); st.Write.Max > 0 {
		t.Fatalf("zero-latency profile shows write latency %v", st.Write.Max)
	}
}

func TestSharedClock(t *testing.T) {
	clk := NewClock()
	a := newDev(t, Options{Size: 32 << 20, Profile: testProfile(), Clock: clk})
	b := newDev(t, Options{Size: 32 << 20, Profile: testProfile(), Clock: clk, Kind: 1})
	if b.Profile().Name != "test" || a.Clock() != clk || b.Clock() != clk {
		t.Fatal("options not kept")
	}
	mustWrite(t, a, 0, make([]byte, 4096))
	if clk.Now() != 105*time.Microsecond {
		t.Fatalf("clock at %v after a 105 µs write", clk.Now())
	}
	mustWrite(t, b, 0, make([]byte, 4096))
	if clk.Now() != 210*time.Microsecond {
		t.Fatalf("clock at %v after two writes on two drives", clk.Now())
	}
	if st := b.Stats(); st.Elapsed != 210*time.Microsecond || st.Write.Max != 105*time.Microsecond {
		t.Fatalf("b: elapsed %v, write latency %v", st.Elapsed, st.Write.Max)
	}
	clk.AdvanceTo(time.Millisecond)
	clk.AdvanceTo(0) // never backwards
	if clk.Now() != time.Millisecond {
		t.Fatalf("clock at %v", clk.Now())
	}
	n := newDev(t, Options{Size: 1 << 20, Kind: 1})
	if n.Profile().Name != "nvram" || n.Kind().String() != "nvram" {
		t.Fatalf("NVRAM kind got profile %q", n.Profile().Name)
	}
}
