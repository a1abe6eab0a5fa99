package pyramid

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/shalestore/shale/core/page"
)

// PatchInfo describes one persisted patch: an entry of a relation's
// manifest.
type PatchInfo struct {
	// SeqLo and SeqHi bound the sequence numbers of the batches the patch
	// holds (inclusive). Patches of a relation have disjoint ranges; the
	// manifest lists them newest first.
	SeqLo, SeqHi uint64
	// Tuples, LeafPages and Bytes (all pages, index included) measure it.
	Tuples, LeafPages, Bytes uint64
	// Levels is the number of index levels above the leaves (0: the root
	// is the only leaf).
	Levels int
	// Root is the address of the root page.
	Root Addr
	// MinKey and MaxKey are the key fields of the first and last tuple.
	MinKey, MaxKey []uint64
	// LastEnd is, for a range relation, the end of the last run.
	LastEnd uint64
	// ElidedThrough is the highest sequence number of an elide record the
	// patch was filtered against when written (0: none).
	ElidedThrough uint64
}

// same reports whether two infos name the same patch.
func (pi *PatchInfo) same(o *PatchInfo) bool {
	return pi.SeqLo == o.SeqLo && pi.SeqHi == o.SeqHi && pi.Root == o.Root
}

// patchTag is the tag of the pages of a patch at an index level: a hash of
// the relation and the sequence range, with the level in the low byte. It
// is stable across restarts (a fixed mixing function, no random seed).
func patchTag(rel uint16, seqLo, seqHi uint64, level int) uint64 {
	h := mix64(uint64(rel) ^ 0x5ca1ab1e)
	h = mix64(h ^ seqLo)
	h = mix64(h ^ seqHi)
	return h&^0xff | uint64(level&0xff)
}

// mix64 is splitmix64's finaliser.
func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// ---- writing ----

// builderLevel buffers the tuples of one level (0: leaves) of a patch being
// written.
type builderLevel struct {
	rows    []uint64 // flat tuples, from head
	head    int      // first unused tuple value in rows
	pages   int      // pages emitted at this level
	enc     page.Encoder
	nfields int
}

// patchBuilder streams sorted tuples into pages and builds the index above
// them, bottom-up, one buffered page per level.
type patchBuilder struct {
	r        *Relation
	pw       PageWriter
	ctx      context.Context
	info     PatchInfo
	levels   []*builderLevel
	buf      []byte
	onAppend func() // called after the first page is appended
	appended bool
}

func newPatchBuilder(ctx context.Context, r *Relation, pw PageWriter, seqLo, seqHi uint64) *patchBuilder {
	b := &patchBuilder{r: r, pw: pw, ctx: ctx}
	b.info.SeqLo, b.info.SeqHi = seqLo, seqHi
	b.levels = []*builderLevel{{nfields: r.sh.f}}
	return b
}

// add appends a tuple. REQUIRES: keys strictly increasing across calls.
func (b *patchBuilder) add(t []uint64) error {
	sh := &b.r.sh
	if b.info.Tuples == 0 {
		b.info.MinKey = append([]uint64(nil), t[:sh.k]...)
	}
	b.info.MaxKey = append(b.info.MaxKey[:0], t[:sh.k]...)
	if sh.isRange {
		b.info.LastEnd = sh.end(t)
	}
	b.info.Tuples++
	return b.push(0, t)
}

// push appends a tuple to level i and emits a page when a full one is
// buffered.
func (b *patchBuilder) push(i int, t []uint64) error {
	lv := b.levels[i]
	lv.rows = append(lv.rows, t...)
	maxT := b.r.db.opts.MaxPageTuples
	if (len(lv.rows)-lv.head)/lv.nfields > maxT {
		return b.emit(i, false)
	}
	return nil
}

