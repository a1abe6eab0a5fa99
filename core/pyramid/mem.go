package pyramid

import (
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"
)

// The DRAM patch is a skiplist with one writer at a time (insert holds mu)
// and lock-free readers.
//
// A node's key is immutable; its value is an entry behind an atomic
// pointer, replaced whole (never modified) when the run is clipped or a
// newer value arrives. Nodes are linked bottom-up and unlinked top-down
// with atomic pointer stores; an unlinked node's pointers are never changed
// again, so a reader standing on one still walks into the list.
//
// INVARIANT (range relations): the runs of linked nodes do not overlap,
// except transiently inside one insert. An insert orders its steps so that
// after every step, for every position covered before, the last node at or
// before it covers it (TestMemPatchSteps checks this after every step):
// remnants of old runs beyond the new run are linked first, then the new
// run (or the entry of a node at its start is replaced), then old runs it
// covers are unlinked, and last the old run it starts inside is clipped.
// A reader sees one consistent instant of that sequence for the node it
// returns: it loads the node's entry on arrival, before reading the node's
// next pointers, and checks afterwards that the entry did not change (an
// unlinked node's entry never changes). seekLE's comment has the case this
// check exists for; TestMemPatchConcurrentReaders exercises it.

const (
	maxHeight = 12 // 4^12 nodes before the top level fills
	slabU64   = 4096
	slabNodes = 256
)

type memNode struct {
	key  []uint64
	ent  atomic.Pointer[memEntry]
	next []atomic.Pointer[memNode]
	// Short keys and towers live in the node itself, so a search step
	// touches one node's memory, not three allocations.
	keyIn  [inlineKey]uint64
	nextIn [inlineNext]atomic.Pointer[memNode]
}

const (
	inlineKey  = 2
	inlineNext = 4
)

type memEntry struct {
	seq  uint64
	vals []uint64 // the value fields
}

// memPatch is a DRAM patch.
type memPatch struct {
	sh     *shape
	head   memNode
	height atomic.Int32

	// Statistics readers and the flusher look at.
	bytes  atomic.Int64 // approximate memory held
	tuples atomic.Int64 // tuples inserted (including ones later replaced)

	// Guarded by DB.mu: the sequence bookkeeping of persist.
	minSeq uint64 // smallest sequence number inserted; 0 if none
	hi     uint64 // when sealed: every batch ≤ hi is in this patch or older

	mu sync.Mutex // the writer
	// Guarded by mu.
	rnd      uint64
	slab     []uint64
	nodes    []memNode
	ents     []memEntry
	ptrs     []atomic.Pointer[memNode]
	prev     [maxHeight]*memNode
	scratch  []uint64
	pieces   []uint64
	inner    []*memNode
	innerKey []uint64
}

func newMemPatch(sh *shape) *memPatch {
	m := &memPatch{sh: sh, rnd: 0x9e3779b97f4a7c15}
	m.head.next = make([]atomic.Pointer[memNode], maxHeight)
	m.height.Store(1)
	return m
}

// empty reports whether nothing was inserted.
func (m *memPatch) empty() bool { return m.tuples.Load() == 0 }

// ---- allocation (writer only) ----

func (m *memPatch) allocU64Locked(n int) []uint64 {
	if len(m.slab) < n {
		m.slab = make([]uint64, max(slabU64, n))
	}
	s := m.slab[:n:n]
	m.slab = m.slab[n:]
	return s
}

func (m *memPatch) newNodeLocked(key []uint64, e *memEntry) *memNode {
	if len(m.nodes) == 0 {
		m.nodes = make([]memNode, slabNodes)
	}
	n := &m.nodes[0]
	m.nodes = m.nodes[1:]
	h := m.randomHeightLocked()
	if h <= inlineNext {
		n.next = n.nextIn[:h:h]
	} else {
		if len(m.ptrs) < h {
			m.ptrs = make([]atomic.Pointer[memNode], slabNodes*2)
		}
		n.next = m.ptrs[:h:h]
		m.ptrs = m.ptrs[h:]
	}
	if len(key) <= inlineKey {
		n.key = n.keyIn[:len(key):len(key)]
	} else {
		n.key = m.allocU64Locked(len(key))
	}
	copy(n.key, key)
	n.ent.Store(e)
	size := int64(unsafe.Sizeof(memNode{}))
	if h > inlineNext {
		size += int64(8 * h)
	}
	if len(key) > inlineKey {
		size += int64(8 * len(key))
	}
	m.bytes.Add(size)
	return n
}

