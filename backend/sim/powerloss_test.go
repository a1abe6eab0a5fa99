package sim

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/shalestore/shale/backend"
)

// image reads the whole device.
func image(t testing.TB, d *Device) []byte {
	t.Helper()
	return mustRead(t, d, 0, int(d.Size()))
}

// crashWorkload syncs some writes, leaves many overlapping ones unsynced,
// and returns the device after power loss.
func crashWorkload(t *testing.T, o Options) *Device {
	t.Helper()
	d := newDev(t, o)
	rng := rand.New(rand.NewPCG(42, 0)) // the workload is fixed; o.Seed varies
	for i := 0; i < 40; i++ {
		n := 512 * (1 + rng.IntN(24))
		off := int64(rng.IntN(int(o.Size)-n)) / 512 * 512
		mustWrite(t, d, off, fill(n, byte(1+i)))
		if i == 20 {
			if err := d.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if i%7 == 3 {
			if err := d.Discard(ctx, off/4096*4096, 4096); err != nil {
				t.Fatal(err)
			}
		}
	}
	d2, err := d.PowerLoss()
	if err != nil {
		t.Fatal(err)
	}
	return d2
}

func TestPowerLossRepeatsForSeed(t *testing.T) {
	// Memory and backing file give the same image for a seed.
	mem := image(t, crashWorkload(t, Options{Size: 64 << 10, Seed: 11}))
	file := image(t, crashWorkload(t, Options{Size: 64 << 10, Seed: 11, Path: t.TempDir() + "/img"}))
	if !bytes.Equal(mem, file) {
		t.Fatal("memory and file modes gave different images for one seed")
	}
	for _, mode := range []string{"memory", "file"} {
		t.Run(mode, func(t *testing.T) {
			opts := func(seed int64) Options {
				o := Options{Size: 64 << 10, Seed: seed}
				if mode == "file" {
					o.Path = fmt.Sprintf("%s/img%d", t.TempDir(), seed)
				}
				return o
			}
			a := image(t, crashWorkload(t, opts(7)))
			b := image(t, crashWorkload(t, opts(7)))
			if !bytes.Equal(a, b) {
				t.Fatal("same seed gave different post-crash images")
			}
			distinct := map[string]bool{string(a): true}
			for seed := int64(1); seed <= 6; seed++ {
				distinct[string(image(t, crashWorkload(t, opts(seed))))] = true
			}
			if len(distinct) < 4 {
				t.Fatalf("7 seeds gave only %d distinct images", len(distinct))
			}
		})
	}
}

func TestPowerLossThenEverythingFails(t *testing.T) {
	d := newDev(t, Options{Size: 1 << 20})
	mustWrite(t, d, 0, fill(4096, 1))
	d2, err := d.PowerLoss()
	if err != nil {
		t.Fatal(err)
	}
	if !d.PoweredOff() || d2.PoweredOff() {
		t.Fatal("PoweredOff wrong")
	}
	calls := map[string]error{
		"read":    d.ReadAt(ctx, make([]byte, 512), 0),
		"write":   d.WriteAt(ctx, make([]byte, 512), 0),
		"sync":    d.Sync(ctx),
		"discard": d.Discard(ctx, 0, 4096),
	}
	for name, err := range calls {
		if !errors.Is(err, backend.ErrFailed) {
			t.Errorf("%s after power loss: %v, want ErrFailed", name, err)
		}
	}
	if _, err := d.PowerLoss(); err == nil {
		t.Error("second PowerLoss succeeded")
	}
	if _, err := d.Reopen(); err == nil {
		t.Error("Reopen after PowerLoss succeeded")
	}
	if st := d.Stats(); st.Writes != 1 {
		t.Errorf("stats of the dead device: %d writes", st.Writes)
	}
	if st := d2.Stats(); st.Writes != 1 || st.PowerCycles != 1 {
		t.Errorf("stats of the revived device: %d writes, %d power cycles", st.Writes, st.PowerCycles)
	}
	if err := d.Close(); err != nil {
		t.Errorf("close of a dead device: %v", err)
	}
	// The revived device works and loses power again.
	mustWrite(t, d2, 4096, fill(4096, 2))
	if err := d2.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	d3, err := d2.PowerLoss()
	if err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, d3, 4096, 4096); !bytes.Equal(got, fill(4096, 2)) {
		t.Fatal("synced write lost in second power cycle")
	}
}

// sectorData fills a sector with its tag so reads identify which write a
// sector came from, and tearing inside a sector would show.
func sectorData(dst []byte, tag uint64) {
	for i := 0; i+8 <= len(dst); i += 8 {
		binary.LittleEndian.PutUint64(dst[i:], tag)
	}
}

