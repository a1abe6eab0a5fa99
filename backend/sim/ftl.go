package sim

import (
	"errors"
	"fmt"
)

// The flash translation layer.
//
// Logical 4 KiB pages map to physical pages (ppn = block*PagesPerBlock +
// page) in erase blocks. Block b sits on plane b % (Dies*Planes) of die
// (b % (Dies*Planes)) / Planes. Each plane has a host open block and a GC
// open block, programmed in page order, and a FIFO of erased blocks (FIFO
// so that erases spread over blocks: dynamic wear levelling; cold blocks
// are never moved, so P/E counts diverge as on a real drive without static
// levelling).
//
// Host pages go to planes round-robin, so a large write is striped over
// every die. When a plane needs a new host block and has fewer than two
// erased blocks, its GC runs first: pick the full block with the fewest
// valid pages (pickVictim), move those pages to the plane's GC open block
// (copy-back: a read and a program on the same die), erase the victim.
//
// INVARIANT: every plane keeps at least one erased block outside GC, so a GC
// pass can always take the one block it may need (a victim has fewer valid
// pages than a block holds, so its pages fit in the GC open block's room
// plus one new block).
//
// The FTL keeps metadata only; the bytes live in the store, keyed by
// logical offset. It drives timing and the counters of Stats.

const (
	l2pChunkBits = 10
	l2pChunk     = 1 << l2pChunkBits
	noBlock      = -1
	// hostMinFree is the erased blocks a plane must have before the host
	// may take one (one stays reserved for GC).
	hostMinFree = 2
)

var errNoSpace = errors.New("ftl: no plane has room (simulator bug)")

type blockState uint8

const (
	blockFree blockState = iota
	blockOpen
	blockFull
)

type block struct {
	// p2l holds lpn+1 of each page's data, 0 for invalid or unwritten;
	// allocated when the block is first opened.
	p2l     []uint32
	valid   int32
	written int32
	erases  int32
	state   blockState
}

type plane struct {
	free            []int32 // ring of erased blocks
	freeHead, nFree int
	host, gc        int32
}

func (p *plane) takeFree() int32 {
	b := p.free[p.freeHead]
	p.freeHead = (p.freeHead + 1) % len(p.free)
	p.nFree--
	return b
}

func (p *plane) putFree(b int32) {
	p.free[(p.freeHead+p.nFree)%len(p.free)] = b
	p.nFree++
}

// planeWork is what one FTL call asked of one plane.
type planeWork struct {
	prog, reads, moves, erases int64
}

type ftl struct {
	g      Geometry
	ppb    int64
	nPlane int
	l2p    [][]uint32 // lpn -> ppn+1, chunked and allocated lazily
	blocks []block
	planes []plane
	cursor int

	// work accumulates per-plane operations of the current call; touched
	// lists the planes with nonzero work.
	work    []planeWork
	touched []int32
	cands   []victimCand

	// Lifetime counters.
	hostPages int64 // pages programmed for host writes
	programs  int64 // all NAND page programs (host + GC)
	gcMoves   int64 // valid pages relocated by GC
	rmwPages  int64 // sub-page host writes that read the old page
	erases    int64
	gcRuns    int64
	nMapped   int64 // logical pages mapped
}

func newFTL(g Geometry) *ftl {
	f := &ftl{
		g:      g,
		ppb:    int64(g.PagesPerBlock),
		nPlane: g.Dies * g.Planes,
		l2p:    make([][]uint32, (g.Pages+l2pChunk-1)>>l2pChunkBits),
		blocks: make([]block, g.Blocks),
	}
	f.planes = make([]plane, f.nPlane)
	f.work = make([]planeWork, f.nPlane)
	for i := range f.planes {
		p := &f.planes[i]
		p.free = make([]int32, g.BlocksPerPlane)
		p.host, p.gc = noBlock, noBlock
		for k := 0; k < g.BlocksPerPlane; k++ {
			p.putFree(int32(i + k*f.nPlane))
		}
	}
	return f
}

func (f *ftl) planeOf(b int32) int { return int(b) % f.nPlane }

