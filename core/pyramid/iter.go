package pyramid

import (
	"slices"
)

// internalIter walks one source (a DRAM patch or a persisted patch) in key
// order. cur's slice is valid until the next call.
type internalIter interface {
	first() bool
	seekGE(probe []uint64) bool
	seekLE(probe []uint64) bool
	next() bool
	cur() []uint64
	err() error
}

// mergeIter resolves several sources, newest first, into the relation's
// contents: for a point relation the newest tuple of each key, for a range
// relation the newest run at each position (older runs clipped around
// newer ones). Nothing is filtered here; elision is the caller's.
type mergeIter struct {
	sh    *shape
	srcs  []internalIter
	heads [][]uint64 // current head per source; nil when exhausted
	bufs  [][]uint64 // backing buffers of heads
	out   []uint64
	e     error
}

func newMergeIter(sh *shape, srcs []internalIter) *mergeIter {
	return &mergeIter{sh: sh, srcs: srcs, heads: make([][]uint64, len(srcs)), bufs: make([][]uint64, len(srcs))}
}

// take copies source i's current tuple into its head, or marks it done.
func (m *mergeIter) take(i int, ok bool) {
	if !ok {
		m.heads[i] = nil
		if err := m.srcs[i].err(); err != nil && m.e == nil {
			m.e = err
		}
		return
	}
	m.bufs[i] = append(m.bufs[i][:0], m.srcs[i].cur()...)
	m.heads[i] = m.bufs[i]
}

// seek positions every source at probe (nil: the start). For a range
// relation a run covering probe's position is clipped to start there.
func (m *mergeIter) seek(probe []uint64) {
	sh := m.sh
	for i, s := range m.srcs {
		switch {
		case probe == nil:
			m.take(i, s.first())
		case !sh.isRange || len(probe) < sh.k:
			m.take(i, s.seekGE(probe))
		default:
			if s.seekLE(probe) {
				if t := s.cur(); sh.covers(t, probe) {
					m.bufs[i] = sh.clip(m.bufs[i], t, probe[sh.k-1], sh.end(t))
					m.heads[i] = m.bufs[i]
					continue
				}
				m.take(i, s.next())
				continue
			}
			if err := s.err(); err != nil {
				m.take(i, false)
				continue
			}
			m.take(i, s.seekGE(probe))
		}
	}
}

// next produces the next resolved tuple into m.out.
func (m *mergeIter) next() bool {
	if m.e != nil {
		return false
	}
	sh := m.sh
	w := -1
	for i, h := range m.heads {
		if h != nil && (w < 0 || sh.compareKeys(h, m.heads[w]) < 0) {
			w = i // strict: the newest of equal keys wins
		}
	}
	if w < 0 {
		return false
	}
	if !sh.isRange {
		m.out = append(m.out[:0], m.heads[w]...)
		for i, h := range m.heads {
			if h != nil && sh.compareKeys(h, m.out) == 0 {
				m.take(i, m.srcs[i].next())
			}
		}
		return m.e == nil
	}
	p := sh.start(m.heads[w])
	q := sh.end(m.heads[w])
	for i := 0; i < w; i++ {
		if h := m.heads[i]; h != nil && sh.samePrefix(h, m.heads[w]) {
			q = min(q, sh.start(h)) // a newer run takes over there
		}
	}
	m.out = sh.clip(m.out, m.heads[w], p, q)
	for i := range m.heads {
		for m.heads[i] != nil && sh.samePrefix(m.heads[i], m.out) && sh.start(m.heads[i]) < q {
			h := m.heads[i]
			if sh.end(h) <= q {
				m.take(i, m.srcs[i].next())
				continue
			}
			m.bufs[i] = sh.clip(m.bufs[i], h, q, sh.end(h))
			m.heads[i] = m.bufs[i]
		}
	}
	return m.e == nil
}

// coalescer joins adjacent runs with continuing values before they are
// written, so split runs rejoin and elide ranges collapse.
type coalescer struct {
	sh      *shape
	pending []uint64
	have    bool
	emit    func(t []uint64) error
}

func (c *coalescer) add(t []uint64) error {
	if c.have && c.sh.isRange && c.sh.continues(c.pending, t) {
		c.pending[c.sh.lenF] += t[c.sh.lenF]
		return nil
	}
	if c.have {
		if err := c.emit(c.pending); err != nil {
			return err
		}
	}
	c.pending = append(c.pending[:0], t...)
	c.have = true
	return nil
}

func (c *coalescer) flush() error {
	if !c.have {
		return nil
	}
	c.have = false
	return c.emit(c.pending)
}

// IterOptions bound an iterator.
type IterOptions struct {
	// Lower is the first key to return (a prefix of the key fields, or all
	// of them). For a range relation with all key fields given, a run
	// covering Lower's position is returned clipped to start there. Nil
	// starts at the beginning.
	Lower []uint64
	// Upper ends the iteration before the first tuple whose first
	// len(Upper) key fields are ≥ Upper. For a range relation with all key
	// fields given, the run reaching past Upper's position is clipped to
	// end there. Nil: no end.
	Upper []uint64
	// Relaxed skips the elide filter: the iterator may return tuples that
	// have been deleted (paper §3.2's relaxed readers).
	Relaxed bool
}

// Iter walks a relation's contents in key order: for each key (point) or
// position (range) the newest tuple, elided tuples dropped. It streams,
// holding one page per level of each persisted patch. Tuples inserted
// while it runs may or may not be seen. Close it when done.
type Iter struct {
	r    *Relation
	v    *version
	m    *mergeIter
	opts IterOptions
	t    []uint64
	done bool
}

// Next advances to the next tuple and reports whether there is one.
func (it *Iter) Next() bool {
	if it.done {
		return false
	}
	sh := &it.r.sh
	for it.m.next() {
		t := it.m.out
		if u := it.opts.Upper; u != nil {
			n := min(len(u), sh.k)
			if c := slices.Compare(t[:n], u[:n]); c >= 0 {
				break
			}
			if sh.isRange && len(u) >= sh.k && sh.samePrefix(t, u) && sh.end(t) > u[sh.k-1] {
				t = sh.clip(it.t, t, sh.start(t), u[sh.k-1])
			}
		}
		if !it.opts.Relaxed && it.r.elided(t) {
			continue
		}
		it.t = append(it.t[:0], t...)
		return true
	}
	it.done = true
	return false
}

// Tuple returns the current tuple, valid until the next call to Next.
func (it *Iter) Tuple() []uint64 { return it.t }

// Err returns the error that ended the iteration, if any.
func (it *Iter) Err() error { return it.m.e }

// Close releases the iterator.
func (it *Iter) Close() {
	if it.v != nil {
		it.r.unpin(it.v)
		it.v = nil
	}
	it.done = true
}