// emit writes one page from the front of level i's buffer; with all set,
// everything buffered (in as many pages as it takes).
func (b *patchBuilder) emit(i int, all bool) error {
	lv := b.levels[i]
	nf := lv.nfields
	maxT := b.r.db.opts.MaxPageTuples
	for {
		count := (len(lv.rows) - lv.head) / nf
		if count == 0 || (!all && count <= maxT) {
			break
		}
		rows := lv.rows[lv.head : lv.head+min(count, maxT)*nf]
		n := lv.enc.Fit(rows, nf, b.r.db.opts.PageBytes)
		tag := patchTag(b.r.schema.ID, b.info.SeqLo, b.info.SeqHi, i)
		var err error
		b.buf, err = lv.enc.Encode(b.buf[:0], rows[:n*nf], nf, b.r.sh.k, tag)
		if err != nil {
			return fmt.Errorf("relation %s: encode page: %w", b.r.schema.Name, err)
		}
		addr, err := b.pw.Append(b.ctx, b.buf)
		if err != nil {
			return fmt.Errorf("relation %s: append page: %w", b.r.schema.Name, err)
		}
		b.info.Bytes += uint64(len(b.buf))
		if i == 0 {
			b.info.LeafPages++
		}
		if !b.appended {
			b.appended = true
			if b.onAppend != nil {
				b.onAppend()
			}
		}
		lv.pages++
		// Index entry: the page's first key and its address.
		if i+1 == len(b.levels) {
			b.levels = append(b.levels, &builderLevel{nfields: b.r.sh.k + 2})
		}
		up := b.levels[i+1]
		up.rows = append(up.rows, rows[:b.r.sh.k]...)
		up.rows = append(up.rows, binary.BigEndian.Uint64(addr[:8]), binary.BigEndian.Uint64(addr[8:]))
		lv.head += n * nf
		if lv.head*2 > len(lv.rows) { // compact
			lv.rows = append(lv.rows[:0], lv.rows[lv.head:]...)
			lv.head = 0
		}
		if (len(up.rows)-up.head)/up.nfields > maxT {
			if err := b.emit(i+1, false); err != nil {
				return err
			}
		}
	}
	return nil
}

// finish writes what is buffered and the index, makes the pages durable
// and returns the patch's info. REQUIRES: at least one tuple added.
func (b *patchBuilder) finish() (PatchInfo, error) {
	if b.info.Tuples == 0 {
		return PatchInfo{}, errors.New("pyramid: empty patch")
	}
	for i := 0; ; i++ {
		lv := b.levels[i]
		nf := lv.nfields
		count := (len(lv.rows) - lv.head) / nf
		if i == len(b.levels)-1 && lv.pages == 0 && count <= b.r.db.opts.MaxPageTuples &&
			lv.enc.Fit(lv.rows[lv.head:], nf, b.r.db.opts.PageBytes) == count {
			// Everything left fits in one page: the root.
			tag := patchTag(b.r.schema.ID, b.info.SeqLo, b.info.SeqHi, i)
			var err error
			b.buf, err = lv.enc.Encode(b.buf[:0], lv.rows[lv.head:], nf, b.r.sh.k, tag)
			if err != nil {
				return PatchInfo{}, fmt.Errorf("relation %s: encode root: %w", b.r.schema.Name, err)
			}
			addr, err := b.pw.Append(b.ctx, b.buf)
			if err != nil {
				return PatchInfo{}, fmt.Errorf("relation %s: append root: %w", b.r.schema.Name, err)
			}
			b.info.Bytes += uint64(len(b.buf))
			if i == 0 {
				b.info.LeafPages++
			}
			if !b.appended && b.onAppend != nil {
				b.appended = true
				b.onAppend()
			}
			b.info.Root, b.info.Levels = addr, i
			break
		}
		if err := b.emit(i, true); err != nil {
			return PatchInfo{}, err
		}
	}
	if err := b.pw.Finish(b.ctx); err != nil {
		return PatchInfo{}, fmt.Errorf("relation %s: finish pages: %w", b.r.schema.Name, err)
	}
	return b.info, nil
}

// ---- reading ----

// pageCache reads pages through a ristretto cache bounded in bytes.
type pageCache struct {
	store PageStore
	c     *ristretto.Cache[uint64, *cachedPage]
	stats *Stats
}

type cachedPage struct {
	addr Addr
	p    *page.Page
}

// pageOverhead is charged to the cache per page on top of its bytes.
const pageOverhead = 400

func newPageCache(store PageStore, maxBytes int64, stats *Stats) (*pageCache, error) {
	c, err := ristretto.NewCache(&ristretto.Config[uint64, *cachedPage]{
		NumCounters: max(1000, 10*maxBytes/4096),
		MaxCost:     maxBytes,
		BufferItems: 64,
	})
	if err != nil {
		return nil, fmt.Errorf("pyramid: page cache: %w", err)
	}
	return &pageCache{store: store, c: c, stats: stats}, nil
}

func addrHash(a Addr) uint64 {
	return mix64(mix64(binary.LittleEndian.Uint64(a[:8])) ^ binary.LittleEndian.Uint64(a[8:]))
}

