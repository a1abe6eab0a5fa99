package dedup

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// memSource is a Source over cblocks kept in memory, recording sectors as
// the engine does: sector j of a cblock written at volume sector lba is
// recorded when lba+j is a multiple of RecordEvery.
type memSource struct {
	cblocks map[int64][]byte // by Offset
	index   map[uint64]Loc
	next    int64
	hash    func([]byte) uint64
}

func newMemSource() *memSource {
	return &memSource{cblocks: map[int64][]byte{}, index: map[uint64]Loc{}, hash: Hash}
}

func (m *memSource) Lookup(h uint64) (Loc, bool) { l, ok := m.index[h]; return l, ok }

func (m *memSource) Cblock(loc Loc) ([]byte, bool) { d, ok := m.cblocks[loc.Offset]; return d, ok }

// store keeps data (written at volume sector lba) as cblocks of at most
// 64 sectors and records its every-8th sectors.
func (m *memSource) store(lba int, data []byte) {
	for off := 0; off < len(data); off += 64 * SectorSize {
		c := data[off:min(len(data), off+64*SectorSize)]
		m.next++
		m.cblocks[m.next] = bytes.Clone(c)
		first := lba + off/SectorSize
		for j := range len(c) / SectorSize {
			if (first+j)%RecordEvery == 0 {
				m.index[m.hash(c[j*SectorSize:(j+1)*SectorSize])] = Loc{Offset: m.next, CLen: 1, Sector: uint16(j), Sectors: uint16(len(c) / SectorSize)}
			}
		}
	}
}

func randomSectors(rng *rand.Rand, n int) []byte {
	p := make([]byte, n*SectorSize)
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
	return p
}

func hashes(p []byte, h func([]byte) uint64) []uint64 {
	hs := make([]uint64, len(p)/SectorSize)
	for i := range hs {
		hs[i] = h(p[i*SectorSize : (i+1)*SectorSize])
	}
	return hs
}

func noZero(int) bool { return false }

func isZeroBytes(b []byte) bool { return bytes.Count(b, []byte{0}) == len(b) }

// zeroIn is Plan's isZero for p.
func zeroIn(p []byte) func(int) bool {
	return func(i int) bool { return isZeroBytes(p[i*SectorSize : (i+1)*SectorSize]) }
}

// checkPlan: the runs cover [0, n) in order, and every dup run's sectors
// are the stored sectors it names. It returns the duplicate sectors.
func checkPlan(t *testing.T, p []byte, plan []Run, src *memSource) int {
	t.Helper()
	n, at, dup := len(p)/SectorSize, 0, 0
	for _, r := range plan {
		if r.Start != at || r.End <= r.Start {
			t.Fatalf("plan %v: run %v does not follow %d", plan, r, at)
		}
		at = r.End
		if !r.Dup {
			continue
		}
		c := src.cblocks[r.Src.Offset]
		want := c[int(r.Src.Sector)*SectorSize : (int(r.Src.Sector)+r.End-r.Start)*SectorSize]
		if !bytes.Equal(p[r.Start*SectorSize:r.End*SectorSize], want) {
			t.Fatalf("dup run %v: bytes differ from the stored ones", r)
		}
		dup += r.End - r.Start
	}
	if at != n {
		t.Fatalf("plan %v ends at %d, want %d", plan, at, n)
	}
	// Each group of duplicate runs back to back, with the zero sectors
	// around it, is MinRun sectors or more.
	zero := func(i int) bool { return i >= 0 && i < n && isZeroBytes(p[i*SectorSize:(i+1)*SectorSize]) }
	for g := 0; g < len(plan); {
		if !plan[g].Dup {
			g++
			continue
		}
		e := g
		for e+1 < len(plan) && plan[e+1].Dup {
			e++
		}
		l := plan[e].End - plan[g].Start
		for i := plan[g].Start - 1; zero(i); i-- {
			l++
		}
		for i := plan[e].End; zero(i); i++ {
			l++
		}
		if l < MinRun {
			t.Fatalf("plan %v: duplicate runs %v shorter than %d with their zero neighbours", plan, plan[g:e+1], MinRun)
		}
		g = e + 1
	}
	return dup
}

// A 1 MiB copy written at any sector offset from its original alignment
// is found almost whole: all but the pieces of under MinRun sectors at
// the ends of the source cblocks it straddles.
func TestPlanShiftedCopy(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	orig := randomSectors(rng, 2048)
	for _, shift := range []int{0, 1, 3, 7, 8, 13} {
		src := newMemSource()
		src.store(0, orig)
		// The copy starts shift sectors into the original: its sector i
		// is the original's sector i+shift.
		cp := orig[shift*SectorSize:]
		plan := Plan(cp, hashes(cp, Hash), src, noZero, nil)
		dup := checkPlan(t, cp, plan, src)
		if n := len(cp) / SectorSize; dup*10 < n*9 {
			t.Errorf("shift %d: %d of %d sectors found duplicate", shift, dup, n)
		}
	}
}

// Every hash collides: Plan confirms every hit and never plans a run whose
// bytes differ.
func TestPlanCollisions(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	constant := func([]byte) uint64 { return 42 }
	src := newMemSource()
	src.hash = constant
	stored := randomSectors(rng, 256)
	src.store(0, stored)
	fresh := randomSectors(rng, 256)
	plan := Plan(fresh, hashes(fresh, constant), src, noZero, nil)
	if dup := checkPlan(t, fresh, plan, src); dup != 0 {
		t.Fatalf("%d sectors of new data planned as duplicates", dup)
	}
	// With everything colliding, real duplicates are still found when the
	// one recorded location happens to be in them, and never wrongly.
	half := append(bytes.Clone(stored[:128*SectorSize]), fresh[:128*SectorSize]...)
	checkPlan(t, half, Plan(half, hashes(half, constant), src, noZero, nil), src)
}

