package sim

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestPickVictim(t *testing.T) {
	c := func(b, v, e int32) victimCand { return victimCand{block: b, valid: v, erases: e} }
	for _, tc := range []struct {
		name  string
		cands []victimCand
		want  int
	}{
		{"none", nil, -1},
		{"all full of valid data", []victimCand{c(1, 8, 0), c(2, 8, 0)}, -1},
		{"fewest valid", []victimCand{c(1, 5, 0), c(2, 3, 9), c(3, 4, 0)}, 1},
		{"tie: fewest erases", []victimCand{c(1, 3, 5), c(2, 3, 2), c(3, 3, 4)}, 1},
		{"tie: lowest block", []victimCand{c(7, 3, 2), c(4, 3, 2), c(9, 3, 2)}, 1},
		{"empty block wins", []victimCand{c(1, 1, 0), c(2, 0, 100)}, 1},
	} {
		if got := pickVictim(tc.cands, 8); got != tc.want {
			t.Errorf("%s: got %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestDeriveGeometry(t *testing.T) {
	for _, tc := range []struct {
		name              string
		size              int64
		prof              Profile
		ppb, dies, planes int
		minOP             float64
		wantErr           bool
	}{
		{"1GiB ssd", 1 << 30, SSDProfile(), 256, 8, 4, 0.07, false},
		{"256MiB ssd shrinks blocks", 256 << 20, SSDProfile(), 64, 8, 4, 0.07, false},
		{"64MiB ssd shrinks blocks and planes", 64 << 20, SSDProfile(), 64, 8, 1, 0.07, false},
		{"16MiB ssd shrinks dies", 16 << 20, SSDProfile(), 64, 2, 1, 0.07, false},
		{"64KiB shrinks everything", 64 << 10, SSDProfile(), 1, 1, 1, 0.07, false},
		{"nvram 64MiB", 64 << 20, NVRAMProfile(), 64, 4, 1, 0.25, false},
		{"not a page multiple", 4096 + 512, SSDProfile(), 0, 0, 0, 0, true},
		{"zero", 0, SSDProfile(), 0, 0, 0, 0, true},
	} {
		g, err := deriveGeometry(tc.size, tc.prof)
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: err %v", tc.name, err)
			continue
		}
		if err != nil {
			continue
		}
		if g.PagesPerBlock != tc.ppb || g.Dies != tc.dies || g.Planes != tc.planes {
			t.Errorf("%s: got %d ppb, %d dies, %d planes; want %d, %d, %d", tc.name, g.PagesPerBlock, g.Dies, g.Planes, tc.ppb, tc.dies, tc.planes)
		}
		if g.OverProvision < tc.minOP {
			t.Errorf("%s: over-provisioning %.3f below %.3f", tc.name, g.OverProvision, tc.minOP)
		}
		if g.Blocks != g.BlocksPerPlane*g.Dies*g.Planes || int64(g.Blocks*g.PagesPerBlock) <= g.Pages {
			t.Errorf("%s: inconsistent %+v", tc.name, g)
		}
	}
}

// zeroProfile is an SSD geometry that costs no time.
func zeroProfile() Profile { return SSDProfile().ZeroLatency() }

func checkFTL(t *testing.T, d *Device) {
	t.Helper()
	d.tmu.Lock()
	defer d.tmu.Unlock()
	if err := d.drv.ftl.check(); err != nil {
		t.Fatal(err)
	}
}

// churn writes n random 4 KiB pages within [0, span) bytes.
func churn(t *testing.T, d *Device, rng *rand.Rand, span int64, n int) {
	t.Helper()
	buf := fill(4096, 0xaa)
	for i := 0; i < n; i++ {
		mustWrite(t, d, rng.Int64N(span/4096)*4096, buf)
	}
}

// fillSeq writes the whole device once, sequentially, in 1 MiB writes.
func fillSeq(t *testing.T, d *Device) {
	t.Helper()
	buf := fill(1<<20, 0x55)
	for off := int64(0); off < d.Size(); off += 1 << 20 {
		mustWrite(t, d, off, buf[:min(1<<20, d.Size()-off)])
	}
}

func TestWriteAmplification(t *testing.T) {
	const size = 32 << 20
	pages := size / 4096

	t.Run("random overwrites", func(t *testing.T) {
		d := newDev(t, Options{Size: size, Profile: zeroProfile()})
		fillSeq(t, d)
		base := d.Stats()
		churn(t, d, rand.New(rand.NewPCG(1, 1)), size, 3*pages)
		st := d.Stats()
		wa := float64(st.Programs-base.Programs) / float64(st.HostPages-base.HostPages)
		t.Logf("random: WA %.2f, GC moves %d, erases %d, PE %+v", wa, st.GCMoves, st.Erases, st.PE)
		if wa < 1.5 || st.GCMoves == 0 || st.Erases == 0 {
			t.Fatalf("random overwrites of a full drive: WA %.2f, %d GC moves: want WA > 1.5 and GC", wa, st.GCMoves)
		}
		checkFTL(t, d)
	})

	t.Run("sequential", func(t *testing.T) {
		d := newDev(t, Options{Size: size, Profile: zeroProfile()})
		for range 4 {
			fillSeq(t, d)
		}
		st := d.Stats()
		t.Logf("sequential: WA %.3f, GC moves %d, erases %d", st.WriteAmplification, st.GCMoves, st.Erases)
		if st.WriteAmplification > 1.01 || st.Erases == 0 {
			t.Fatalf("sequential whole-drive overwrites: WA %.3f, %d erases: want ≈ 1 with erases", st.WriteAmplification, st.Erases)
		}
		checkFTL(t, d)
	})

	t.Run("discard lowers WA", func(t *testing.T) {
		run := func(discard bool) float64 {
			d := newDev(t, Options{Size: size, Profile: zeroProfile()})
			fillSeq(t, d)
			if discard { // the upper half holds nothing of value any more
				if err := d.Discard(ctx, size/2, size/2); err != nil {
					t.Fatal(err)
				}
			}
			base := d.Stats()
			churn(t, d, rand.New(rand.NewPCG(2, 2)), size/2, 3*pages)
			st := d.Stats()
			checkFTL(t, d)
			return float64(st.Programs-base.Programs) / float64(st.HostPages-base.HostPages)
		}
		with, without := run(true), run(false)
		t.Logf("WA with discard %.2f, without %.2f", with, without)
		if with >= without*0.8 {
			t.Fatalf("discarding half the drive did not lower WA: %.2f vs %.2f", with, without)
		}
	})
}

func TestWearCounters(t *testing.T) {
	d := newDev(t, Options{Size: 16 << 20, Profile: zeroProfile()})
	rng := rand.New(rand.NewPCG(3, 3))
	fillSeq(t, d)
	churn(t, d, rng, d.Size(), 20000)
	st := d.Stats()
	g := st.Geometry
	ppb := int64(g.PagesPerBlock)
	sumPE := int64(st.PE.Mean*float64(g.Blocks) + 0.5)
	if sumPE != st.Erases {
		t.Fatalf("sum of P/E %d != erases %d", sumPE, st.Erases)
	}
	// Every erased block had been fully programmed; no block holds more
	// than one block of programs since its last erase.
	if st.Erases*ppb > st.Programs || st.Programs > (st.Erases+int64(g.Blocks))*ppb {
		t.Fatalf("programs %d outside [erases*ppb, (erases+blocks)*ppb] = [%d, %d]", st.Programs, st.Erases*ppb, (st.Erases+int64(g.Blocks))*ppb)
	}
	if st.Programs != st.HostPages+st.GCMoves {
		t.Fatalf("programs %d != host pages %d + GC moves %d", st.Programs, st.HostPages, st.GCMoves)
	}
	if !(float64(st.PE.Min) <= st.PE.Mean && st.PE.Mean <= float64(st.PE.Max)) || st.PE.Max == 0 {
		t.Fatalf("PE %+v", st.PE)
	}
	if st.Wear <= 0 {
		t.Fatalf("wear %v", st.Wear)
	}
	if st.MappedPages != d.Size()/4096 {
		t.Fatalf("mapped %d pages, want %d", st.MappedPages, d.Size()/4096)
	}
	checkFTL(t, d)
}

func TestSubPageWritesCostRMW(t *testing.T) {
	d := newDev(t, Options{Size: 1 << 20, Profile: zeroProfile()})
	mustWrite(t, d, 0, fill(512, 1)) // unmapped page: no read needed
	mustWrite(t, d, 512, fill(512, 2))
	mustWrite(t, d, 4096-512, fill(1024, 3)) // straddles two pages, one mapped
	st := d.Stats()
	if st.RMWPages != 2 || st.HostPages != 4 {
		t.Fatalf("RMW %d, host pages %d; want 2, 4", st.RMWPages, st.HostPages)
	}
}

// A read that lands on a die while it erases waits for the erase.
func TestReadStallsBehindErase(t *testing.T) {
	prof := zeroProfile()
	prof.Dies, prof.Planes, prof.PagesPerBlock = 1, 1, 16
	prof.Erase = 5 * time.Millisecond
	d := newDev(t, Options{Size: 1 << 20, Profile: prof})
	fillSeq(t, d)
	rng := rand.New(rand.NewPCG(4, 4))
	clk := d.Clock()
	for d.Stats().Erases == 0 {
		churn(t, d, rng, d.Size(), 1)
	}
	// The write that triggered GC returned at once (zero program time);
	// the die now erases for 5 ms.
	before := clk.Now()
	mustRead(t, d, 0, 4096)
	if lat := clk.Now() - before; lat < 5*time.Millisecond {
		t.Fatalf("read during erase took %v, want ≥ 5ms", lat)
	}
	st := d.Stats()
	if st.ReadStalls != 1 || st.ReadStallsErase != 1 || st.StallTime < 5*time.Millisecond {
		t.Fatalf("stalls %d, erase stalls %d, stall time %v", st.ReadStalls, st.ReadStallsErase, st.StallTime)
	}
	if st.Read.Max < 5*time.Millisecond {
		t.Fatalf("read latency max %v", st.Read.Max)
	}
	// Once the die is idle (GC may have queued several erases), reads are
	// free again.
	clk.Advance(time.Second)
	before = clk.Now()
	mustRead(t, d, 0, 4096)
	if lat := clk.Now() - before; lat != 0 {
		t.Fatalf("read of an idle die took %v", lat)
	}
	if d.Stats().ReadStalls != 1 {
		t.Fatal("idle read counted as a stall")
	}
}