func (f *ftl) dieOfPlane(p int) int { return p / f.g.Planes }

func (f *ftl) lookup(lpn int64) uint32 {
	c := f.l2p[lpn>>l2pChunkBits]
	if c == nil {
		return 0
	}
	return c[lpn&(l2pChunk-1)]
}

func (f *ftl) setL2P(lpn int64, v uint32) {
	c := f.l2p[lpn>>l2pChunkBits]
	if c == nil {
		if v == 0 {
			return
		}
		c = make([]uint32, l2pChunk)
		f.l2p[lpn>>l2pChunkBits] = c
	}
	old := &c[lpn&(l2pChunk-1)]
	switch {
	case *old == 0 && v != 0:
		f.nMapped++
	case *old != 0 && v == 0:
		f.nMapped--
	}
	*old = v
}

func (f *ftl) addWork(p int) *planeWork {
	w := &f.work[p]
	if *w == (planeWork{}) {
		f.touched = append(f.touched, int32(p))
	}
	return w
}

// clearWork resets the per-call scratch.
func (f *ftl) clearWork() {
	for _, p := range f.touched {
		f.work[p] = planeWork{}
	}
	f.touched = f.touched[:0]
}

func (f *ftl) invalidate(ppn int64) {
	b := &f.blocks[ppn/f.ppb]
	b.p2l[ppn%f.ppb] = 0
	b.valid--
}

// program writes lpn into the next page of block bi.
func (f *ftl) program(bi int32, lpn int64) {
	b := &f.blocks[bi]
	ppn := int64(bi)*f.ppb + int64(b.written)
	b.p2l[b.written] = uint32(lpn + 1)
	b.written++
	b.valid++
	if int64(b.written) == f.ppb {
		b.state = blockFull
	}
	f.setL2P(lpn, uint32(ppn+1))
	f.programs++
}

func (f *ftl) open(p *plane) int32 {
	bi := p.takeFree()
	b := &f.blocks[bi]
	b.state = blockOpen
	if b.p2l == nil {
		b.p2l = make([]uint32, f.ppb)
	}
	return bi
}

func (f *ftl) hasRoom(bi int32) bool {
	return bi != noBlock && f.blocks[bi].state == blockOpen
}

// hostBlock returns plane pi's host open block, opening one (after GC if
// need be), or noBlock if the plane is full of valid data.
func (f *ftl) hostBlock(pi int) int32 {
	p := &f.planes[pi]
	if f.hasRoom(p.host) {
		return p.host
	}
	for p.nFree < hostMinFree && f.gcOnce(pi) {
	}
	if p.nFree < hostMinFree {
		return noBlock
	}
	p.host = f.open(p)
	return p.host
}

// writePage maps lpn to a fresh page. partial says the host wrote only some
// of its sectors, so a mapped old page must be read first.
func (f *ftl) writePage(lpn int64, partial bool) error {
	old := f.lookup(lpn)
	if partial && old != 0 {
		f.rmwPages++
		f.addWork(f.planeOf(int32(int64(old-1)/f.ppb))).reads++
	}
	for try := 0; try < f.nPlane; try++ {
		pi := f.cursor
		f.cursor++
		if f.cursor == f.nPlane {
			f.cursor = 0
		}
		bi := f.hostBlock(pi)
		if bi == noBlock {
			continue
		}
		// Re-read: GC may have moved the old page.
		if old = f.lookup(lpn); old != 0 {
			f.invalidate(int64(old - 1))
		}
		f.program(bi, lpn)
		f.hostPages++
		f.addWork(pi).prog++
		return nil
	}
	return errNoSpace
}

// readPage notes a host read of lpn; unmapped pages cost no NAND time.
func (f *ftl) readPage(lpn int64) {
	if old := f.lookup(lpn); old != 0 {
		f.addWork(f.planeOf(int32(int64(old-1)/f.ppb))).reads++
	}
}

// discardPage unmaps lpn.
func (f *ftl) discardPage(lpn int64) {
	if old := f.lookup(lpn); old != 0 {
		f.invalidate(int64(old - 1))
		f.setL2P(lpn, 0)
	}
}