func (m *memPatch) newEntryLocked(seq uint64, vals []uint64) *memEntry {
	if len(m.ents) == 0 {
		m.ents = make([]memEntry, slabNodes)
	}
	e := &m.ents[0]
	m.ents = m.ents[1:]
	e.seq, e.vals = seq, m.allocU64Locked(len(vals))
	copy(e.vals, vals)
	m.bytes.Add(int64(32 + 8*len(vals)))
	return e
}

func (m *memPatch) randomHeightLocked() int {
	// xorshift64; a level per two zero bits: fanout 4.
	m.rnd ^= m.rnd << 13
	m.rnd ^= m.rnd >> 7
	m.rnd ^= m.rnd << 17
	h := 1
	for r := m.rnd; h < maxHeight && r&3 == 0; r >>= 2 {
		h++
	}
	return h
}

// ---- search ----

func (m *memPatch) cmp(key, probe []uint64) int {
	key = key[:len(probe)]
	for i, p := range probe {
		if k := key[i]; k != p {
			if k < p {
				return -1
			}
			return 1
		}
	}
	return 0
}

// findPrevLocked fills m.prev with the last node before probe at every
// level and returns the first node ≥ probe (nil at the end). Writer only.
func (m *memPatch) findPrevLocked(probe []uint64) *memNode {
	x := &m.head
	h := int(m.height.Load())
	for l := maxHeight - 1; l >= h; l-- {
		m.prev[l] = x
	}
	for l := h - 1; l >= 0; l-- {
		for {
			nx := x.next[l].Load()
			if nx == nil || m.cmp(nx.key, probe) >= 0 {
				break
			}
			x = nx
		}
		m.prev[l] = x
	}
	return m.prev[0].next[0].Load()
}

// seekLE returns the last node with key ≤ probe and its entry; nil if
// there is none. Lock-free.
//
// The entry is loaded when the search arrives on the node, before any of
// its next pointers are read, and checked again after the last one: if it
// changed in between, the search starts over. A stable entry was the
// node's entry all the while the links were read, so what is returned is a
// state the list really was in at some instant (see the type comment): an
// entry replaced by a longer run, read before the replacement, together
// with the links after the insert unlinked what the longer run covers,
// would otherwise cover neither the old nor the new extent.
func (m *memPatch) seekLE(probe []uint64) (*memNode, *memEntry) {
	for {
		x := &m.head
		var xe *memEntry
		for l := int(m.height.Load()) - 1; l >= 0; l-- {
			for {
				nx := x.next[l].Load()
				if nx == nil || m.cmp(nx.key, probe) > 0 {
					break
				}
				x, xe = nx, nx.ent.Load()
			}
		}
		if x == &m.head {
			return nil, nil
		}
		if x.ent.Load() == xe {
			return x, xe
		}
	}
}

// seekGE returns the first node with key ≥ probe and its entry; nil at the
// end. Lock-free.
func (m *memPatch) seekGE(probe []uint64) (*memNode, *memEntry) {
	x := &m.head
	for l := int(m.height.Load()) - 1; l >= 0; l-- {
		for {
			nx := x.next[l].Load()
			if nx == nil || m.cmp(nx.key, probe) >= 0 {
				break
			}
			x = nx
		}
	}
	nx := x.next[0].Load()
	if nx == nil {
		return nil, nil
	}
	return nx, nx.ent.Load()
}

// matches reports whether node n (entry e) answers a lookup of key: the
// same key (point), or a run covering key's position (range).
func (m *memPatch) matches(n *memNode, e *memEntry, key []uint64) bool {
	sh := m.sh
	if !sh.isRange {
		return slices.Equal(n.key, key)
	}
	return m.samePrefix(n, key) && key[sh.k-1]-n.key[sh.k-1] < e.vals[sh.lenF-sh.k]
}

// first returns the first node and its entry.
func (m *memPatch) first() (*memNode, *memEntry) {
	nx := m.head.next[0].Load()
	if nx == nil {
		return nil, nil
	}
	return nx, nx.ent.Load()
}

// ---- insert (writer) ----