// get returns the page at addr, checking that it is the page expected: its
// tag and shape. Pages that are not are ErrCorrupt (see PageStore: a
// reclaimed address).
func (c *pageCache) get(ctx context.Context, addr Addr, tag uint64, nfields, nkeys int) (*page.Page, error) {
	h := addrHash(addr)
	if cp, ok := c.c.Get(h); ok && cp.addr == addr && cp.p.Tag() == tag {
		c.stats.CacheHits.Add(1)
		return cp.p, nil
	}
	c.stats.CacheMisses.Add(1)
	buf, err := c.store.ReadPage(ctx, addr, nil)
	if err != nil {
		return nil, fmt.Errorf("page %s: %w", addr, err)
	}
	p, err := page.Decode(buf)
	if err != nil {
		return nil, fmt.Errorf("page %s: %w: %w", addr, ErrCorrupt, err)
	}
	if p.Tag() != tag || p.Fields() != nfields || p.Keys() != nkeys {
		return nil, fmt.Errorf("page %s: %w: tag %x with %d fields (%d keys), want tag %x with %d fields (%d keys)",
			addr, ErrCorrupt, p.Tag(), p.Fields(), p.Keys(), tag, nfields, nkeys)
	}
	c.c.Set(h, &cachedPage{addr: addr, p: p}, int64(len(p.Bytes())+pageOverhead))
	return p, nil
}

// patch is a persisted patch in a version.
type patch struct {
	info PatchInfo
	rel  *Relation
	// root is the root page once read: kept out of the cache (one small
	// page per patch, and every lookup of the patch starts there).
	root atomic.Pointer[page.Page]
	// elideChecked is the elide sequence number at which Compact last
	// found the patch not worth rewriting for elision.
	elideChecked atomic.Uint64
	// origin says how this process got the patch ("manifest", "flush",
	// "merge"), for diagnostics.
	origin string
}

// getLE finds the last tuple ≤ probe: its leaf page and index, or a nil
// page when every tuple is greater. It allocates nothing once the pages
// are cached.
func (pt *patch) getLE(ctx context.Context, probe []uint64) (*page.Page, int, error) {
	p := pt.root.Load()
	if p == nil {
		var err error
		if p, err = pt.getPage(ctx, pt.info.Root, pt.info.Levels); err != nil {
			return nil, 0, err
		}
		pt.root.Store(p)
	}
	for level := pt.info.Levels; ; level-- {
		i := p.SearchGT(probe) - 1
		if i < 0 {
			return nil, 0, nil
		}
		if level == 0 {
			return p, i, nil
		}
		var err error
		if p, err = pt.child(ctx, p, i, level-1); err != nil {
			return nil, 0, err
		}
	}
}

func (pt *patch) tag(level int) uint64 {
	return patchTag(pt.rel.schema.ID, pt.info.SeqLo, pt.info.SeqHi, level)
}

// getPage reads the page at addr at the given level (0: leaf).
func (pt *patch) getPage(ctx context.Context, addr Addr, level int) (*page.Page, error) {
	sh := &pt.rel.sh
	nf := sh.f
	if level > 0 {
		nf = sh.k + 2
	}
	return pt.rel.db.cache.get(ctx, addr, pt.tag(level), nf, sh.k)
}

// child reads the page that entry i of index page parent points to, at
// the given level, and checks it is that page: its first key must be the
// entry's key. A store that hands back another page of the same patch
// (same tag, valid checksum) is caught here, as ErrCorrupt, instead of
// silently steering a search or a merge wrong.
func (pt *patch) child(ctx context.Context, parent *page.Page, i, level int) (*page.Page, error) {
	k := pt.rel.sh.k
	a := childAddr(parent, i, k)
	c, err := pt.getPage(ctx, a, level)
	if err != nil {
		return nil, err
	}
	for f := 0; f < k; f++ {
		if c.Len() == 0 || c.Value(0, f) != parent.Value(i, f) {
			return nil, fmt.Errorf("page %s: %w: level %d page does not start with its index key", a, ErrCorrupt, level)
		}
	}
	return c, nil
}

func childAddr(p *page.Page, i, k int) Addr {
	var a Addr
	binary.BigEndian.PutUint64(a[:8], p.Value(i, k))
	binary.BigEndian.PutUint64(a[8:], p.Value(i, k+1))
	return a
}