// sectorTag decodes sectorData, or reports garbage.
func sectorTag(src []byte) (uint64, bool) {
	tag := binary.LittleEndian.Uint64(src)
	var want [4096]byte
	sectorData(want[:len(src)], tag)
	return tag, bytes.Equal(src, want[:len(src)])
}

// model is the plain reference: per sector, the synced tag and the tags of
// unsynced writes since (0 = zeros).
type model struct {
	durable []uint64
	pending [][]uint64
}

func (m *model) current(s int) uint64 {
	if p := m.pending[s]; len(p) > 0 {
		return p[len(p)-1]
	}
	return m.durable[s]
}

// TestModel runs random writes, discards, syncs, reads and power losses
// against the model: between power losses reads match exactly; after one
// every sector holds its synced value or a value written since, never
// anything else.
func TestModel(t *testing.T) {
	type cfg struct {
		name   string
		align  int
		file   bool
		garble bool
	}
	seeds, steps := int64(2), 1200
	if *long {
		seeds, steps = 10, 10000
	}
	for _, c := range []cfg{{"mem512", 512, false, false}, {"mem4096", 4096, false, false}, {"file512", 512, true, false}, {"mem512/corrupt_torn", 512, false, true}} {
		for seed := int64(1); seed <= seeds; seed++ {
			t.Run(fmt.Sprintf("%s/seed=%d", c.name, seed), func(t *testing.T) {
				runModel(t, c.align, c.file, c.garble, seed, steps)
			})
		}
	}
}