// linkLocked inserts a new node for key before the node findPrevLocked
// found; m.prev must be fresh for key.
func (m *memPatch) linkLocked(key []uint64, e *memEntry) *memNode {
	n := m.newNodeLocked(key, e)
	h := len(n.next)
	if cur := int(m.height.Load()); h > cur {
		for l := cur; l < h; l++ {
			m.prev[l] = &m.head
		}
		m.height.Store(int32(h))
	}
	for l := 0; l < h; l++ {
		n.next[l].Store(m.prev[l].next[l].Load())
	}
	for l := 0; l < h; l++ { // bottom-up: readers see it at level 0 first
		m.prev[l].next[l].Store(n)
		memStep(m, "link")
	}
	m.tuples.Add(1)
	return n
}

// unlinkLocked removes node n from the list, top-down.
func (m *memPatch) unlinkLocked(n *memNode) {
	m.findPrevLocked(n.key)
	for l := len(n.next) - 1; l >= 0; l-- {
		if m.prev[l].next[l].Load() == n {
			m.prev[l].next[l].Store(n.next[l].Load())
			memStep(m, "unlink")
		}
	}
}

// insert adds tuple t with sequence number seq. Within a patch the higher
// sequence number wins; on equal numbers the later insert wins, which
// makes inserting a whole batch again harmless. Safe to call concurrently
// with readers; inserts serialise on mu.
func (m *memPatch) insert(t []uint64, seq uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sh.isRange {
		m.insertRangeLocked(t, seq)
		return
	}
	k := m.sh.k
	n := m.findPrevLocked(t[:k])
	if n != nil && slices.Equal(n.key, t[:k]) {
		if n.ent.Load().seq <= seq {
			n.ent.Store(m.newEntryLocked(seq, t[k:]))
			m.tuples.Add(1)
		}
		return
	}
	m.linkLocked(t[:k], m.newEntryLocked(seq, t[k:]))
}

// nodeStart and nodeEnd of a range node with entry e.
func (m *memPatch) nodeStart(n *memNode) uint64 { return n.key[m.sh.k-1] }
func (m *memPatch) nodeEnd(n *memNode, e *memEntry) uint64 {
	return n.key[m.sh.k-1] + e.vals[m.sh.lenF-m.sh.k]
}
func (m *memPatch) samePrefix(n *memNode, t []uint64) bool {
	return slices.Equal(n.key[:m.sh.k-1], t[:m.sh.k-1])
}

// insertRangeLocked overlays run t: the parts of it no newer run covers
// replace whatever was there.
func (m *memPatch) insertRangeLocked(t []uint64, seq uint64) {
	sh := m.sh
	a, b := sh.start(t), sh.end(t)
	// Fast path, the common case of a write to sectors not in this patch:
	// nothing overlaps, link right where the search ends.
	first := m.findPrevLocked(t[:sh.k])
	if p := m.prev[0]; p == &m.head || !m.samePrefix(p, t) || m.nodeEnd(p, p.ent.Load()) <= a {
		if first == nil || !m.samePrefix(first, t) || m.nodeStart(first) >= b {
			m.linkLocked(t[:sh.k], m.newEntryLocked(seq, t[sh.k:]))
			return
		}
	}
	// The pieces of [a, b) that no newer run covers, as pairs.
	pieces := m.pieces[:0]
	cur := a
	n, e := m.seekLE(t[:sh.k])
	if n == nil || !m.samePrefix(n, t) || m.nodeEnd(n, e) <= a {
		n, e = m.seekGE(t[:sh.k])
	}
	for ; n != nil && m.samePrefix(n, t) && m.nodeStart(n) < b; n = n.next[0].Load() {
		e = n.ent.Load()
		if e.seq > seq {
			if s := m.nodeStart(n); s > cur {
				pieces = append(pieces, cur, s)
			}
			cur = max(cur, m.nodeEnd(n, e))
		}
	}
	if cur < b {
		pieces = append(pieces, cur, b)
	}
	m.pieces = pieces
	for i := 0; i < len(pieces); i += 2 {
		m.scratch = sh.clip(m.scratch, t, pieces[i], pieces[i+1])
		m.overlayLocked(m.scratch, seq)
	}
}