// mayHoldLE reports whether the patch may hold a tuple ≤ probe that
// matters for probe: one equal to it (point) or covering it (range).
func (pt *patch) mayHold(probe []uint64) bool {
	sh := &pt.rel.sh
	if slices.Compare(probe, pt.info.MinKey) < 0 {
		return false
	}
	if c := slices.Compare(probe, pt.info.MaxKey); c > 0 {
		if !sh.isRange {
			return false
		}
		// Past the last run's start: only the last run can cover it.
		return slices.Compare(probe[:sh.k-1], pt.info.MaxKey[:sh.k-1]) == 0 && probe[sh.k-1] < pt.info.LastEnd
	}
	return true
}

// frame is one level of a patch iterator's descent.
type frame struct {
	p *page.Page
	i int
}

// patchIter walks a persisted patch in key order, one page per level in
// memory.
type patchIter struct {
	ctx   context.Context
	pt    *patch
	stack []frame // root first, leaf last
	buf   []uint64
	e     error
	valid bool
}

func (it *patchIter) fail(err error) bool {
	it.e, it.valid = err, false
	return false
}

// descend fills the stack from the root down. pick chooses the index in a
// page at a level (leaf at level 0) and returns -1 for "before the page".
func (it *patchIter) descend(pick func(p *page.Page, level int) int) bool {
	it.stack = it.stack[:0]
	p, err := it.pt.getPage(it.ctx, it.pt.info.Root, it.pt.info.Levels)
	if err != nil {
		return it.fail(err)
	}
	for level := it.pt.info.Levels; ; level-- {
		i := pick(p, level)
		if i < 0 {
			i = 0
			if level == 0 {
				i = -1
			}
		}
		it.stack = append(it.stack, frame{p: p, i: i})
		if level == 0 {
			return true
		}
		if p, err = it.pt.child(it.ctx, p, i, level-1); err != nil {
			return it.fail(err)
		}
	}
}

func (it *patchIter) load() bool {
	f := &it.stack[len(it.stack)-1]
	if f.i < 0 || f.i >= f.p.Len() {
		it.valid = false
		return false
	}
	it.buf = f.p.Tuple(f.i, it.buf[:0])
	it.valid = true
	return true
}

func (it *patchIter) first() bool {
	if !it.descend(func(*page.Page, int) int { return 0 }) {
		return false
	}
	return it.load()
}

// seekLE positions at the last tuple ≤ probe.
func (it *patchIter) seekLE(probe []uint64) bool {
	if !it.descend(func(p *page.Page, _ int) int { return p.SearchGT(probe) - 1 }) {
		return false
	}
	return it.load()
}

// seekGE positions at the first tuple ≥ probe.
//
// In an index page it descends into the last child whose first key is
// < probe: tuples ≥ probe may begin inside it. The last child whose key is
// ≤ probe would be wrong for a prefix probe: every child whose key starts
// with the prefix compares equal to it, and the descent would skip all
// but the last of them. (A full-key probe equal to a child's key lands in
// the child before; the leaf then has nothing ≥ probe and next moves on.)
func (it *patchIter) seekGE(probe []uint64) bool {
	if !it.descend(func(p *page.Page, level int) int {
		if level == 0 {
			return p.SearchGE(probe)
		}
		return p.SearchGE(probe) - 1
	}) {
		return false
	}
	f := &it.stack[len(it.stack)-1]
	if f.i >= f.p.Len() {
		f.i--
		return it.next()
	}
	return it.load()
}

func (it *patchIter) next() bool {
	if it.e != nil || len(it.stack) == 0 {
		return false
	}
	leaf := &it.stack[len(it.stack)-1]
	leaf.i++
	if leaf.i < leaf.p.Len() {
		return it.load()
	}
	// Climb to the first ancestor with a next child, then down its left
	// edge.
	j := len(it.stack) - 2
	for ; j >= 0; j-- {
		it.stack[j].i++
		if it.stack[j].i < it.stack[j].p.Len() {
			break
		}
	}
	if j < 0 {
		it.stack[len(it.stack)-1].i = leaf.p.Len() // stay exhausted
		it.valid = false
		return false
	}
	for ; j < len(it.stack)-1; j++ {
		level := len(it.stack) - 2 - j // level of the child
		p, err := it.pt.child(it.ctx, it.stack[j].p, it.stack[j].i, level)
		if err != nil {
			return it.fail(err)
		}
		it.stack[j+1] = frame{p: p, i: 0}
	}
	return it.load()
}

func (it *patchIter) cur() []uint64 { return it.buf }

func (it *patchIter) err() error { return it.e }