// Runs shorter than MinRun are not worth a tuple; zero sectors are not
// looked up; a match extends backwards only into unplanned sectors.
func TestPlanEdges(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	stored := randomSectors(rng, 64)
	src := newMemSource()
	src.store(0, stored)

	short := append(randomSectors(rng, 10), stored[8*SectorSize:15*SectorSize]...) // 7 duplicate sectors
	short = append(short, randomSectors(rng, 10)...)
	if dup := checkPlan(t, short, Plan(short, hashes(short, Hash), src, noZero, nil), src); dup != 0 {
		t.Errorf("a run of 7 sectors planned as duplicate (%d sectors)", dup)
	}

	// Two copies back to back: both found, the second not eating into the
	// first.
	two := append(bytes.Clone(stored), stored...)
	plan := Plan(two, hashes(two, Hash), src, noZero, nil)
	if dup := checkPlan(t, two, plan, src); dup != 128 {
		t.Errorf("two copies of a 64-sector cblock: %d duplicate sectors, plan %v", dup, plan)
	}

	// The last block of a small file: 3 sectors of data, zeros to the
	// 4 KiB block. Its copy is a duplicate with the zeros after it, not
	// with data after it or too few zeros.
	tailSrc := newMemSource()
	tail := randomSectors(rng, 3)
	tailSrc.store(0, tail)
	z := func(n int) []byte { return make([]byte, n*SectorSize) }
	for _, c := range []struct {
		name string
		p    []byte
		dup  int
	}{
		{"tail and 5 zeros", slicesConcat(randomSectors(rng, 8), tail, z(5), randomSectors(rng, 8)), 3},
		{"zeros, tail and zeros", slicesConcat(randomSectors(rng, 8), z(2), tail, z(3), randomSectors(rng, 8)), 3},
		{"tail at the end after zeros", slicesConcat(randomSectors(rng, 8), z(5), tail), 3},
		{"tail and 4 zeros", slicesConcat(randomSectors(rng, 8), tail, z(4), randomSectors(rng, 8)), 0},
		{"tail and data", slicesConcat(randomSectors(rng, 8), tail, randomSectors(rng, 8)), 0},
	} {
		if dup := checkPlan(t, c.p, Plan(c.p, hashes(c.p, Hash), tailSrc, zeroIn(c.p), nil), tailSrc); dup != c.dup {
			t.Errorf("%s: %d duplicate sectors, want %d", c.name, dup, c.dup)
		}
	}

	// A copy spanning two stored cblocks whose boundary is not a multiple
	// of RecordEvery: a piece shorter than MinRun on either side of the
	// boundary counts with the piece it abuts.
	pieces := newMemSource()
	ab := randomSectors(rng, 32)
	pieces.store(0, ab[:11*SectorSize])               // cblock A: sectors 0-10
	pieces.store(11, ab[11*SectorSize:24*SectorSize]) // cblock B: 11-23
	pieces.store(24, ab[24*SectorSize:30*SectorSize]) // cblock C: 24-29
	for _, c := range []struct {
		name     string
		from, to int // the copied sectors of ab
		dup      int
	}{
		{"6 sectors ending A, then B", 5, 24, 19},
		{"B, then 6 sectors of C", 11, 30, 19},
		{"6 sectors ending A, 3 of B", 5, 14, 0},
	} {
		cp := slicesConcat(randomSectors(rng, 3), ab[c.from*SectorSize:c.to*SectorSize], randomSectors(rng, 3))
		plan := Plan(cp, hashes(cp, Hash), pieces, noZero, nil)
		if dup := checkPlan(t, cp, plan, pieces); dup != c.dup {
			t.Errorf("%s: %d duplicate sectors, want %d (plan %v)", c.name, dup, c.dup, plan)
		}
	}

	zeros := make([]byte, 16*SectorSize)
	called := 0
	lookups := &countingSource{memSource: src, n: &called}
	Plan(zeros, hashes(zeros, Hash), lookups, func(int) bool { return true }, nil)
	if called != 0 {
		t.Errorf("%d lookups for zero sectors", called)
	}
}

type countingSource struct {
	*memSource
	n *int
}

func (c *countingSource) Lookup(h uint64) (Loc, bool) { *c.n++; return c.memSource.Lookup(h) }

// Random writes made of pieces of stored data at random offsets and fresh
// data: every plan is consistent with the bytes.
func TestPlanRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	src := newMemSource()
	var written [][]byte
	lba := 0
	for range 200 {
		var p []byte
		for len(p) < 64*SectorSize {
			if len(written) > 0 && rng.IntN(2) == 0 {
				w := written[rng.IntN(len(written))]
				a := rng.IntN(len(w) / SectorSize)
				b := a + rng.IntN(len(w)/SectorSize-a) + 1
				p = append(p, w[a*SectorSize:b*SectorSize]...)
			} else {
				p = append(p, randomSectors(rng, rng.IntN(20)+1)...)
			}
		}
		checkPlan(t, p, Plan(p, hashes(p, Hash), src, noZero, nil), src)
		src.store(lba, p)
		lba += len(p) / SectorSize
		written = append(written, p)
	}
}

func BenchmarkHash(b *testing.B) {
	p := make([]byte, SectorSize)
	b.SetBytes(SectorSize)
	for b.Loop() {
		Hash(p)
	}
}

func slicesConcat(ps ...[]byte) []byte { return bytes.Join(ps, nil) }