func runModel(t *testing.T, align int, file, garble bool, seed int64, steps int) {
	const size = 256 << 10
	prof := SSDProfile()
	prof.Alignment = align
	o := Options{Size: size, Seed: seed, Profile: prof, CorruptTorn: garble}
	if file {
		o.Path = t.TempDir() + "/img"
	}
	d := newDev(t, o)
	nsec := size / align
	m := &model{durable: make([]uint64, nsec), pending: make([][]uint64, nsec)}
	rng := rand.New(rand.NewPCG(uint64(seed), 99))
	buf := make([]byte, 64*4096)
	var tag uint64
	crashes, tornSeen, garbled, unreadable := 0, 0, 0, 0
	verify := func(lo, hi int) {
		got := buf[:(hi-lo)*align]
		if err := d.ReadAt(ctx, got, int64(lo*align)); err != nil {
			t.Fatal(err)
		}
		for s := lo; s < hi; s++ {
			v, ok := sectorTag(got[(s-lo)*align : (s-lo+1)*align])
			if !ok || v != m.current(s) {
				t.Fatalf("sector %d: read tag %d (ok %v), model %d", s, v, ok, m.current(s))
			}
		}
	}
	for step := 0; step < steps; step++ {
		n := 1 + rng.IntN(16)
		if rng.IntN(4) == 0 {
			n = 1 + rng.IntN(64)
		}
		lo := rng.IntN(nsec - n + 1)
		switch r := rng.IntN(100); {
		case r < 50: // write
			p := buf[:n*align]
			for s := 0; s < n; s++ {
				tag++
				sectorData(p[s*align:(s+1)*align], tag)
				m.pending[lo+s] = append(m.pending[lo+s], tag)
			}
			mustWrite(t, d, int64(lo*align), p)
		case r < 60: // discard
			if err := d.Discard(ctx, int64(lo*align), int64(n*align)); err != nil {
				t.Fatal(err)
			}
			for s := lo; s < lo+n; s++ {
				m.pending[s] = append(m.pending[s], 0)
			}
		case r < 70:
			if err := d.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			for s := range m.pending {
				m.durable[s] = m.current(s)
				m.pending[s] = m.pending[s][:0]
			}
		case r < 97:
			verify(lo, lo+n)
		default:
			nd, err := d.PowerLoss()
			if err != nil {
				t.Fatal(err)
			}
			d = nd
			crashes++
			var repair []int
			sec := make([]byte, align)
			for s := 0; s < nsec; s++ {
				err := d.ReadAt(ctx, sec, int64(s*align))
				pending := len(m.pending[s]) > 0
				if err != nil {
					if !garble || !pending || !errors.Is(err, backend.ErrCorrupt) {
						t.Fatalf("after power loss %d: sector %d: %v (pending %v)", crashes, s, err, pending)
					}
					unreadable++
					repair = append(repair, s)
					continue
				}
				v, ok := sectorTag(sec)
				legal := ok && v == m.durable[s]
				for _, p := range m.pending[s] {
					legal = legal || ok && v == p
				}
				if !legal && garble && pending {
					garbled++
					repair = append(repair, s)
					continue
				}
				if !ok {
					t.Fatalf("after power loss %d: sector %d torn inside", crashes, s)
				}
				if !legal {
					t.Fatalf("after power loss %d: sector %d holds tag %d: neither synced (%d) nor written since (%v)", crashes, s, v, m.durable[s], m.pending[s])
				}
				if pending && v != m.current(s) {
					tornSeen++
				}
				m.durable[s] = v
				m.pending[s] = m.pending[s][:0]
			}
			// Rewrite what power loss garbled, durably, so the model knows
			// every sector again.
			for _, s := range repair {
				tag++
				sectorData(sec, tag)
				mustWrite(t, d, int64(s*align), sec)
				m.durable[s] = tag
				m.pending[s] = m.pending[s][:0]
			}
			if err := d.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			if st := d.Stats(); st.UnreadableSectors != 0 {
				t.Fatalf("%d sectors unreadable after rewriting them", st.UnreadableSectors)
			}
		}
	}
	if err := d.drv.ftl.check(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d power losses, %d sectors not holding their last write afterwards, %d garbled, %d unreadable", crashes, tornSeen, garbled, unreadable)
	if crashes > 5 && tornSeen == 0 {
		t.Fatal("power losses never lost an unsynced write")
	}
	if garble != (garbled > 0 && unreadable > 0) {
		t.Fatalf("corrupt_torn %v, but %d garbled and %d unreadable sectors", garble, garbled, unreadable)
	}
}

func TestMaxUnsynced(t *testing.T) {
	d := newDev(t, Options{Size: 4 << 20, Seed: 1, MaxUnsyncedBytes: 64 << 10})
	mustWrite(t, d, 0, fill(1<<20, 1))
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// 64 overwrites of 16 KiB: only the last ~64 KiB of old data is kept.
	for i := 0; i < 64; i++ {
		mustWrite(t, d, int64(i)*16384, fill(16384, 2))
	}
	st := d.Stats()
	if st.Destaged < 55 || d.undo.retained > 64<<10 || d.undo.pending() > 9 {
		t.Fatalf("destaged %d, retained %d, pending %d", st.Destaged, d.undo.retained, d.undo.pending())
	}
	d2, err := d.PowerLoss()
	if err != nil {
		t.Fatal(err)
	}
	// Destaged writes survive; only the last few may roll back.
	img := mustRead(t, d2, 0, 1<<20)
	if !bytes.Equal(img[:50*16384], fill(50*16384, 2)) {
		t.Fatal("a destaged write was lost")
	}
	if d2.Stats().Destaged != st.Destaged {
		t.Fatal("destaged count not carried over")
	}
	// Unlimited: nothing is destaged.
	u := newDev(t, Options{Size: 4 << 20, MaxUnsyncedBytes: -1})
	for i := 0; i < 3; i++ {
		mustWrite(t, u, 0, fill(1<<20, byte(i)))
	}
	if u.Stats().Destaged != 0 || u.undo.pending() != 3 {
		t.Fatal("unlimited log destaged")
	}
}

// sectorImage reads d sector by sector: unreadable sectors come back as
// "BAD" so images with ErrCorrupt sectors compare.
func sectorImage(t *testing.T, d *Device) (img []byte, bad int) {
	buf := make([]byte, d.Alignment())
	for off := int64(0); off < d.Size(); off += int64(len(buf)) {
		err := d.ReadAt(ctx, buf, off)
		switch {
		case errors.Is(err, backend.ErrCorrupt):
			img = append(img, "BAD"...)
			bad++
		case err != nil:
			t.Fatal(err)
		default:
			img = append(img, buf...)
		}
	}
	return img, bad
}

func TestCorruptTornRepeatsForSeed(t *testing.T) {
	a, badA := sectorImage(t, crashWorkload(t, Options{Size: 64 << 10, Seed: 5, CorruptTorn: true}))
	b, badB := sectorImage(t, crashWorkload(t, Options{Size: 64 << 10, Seed: 5, CorruptTorn: true}))
	if !bytes.Equal(a, b) || badA != badB {
		t.Fatal("same seed, different image with corrupt_torn")
	}
	distinct := map[string]bool{}
	total := 0
	for seed := int64(1); seed <= 6; seed++ {
		img, bad := sectorImage(t, crashWorkload(t, Options{Size: 64 << 10, Seed: seed, CorruptTorn: true}))
		distinct[string(img)] = true
		total += bad
	}
	if len(distinct) < 4 || total == 0 {
		t.Fatalf("6 seeds: %d distinct images, %d unreadable sectors", len(distinct), total)
	}
}