// victimCand is a full block GC may pick.
type victimCand struct {
	block         int32
	valid, erases int32
}

// pickVictim chooses the GC victim among cands: greedy by fewest valid
// pages, then fewest erases, then lowest block number (determinism). It
// returns -1 if no candidate has fewer than ppb valid pages (moving it
// would gain nothing).
func pickVictim(cands []victimCand, ppb int32) int {
	best := -1
	for i, c := range cands {
		if c.valid >= ppb {
			continue
		}
		if best < 0 {
			best = i
			continue
		}
		b := cands[best]
		if c.valid < b.valid || c.valid == b.valid && (c.erases < b.erases || c.erases == b.erases && c.block < b.block) {
			best = i
		}
	}
	return best
}

// gcOnce reclaims one block of plane pi. It reports false if no block can
// be reclaimed.
func (f *ftl) gcOnce(pi int) bool {
	p := &f.planes[pi]
	f.cands = f.cands[:0]
	for k := 0; k < f.g.BlocksPerPlane; k++ {
		bi := int32(pi + k*f.nPlane)
		b := &f.blocks[bi]
		if b.state == blockFull {
			f.cands = append(f.cands, victimCand{block: bi, valid: b.valid, erases: b.erases})
		}
	}
	i := pickVictim(f.cands, int32(f.ppb))
	if i < 0 {
		return false
	}
	vi := f.cands[i].block
	v := &f.blocks[vi]
	w := f.addWork(pi)
	for pg := int64(0); pg < f.ppb && v.valid > 0; pg++ {
		lpn1 := v.p2l[pg]
		if lpn1 == 0 {
			continue
		}
		if !f.hasRoom(p.gc) {
			if p.nFree == 0 {
				panic(fmt.Sprintf("sim: ftl invariant broken: plane %d has no erased block for GC", pi))
			}
			p.gc = f.open(p)
		}
		v.p2l[pg] = 0
		v.valid--
		f.program(p.gc, int64(lpn1-1))
		f.gcMoves++
		w.moves++
	}
	v.state = blockFree
	v.written = 0
	v.erases++
	clear(v.p2l)
	p.putFree(vi)
	f.erases++
	f.gcRuns++
	w.erases++
	return true
}

// wear returns min, max and mean erase counts over all blocks.
func (f *ftl) wear() (lo, hi int64, mean float64) {
	if len(f.blocks) == 0 {
		return 0, 0, 0
	}
	lo = int64(f.blocks[0].erases)
	var sum int64
	for i := range f.blocks {
		e := int64(f.blocks[i].erases)
		lo, hi = min(lo, e), max(hi, e)
		sum += e
	}
	return lo, hi, float64(sum) / float64(len(f.blocks))
}

// mapped counts logical pages that map to NAND.
func (f *ftl) mapped() int64 {
	var n int64
	for _, c := range f.l2p {
		for _, v := range c {
			if v != 0 {
				n++
			}
		}
	}
	return n
}

// check verifies the FTL's internal consistency (tests).
func (f *ftl) check() error {
	var valid int64
	for bi := range f.blocks {
		b := &f.blocks[bi]
		var v int32
		for pg, lpn1 := range b.p2l {
			if lpn1 == 0 {
				continue
			}
			v++
			if got := f.lookup(int64(lpn1 - 1)); int64(got) != int64(bi)*f.ppb+int64(pg)+1 {
				return fmt.Errorf("block %d page %d holds lpn %d, which maps to ppn %d", bi, pg, lpn1-1, int64(got)-1)
			}
		}
		if v != b.valid {
			return fmt.Errorf("block %d: valid %d, counted %d", bi, b.valid, v)
		}
		valid += int64(v)
	}
	if m := f.mapped(); m != valid {
		return fmt.Errorf("mapped %d logical pages but %d valid physical pages", m, valid)
	}
	for pi := range f.planes {
		if f.planes[pi].nFree < 1 {
			return fmt.Errorf("plane %d has no erased block", pi)
		}
	}
	return nil
}