// overlayLocked writes run t over older runs. REQUIRES: no run it overlaps
// is newer than seq.
func (m *memPatch) overlayLocked(t []uint64, seq uint64) {
	sh := m.sh
	k := sh.k
	a, b := sh.start(t), sh.end(t)
	first := m.findPrevLocked(t[:k])
	var l *memNode // the run that starts before a and reaches into it
	var le *memEntry
	if p := m.prev[0]; p != &m.head && m.samePrefix(p, t) {
		if pe := p.ent.Load(); m.nodeEnd(p, pe) > a {
			l, le = p, pe
		}
	}
	// Runs starting inside [a, b).
	inner := m.inner[:0]
	for n := first; n != nil && m.samePrefix(n, t) && m.nodeStart(n) < b; n = n.next[0].Load() {
		inner = append(inner, n)
	}
	m.inner = inner
	// 1. Remnants beyond b, first: they only add positions ≥ b, with the
	// values those positions already had.
	if l != nil && m.nodeEnd(l, le) > b {
		m.linkRemnantLocked(l, le, b)
	}
	if len(inner) > 0 {
		last := inner[len(inner)-1]
		if le := last.ent.Load(); m.nodeEnd(last, le) > b {
			m.linkRemnantLocked(last, le, b)
		}
	}
	// 2. The new run.
	ent := m.newEntryLocked(seq, t[k:])
	if len(inner) > 0 && m.nodeStart(inner[0]) == a {
		inner[0].ent.Store(ent)
		memStep(m, "replace")
		m.tuples.Add(1)
		inner = inner[1:]
	} else {
		m.findPrevLocked(t[:k])
		m.linkLocked(t[:k], ent)
	}
	// 3. Runs the new one covers.
	for _, n := range inner {
		m.unlinkLocked(n)
	}
	clear(m.inner)
	// 4. Clip the run the new one starts inside.
	if l != nil {
		ce := m.newEntryLocked(le.seq, le.vals)
		ce.vals[sh.lenF-k] = a - m.nodeStart(l)
		l.ent.Store(ce)
		memStep(m, "clip")
	}
}

// linkRemnantLocked links the part of run n (entry e) from position p on.
func (m *memPatch) linkRemnantLocked(n *memNode, e *memEntry, p uint64) {
	sh := m.sh
	k := sh.k
	full := append(append(m.innerKey[:0], n.key...), e.vals...)
	m.innerKey = sh.clip(full, full, p, m.nodeEnd(n, e))
	m.findPrevLocked(m.innerKey[:k])
	m.linkLocked(m.innerKey[:k], m.newEntryLocked(e.seq, m.innerKey[k:]))
}

// memStepHook, when set (tests only), is called after every step an insert
// publishes to readers.
var memStepHook func(m *memPatch, step string)

func memStep(m *memPatch, step string) {
	if memStepHook != nil {
		memStepHook(m, step)
	}
}

// ---- iteration ----

// memIter walks a DRAM patch in key order. On a patch still taking inserts
// it sees each tuple as it was before or after a concurrent insert; runs
// that overlap transiently are clipped, the earlier one kept.
type memIter struct {
	m       *memPatch
	n       *memNode
	e       *memEntry
	buf     []uint64
	prevBuf []uint64
	havePrv bool
}

func (it *memIter) set(n *memNode, e *memEntry) bool {
	it.n, it.e = n, e
	it.havePrv = false
	return it.fill()
}

// fill builds the current tuple, clipping overlaps with the previous one.
func (it *memIter) fill() bool {
	sh := it.m.sh
	for it.n != nil {
		it.buf = append(append(it.buf[:0], it.n.key...), it.e.vals...)
		if sh.isRange && it.havePrv && sh.samePrefix(it.prevBuf, it.buf) {
			if pe := sh.end(it.prevBuf); sh.start(it.buf) < pe {
				if sh.end(it.buf) <= pe {
					it.advance()
					continue
				}
				it.buf = sh.clip(it.buf, it.buf, pe, sh.end(it.buf))
			}
		}
		return true
	}
	return false
}

func (it *memIter) advance() {
	nx := it.n.next[0].Load()
	if e := it.n.ent.Load(); e != it.e {
		// The current run changed while its link was read (see seekLE):
		// read it again with the links that go with its new extent; fill
		// clips away what was already returned.
		it.e = e
		return
	}
	it.n, it.e = nx, nil
	if nx != nil {
		it.e = nx.ent.Load()
	}
}

func (it *memIter) first() bool { return it.set(it.m.first()) }

func (it *memIter) seekGE(probe []uint64) bool { return it.set(it.m.seekGE(probe)) }

func (it *memIter) seekLE(probe []uint64) bool { return it.set(it.m.seekLE(probe)) }

func (it *memIter) next() bool {
	if it.n == nil {
		return false
	}
	it.prevBuf = append(it.prevBuf[:0], it.buf...)
	it.havePrv = true
	it.advance()
	return it.fill()
}

func (it *memIter) cur() []uint64 { return it.buf }

func (it *memIter) err() error { return nil }
