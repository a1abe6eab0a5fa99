package pyramid

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
)

// version is an immutable view of a relation: its DRAM patches and its
// persisted patches, newest first. Readers load the current version once
// and read it without locks; flush, merge and flatten publish new ones.
type version struct {
	mems    []*memPatch // mems[0] is the active patch, the rest are sealed
	patches []*patch
}

// Relation is one relation of a DB.
type Relation struct {
	db     *DB
	schema Schema
	sh     shape
	root   string
	rules  []rule

	cur atomic.Pointer[version]
	vmu sync.Mutex // serialises publishing versions

	// maint serialises flush and flatten (the writers of the manifest).
	maint sync.Mutex
	// Guarded by maint.
	through uint64 // every batch ≤ through is in the persisted patches

	mergeMu sync.Mutex // one merge at a time

	// Elide tables only: the deleted ranges.
	elide   atomic.Pointer[elideSet]
	elideMu sync.Mutex

	pinMu  sync.Mutex
	pinned map[*version]int
}

func newRelation(db *DB, s Schema) *Relation {
	r := &Relation{db: db, schema: s, sh: newShape(&s), root: RootPrefix + s.Name, pinned: map[*version]int{}}
	r.elide.Store(emptyElideSet)
	r.cur.Store(&version{mems: []*memPatch{newMemPatch(&r.sh)}})
	return r
}

// Schema returns the relation's schema.
func (r *Relation) Schema() Schema { return r.schema }

// Name returns the relation's name.
func (r *Relation) Name() string { return r.schema.Name }

// load reads the manifest.
func (r *Relation) load(ctx context.Context) error {
	b, ok, err := r.db.opts.Roots.GetRoot(ctx, r.root)
	if err != nil {
		return fmt.Errorf("relation %s: root: %w", r.schema.Name, err)
	}
	if !ok {
		return nil
	}
	m, err := decodeManifest(b)
	if err != nil {
		return fmt.Errorf("relation %s: %w", r.schema.Name, err)
	}
	if m.relID != r.schema.ID || m.k != r.sh.k || m.f != r.sh.f {
		return fmt.Errorf("relation %s: manifest of relation %d with %d/%d fields, schema says %d with %d/%d",
			r.schema.Name, m.relID, m.k, m.f, r.schema.ID, r.sh.k, r.sh.f)
	}
	v := &version{mems: r.cur.Load().mems}
	for _, pi := range m.patches {
		v.patches = append(v.patches, &patch{info: pi, rel: r, origin: "manifest"})
	}
	r.cur.Store(v)
	r.through = m.through
	return nil
}

// loadElideSet builds an elide table's set from its persisted patches. A
// range read from a patch is credited with the patch's highest sequence
// number.
func (r *Relation) loadElideSet(ctx context.Context) error {
	set := emptyElideSet
	for _, pt := range r.cur.Load().patches {
		it := &patchIter{ctx: ctx, pt: pt}
		for ok := it.first(); ok; ok = it.next() {
			t := it.cur()
			set = set.add(t[0], t[0]+t[1]-1, pt.info.SeqHi)
		}
		if err := it.err(); err != nil {
			return fmt.Errorf("relation %s: load elide ranges: %w", r.schema.Name, err)
		}
	}
	r.elide.Store(set)
	return nil
}

// apply inserts a tuple into DRAM patch m.
func (r *Relation) apply(m *memPatch, t []uint64, seq uint64) {
	m.insert(t, seq)
	if r.schema.ElideTable {
		r.elideMu.Lock()
		r.elide.Store(r.elide.Load().add(t[0], t[0]+t[1]-1, seq))
		r.elideMu.Unlock()
	}
}

// elided reports whether an elide rule deletes tuple t.
func (r *Relation) elided(t []uint64) bool {
	for _, ru := range r.rules {
		if ru.table.elide.Load().contains(t[ru.field]) {
			return true
		}
	}
	return false
}

// elideSeq returns the highest sequence number of an elide record in the
// relation's elide tables.
func (r *Relation) elideSeq() uint64 {
	var s uint64
	for _, ru := range r.rules {
		s = max(s, ru.table.elide.Load().maxSeq)
	}
	return s
}

// elideDirty reports whether elide records newer than the patch's filter
// may delete some of its tuples: rewriting it would return space.
func (r *Relation) elideDirty(pi *PatchInfo) bool {
	for _, ru := range r.rules {
		set := ru.table.elide.Load()
		if set.maxSeq <= pi.ElidedThrough {
			continue
		}
		if ru.field == 0 {
			if set.maxSeqOverlapping(pi.MinKey[0], pi.MaxKey[0]) > pi.ElidedThrough {
				return true
			}
			continue
		}
		return true
	}
	return false
}

func (r *Relation) dramBytes() int64 {
	var n int64
	for _, m := range r.cur.Load().mems {
		n += m.bytes.Load()
	}
	return n
}

func (r *Relation) needsFlush() bool {
	v := r.cur.Load()
	return len(v.mems) > 1 || v.mems[0].bytes.Load() >= r.db.opts.FlushBytes
}

// Patches returns the infos of the persisted patches, newest first.
func (r *Relation) Patches() []PatchInfo {
	v := r.cur.Load()
	out := make([]PatchInfo, len(v.patches))
	for i, p := range v.patches {
		out[i] = p.info
	}
	return out
}

// publish installs a new version built by fn from the current one.
func (r *Relation) publish(fn func(v *version) *version) {
	r.vmu.Lock()
	r.cur.Store(fn(r.cur.Load()))
	r.vmu.Unlock()
}

func (r *Relation) manifest(patches []*patch, through uint64) *manifest {
	m := &manifest{relID: r.schema.ID, k: r.sh.k, f: r.sh.f, through: through}
	for _, p := range patches {
		m.patches = append(m.patches, p.info)
	}
	return m
}

// ---- flush ----

// Flush seals the active DRAM patch (if it holds anything) and writes every
// sealed DRAM patch as a persisted patch, oldest first. Each flush writes
// the pages, then the manifest naming them, then drops the DRAM patch. A
// crash anywhere leaves either the old manifest (the DRAM patch comes back
// from the commit log) or the new one (the log's batches it covers are
// skipped): redoing the flush is harmless.
func (r *Relation) Flush(ctx context.Context) error {
	r.maint.Lock()
	defer r.maint.Unlock()
	r.db.mu.Lock()
	if r.cur.Load().mems[0].minSeq != 0 {
		r.db.sealLocked(r)
	}
	r.db.mu.Unlock()
	for {
		v := r.cur.Load()
		if len(v.mems) < 2 {
			return nil
		}
		m := v.mems[len(v.mems)-1]
		if err := r.flushMemLocked(ctx, m); err != nil {
			return err
		}
	}
}

// flushMemLocked writes sealed DRAM patch m. REQUIRES: r.maint held, m the
// oldest sealed patch.
func (r *Relation) flushMemLocked(ctx context.Context, m *memPatch) error {
	db := r.db
	lo, hi := r.through+1, m.hi
	if hi < lo {
		return fmt.Errorf("relation %s: sealed patch through %d, already through %d", r.schema.Name, hi, r.through)
	}
	db.crash(CrashFlushSealed)
	elideThrough := r.elideSeq()
	it := &memIter{m: m}
	var b *patchBuilder
	var pw PageWriter
	var dropped uint64
	co := &coalescer{sh: &r.sh, emit: func(t []uint64) error {
		if b == nil {
			var err error
			if pw, err = db.opts.Pages.NewWriter(ctx, PatchTag{Relation: r.schema.Name, SeqLo: lo, SeqHi: hi}); err != nil {
				return fmt.Errorf("relation %s: flush: %w", r.schema.Name, err)
			}
			b = newPatchBuilder(ctx, r, pw, lo, hi)
			b.onAppend = func() { db.crash(CrashFlushPageAppended) }
		}
		return b.add(t)
	}}
	for ok := it.first(); ok; ok = it.next() {
		if r.elided(it.cur()) {
			dropped++
			continue
		}
		if err := co.add(it.cur()); err != nil {
			if pw != nil {
				pw.Abort()
			}
			return err
		}
	}
	if err := co.flush(); err != nil {
		if pw != nil {
			pw.Abort()
		}
		return err
	}
	db.stats.ElidedDropped.Add(dropped)
	if b == nil {
		// Nothing left to write (empty, or all elided). The manifest is
		// not touched: replaying these batches again inserts nothing
		// visible.
		r.through = hi
		r.publish(func(v *version) *version {
			return &version{mems: without(v.mems, m), patches: v.patches}
		})
		db.signalFlushed()
		return nil
	}
	info, err := b.finish()
	if err != nil {
		pw.Abort()
		return err
	}
	info.ElidedThrough = elideThrough
	db.crash(CrashFlushPagesDurable)
	pt := &patch{info: info, rel: r, origin: "flush"}
	patches := append([]*patch{pt}, r.cur.Load().patches...)
	if err := db.opts.Roots.SetRoot(ctx, r.root, r.manifest(patches, hi).encode()); err != nil {
		return fmt.Errorf("relation %s: flush: set root: %w", r.schema.Name, err)
	}
	db.crash(CrashFlushRootSet)
	r.through = hi
	r.publish(func(v *version) *version {
		return &version{mems: without(v.mems, m), patches: append([]*patch{pt}, v.patches...)}
	})
	db.stats.Flushes.Add(1)
	db.stats.FlushTuples.Add(info.Tuples)
	db.stats.FlushBytes.Add(info.Bytes)
	db.signalFlushed()
	db.kickMerger()
	return nil
}

func without(ms []*memPatch, m *memPatch) []*memPatch {
	out := make([]*memPatch, 0, len(ms))
	for _, x := range ms {
		if x != m {
			out = append(out, x)
		}
	}
	return out
}

// ---- merge and flatten ----

// Merged is the result of Merge: a durable patch, not yet in the manifest.
type Merged struct {
	// Inputs are the merged patches, newest first.
	Inputs []PatchInfo
	// Output is the merged patch; meaningless when Empty.
	Output PatchInfo
	// Empty: every input tuple was elided; flattening removes the inputs.
	Empty bool
}

// Merge combines the persisted patches newest..oldest (indexes into
// Patches(), newest first, so newest ≤ oldest) into one patch covering
// their sequence ranges: per key (per position, for a range relation) the
// newest tuple, elided tuples dropped, adjacent runs coalesced. The result
// is durable but not yet used: Flatten swaps it in. Merge does not block
// readers, persists or flushes; it is idempotent (merging the same patches
// again writes an equivalent patch). Indexes past the end of the list (it
// shrank under a concurrent merge) give ErrStale.
func (r *Relation) Merge(ctx context.Context, newest, oldest int) (*Merged, error) {
	r.mergeMu.Lock()
	defer r.mergeMu.Unlock()
	db := r.db
	v := r.cur.Load()
	if newest < 0 || newest > oldest {
		return nil, fmt.Errorf("relation %s: merge %d..%d", r.schema.Name, newest, oldest)
	}
	if oldest >= len(v.patches) { // the list shrank under a concurrent merge
		return nil, fmt.Errorf("relation %s: merge %d..%d of %d patches: %w", r.schema.Name, newest, oldest, len(v.patches), ErrStale)
	}
	inputs := v.patches[newest : oldest+1]
	lo, hi := inputs[len(inputs)-1].info.SeqLo, inputs[0].info.SeqHi
	res := &Merged{}
	srcs := make([]internalIter, len(inputs))
	for i, pt := range inputs {
		res.Inputs = append(res.Inputs, pt.info)
		srcs[i] = &patchIter{ctx: ctx, pt: pt}
	}
	elideThrough := r.elideSeq()
	mi := newMergeIter(&r.sh, srcs)
	mi.seek(nil)
	pw, err := db.opts.Pages.NewWriter(ctx, PatchTag{Relation: r.schema.Name, SeqLo: lo, SeqHi: hi})
	if err != nil {
		return nil, fmt.Errorf("relation %s: merge: %w", r.schema.Name, err)
	}
	b := newPatchBuilder(ctx, r, pw, lo, hi)
	b.onAppend = func() { db.crash(CrashMergePageAppended) }
	co := &coalescer{sh: &r.sh, emit: b.add}
	var dropped uint64
	for mi.next() {
		if r.elided(mi.out) {
			dropped++
			continue
		}
		if err := co.add(mi.out); err != nil {
			pw.Abort()
			return nil, err
		}
	}
	if mi.e == nil {
		mi.e = co.flush()
	}
	if mi.e != nil {
		pw.Abort()
		return nil, fmt.Errorf("relation %s: merge: %w", r.schema.Name, mi.e)
	}
	db.stats.ElidedDropped.Add(dropped)
	if b.info.Tuples == 0 {
		pw.Abort()
		res.Empty = true
		return res, nil
	}
	if res.Output, err = b.finish(); err != nil {
		pw.Abort()
		return nil, err
	}
	res.Output.ElidedThrough = elideThrough
	db.crash(CrashMergePagesDurable)
	db.stats.Merges.Add(1)
	db.stats.MergeTuples.Add(res.Output.Tuples)
	db.stats.MergeBytes.Add(res.Output.Bytes)
	return res, nil
}

// Flatten replaces the merged patches by the merge's output: in the
// manifest (one atomic root update), then in memory. Readers holding the
// old version keep reading the old patches. Flattening a merge that is
// already in is a no-op; one whose inputs are gone returns ErrStale.
func (r *Relation) Flatten(ctx context.Context, m *Merged) error {
	r.maint.Lock()
	defer r.maint.Unlock()
	db := r.db
	v := r.cur.Load()
	at := -1
	for i := 0; i+len(m.Inputs) <= len(v.patches); i++ {
		if v.patches[i].info.same(&m.Inputs[0]) {
			at = i
			break
		}
	}
	if at >= 0 {
		for j := range m.Inputs {
			if !v.patches[at+j].info.same(&m.Inputs[j]) {
				at = -1
				break
			}
		}
	}
	if at < 0 {
		if !m.Empty {
			for _, p := range v.patches {
				if p.info.same(&m.Output) {
					return nil // already flattened
				}
			}
		}
		db.stats.StaleMerges.Add(1)
		return fmt.Errorf("relation %s: %w", r.schema.Name, ErrStale)
	}
	patches := append([]*patch(nil), v.patches[:at]...)
	if !m.Empty {
		patches = append(patches, &patch{info: m.Output, rel: r, origin: "merge"})
	}
	patches = append(patches, v.patches[at+len(m.Inputs):]...)
	db.crash(CrashFlattenBeforeRoot)
	if err := db.opts.Roots.SetRoot(ctx, r.root, r.manifest(patches, r.through).encode()); err != nil {
		return fmt.Errorf("relation %s: flatten: set root: %w", r.schema.Name, err)
	}
	db.crash(CrashFlattenRootSet)
	r.publish(func(cur *version) *version {
		return &version{mems: cur.mems, patches: patches}
	})
	db.stats.Flattens.Add(1)
	return nil
}

// Compact runs one step of the merge policy: merges (PlanMerge), else
// rewrites a patch that elide records made dirty. It reports whether it
// did anything.
func (r *Relation) Compact(ctx context.Context) (bool, error) {
	infos := r.Patches()
	newest, oldest, ok := PlanMerge(infos, r.db.opts.MergeFanout, r.db.opts.MaxPatches)
	if !ok {
		var err error
		if newest, ok, err = r.planElideRewrite(ctx); err != nil {
			return false, err
		}
		oldest = newest
	}
	if !ok {
		return false, nil
	}
	m, err := r.Merge(ctx, newest, oldest)
	if err != nil {
		return false, err
	}
	if err := r.Flatten(ctx, m); err != nil {
		return false, err
	}
	return true, nil
}

// ElideRewriteFraction is the share of a patch's leaves that elide records
// must empty before Compact rewrites the patch on their account alone (a
// single-page patch is rewritten whenever it may hold elided tuples).
// Otherwise elided tuples go at the patch's next merge.
const ElideRewriteFraction = 1.0 / 8

// planElideRewrite picks a patch worth rewriting for elision: dirty (elide
// records newer than its last filtering meet its key range) and with at
// least ElideRewriteFraction of its leaves wholly elided, as estimated
// from the index (a leaf spans its first key to the next leaf's first
// key). A patch found not worth it is not looked at again until the elide
// tables change.
func (r *Relation) planElideRewrite(ctx context.Context) (int, bool, error) {
	seq := r.elideSeq()
	for i, pt := range r.cur.Load().patches {
		if !r.elideDirty(&pt.info) || pt.elideChecked.Load() == seq {
			continue
		}
		gain, err := r.elideGain(ctx, pt)
		if err != nil {
			return 0, false, err
		}
		if pt.info.Levels == 0 || gain >= ElideRewriteFraction {
			return i, true, nil
		}
		pt.elideChecked.Store(seq)
	}
	return 0, false, nil
}

// elideGain estimates the fraction of pt's leaves whose tuples are all
// elided by rules on the first key field. A rule on another field cannot
// be judged from the index: it counts as all (1).
func (r *Relation) elideGain(ctx context.Context, pt *patch) (float64, error) {
	var sets []*elideSet
	for _, ru := range r.rules {
		if ru.field != 0 {
			return 1, nil
		}
		sets = append(sets, ru.table.elide.Load())
	}
	if pt.info.Levels == 0 || len(sets) == 0 {
		return 0, nil
	}
	// The first key field of every leaf's first tuple, in order.
	var firsts []uint64
	var walk func(a Addr, level int) error
	walk = func(a Addr, level int) error {
		p, err := pt.getPage(ctx, a, level)
		if err != nil {
			return err
		}
		for i := 0; i < p.Len(); i++ {
			if level == 1 {
				firsts = append(firsts, p.Value(i, 0))
			} else if err := walk(childAddr(p, i, r.sh.k), level-1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(pt.info.Root, pt.info.Levels); err != nil {
		return 0, err
	}
	gone := 0
	for i, lo := range firsts {
		hi := pt.info.MaxKey[0]
		if i+1 < len(firsts) {
			hi = firsts[i+1]
		}
		for _, s := range sets {
			if s.covers(lo, hi) {
				gone++
				break
			}
		}
	}
	return float64(gone) / float64(len(firsts)), nil
}

// PlanMerge is the merge policy, a plain function of the patch list
// (newest first). It keeps patch sizes growing by at least fanout from
// newer to older: the newest patches are merged as soon as together they
// reach 1/fanout of the next older one, so the count stays logarithmic in
// the data and each tuple is rewritten about log_fanout(size) times. Above
// maxPatches it merges the adjacent pair with the smallest sum whatever
// the sizes. It returns the index range to merge.
func PlanMerge(patches []PatchInfo, fanout, maxPatches int) (newest, oldest int, ok bool) {
	if len(patches) < 2 {
		return 0, 0, false
	}
	size := func(i int) uint64 { return max(patches[i].Bytes, 1) }
	acc := size(0)
	j := 1
	for j < len(patches) && acc*uint64(fanout) >= size(j) {
		acc += size(j)
		j++
	}
	if j >= 2 {
		return 0, j - 1, true
	}
	if len(patches) > maxPatches {
		best := 0
		for i := 1; i+1 < len(patches); i++ {
			if size(i)+size(i+1) < size(best)+size(best+1) {
				best = i
			}
		}
		return best, best + 1, true
	}
	return 0, 0, false
}

// ---- reading ----

// ReadOptions adjust a read.
type ReadOptions struct {
	// Relaxed skips the elide filter (paper §3.2): the read may return
	// tuples that have been deleted. Cheaper; for callers that check
	// elsewhere or do not care.
	Relaxed bool
}

// retry runs a read against the current version, again (a few times) if
// it failed on a page that was reclaimed under a version no longer
// current.
func (r *Relation) retry(fn func(v *version) error) error {
	for attempt := 0; ; attempt++ {
		v := r.cur.Load()
		err := fn(v)
		if err == nil || !errors.Is(err, ErrCorrupt) || attempt >= 3 || r.cur.Load() == v {
			return err
		}
		r.db.stats.ReadRetries.Add(1)
	}
}

// Get looks up key: for a point relation, the tuple with exactly these key
// fields; for a range relation, the newest run covering the position in
// key's last field, returned whole as stored (newer runs may hide other
// positions of it: use Resolve to read a range). The tuple is appended to
// dst. Get allocates nothing once the pages it needs are cached.
func (r *Relation) Get(ctx context.Context, key []uint64, dst []uint64, ro ReadOptions) ([]uint64, bool, error) {
	if len(key) != r.sh.k {
		return dst, false, fmt.Errorf("relation %s: key of %d fields, want %d", r.schema.Name, len(key), r.sh.k)
	}
	for attempt := 0; ; attempt++ { // see retry; inline to allocate nothing
		v := r.cur.Load()
		out, found, err := r.getIn(ctx, v, key, dst)
		if err != nil && errors.Is(err, ErrCorrupt) && attempt < 3 && r.cur.Load() != v {
			r.db.stats.ReadRetries.Add(1)
			continue
		}
		if err != nil || !found || (!ro.Relaxed && r.elided(out[len(dst):])) {
			return dst, false, err
		}
		return out, true, nil
	}
}

func (r *Relation) getIn(ctx context.Context, v *version, key, dst []uint64) ([]uint64, bool, error) {
	for _, m := range v.mems {
		n, e := m.seekLE(key)
		if n == nil || !m.matches(n, e, key) {
			continue
		}
		return append(append(dst, n.key...), e.vals...), true, nil
	}
	sh := &r.sh
	for _, pt := range v.patches {
		if !pt.mayHold(key) {
			continue
		}
		p, i, err := pt.getLE(ctx, key)
		if err != nil {
			return dst, false, err
		}
		if p == nil {
			continue
		}
		// Match on the packed page before decoding the tuple.
		if p.Compare(i, key[:sh.k-1]) != 0 {
			continue
		}
		if sh.isRange {
			if pos := key[sh.k-1]; pos-p.Value(i, sh.k-1) >= p.Value(i, sh.lenF) {
				continue
			}
		} else if p.Value(i, sh.k-1) != key[sh.k-1] {
			continue
		}
		return p.Tuple(i, dst), true, nil
	}
	return dst, false, nil
}

// Resolve reads the positions [start, start+n) of a range relation under
// prefix (the key fields before the start): it calls fn, in position
// order, with one tuple per piece that some run maps, clipped to the piece
// (start, length and shift fields adjusted). Positions no run maps are
// skipped: the caller reads them elsewhere (the block map falls through to
// the medium table). t is valid only during the call.
func (r *Relation) Resolve(ctx context.Context, prefix []uint64, start, n uint64, ro ReadOptions, fn func(t []uint64) error) error {
	sh := &r.sh
	if !sh.isRange || len(prefix) != sh.k-1 {
		return fmt.Errorf("relation %s: Resolve needs a range relation and a %d-field prefix", r.schema.Name, sh.k-1)
	}
	if n == 0 {
		return nil
	}
	if start+n < start {
		return fmt.Errorf("relation %s: range %d+%d wraps", r.schema.Name, start, n)
	}
	var pieces [][]uint64
	err := r.retry(func(v *version) error {
		var err error
		pieces, err = r.resolveIn(ctx, v, prefix, start, start+n)
		return err
	})
	if err != nil {
		return err
	}
	for _, p := range pieces {
		if !ro.Relaxed && r.elided(p) {
			continue
		}
		if err := fn(p); err != nil {
			return err
		}
	}
	return nil
}

// resolveIn fills the holes of [a, b), newest source first.
func (r *Relation) resolveIn(ctx context.Context, v *version, prefix []uint64, a, b uint64) ([][]uint64, error) {
	sh := &r.sh
	holes := [][2]uint64{{a, b}}
	var pieces [][]uint64
	probe := append(slices.Clone(prefix), a)
	fill := func(it internalIter) error {
		var next [][2]uint64
		for _, h := range holes {
			probe[sh.k-1] = h[0]
			ok := it.seekLE(probe)
			if ok && !sh.covers(it.cur(), probe) {
				ok = it.next()
			} else if !ok {
				if err := it.err(); err != nil {
					return err
				}
				ok = it.seekGE(probe)
			}
			pos := h[0]
			for ; ok; ok = it.next() {
				t := it.cur()
				if !sh.samePrefix(t, probe) || sh.start(t) >= h[1] {
					break
				}
				s, e := max(sh.start(t), pos), min(sh.end(t), h[1])
				if s >= e {
					continue
				}
				if s > pos {
					next = append(next, [2]uint64{pos, s})
				}
				pieces = append(pieces, sh.clip(nil, t, s, e))
				pos = e
				if pos >= h[1] {
					break
				}
			}
			if err := it.err(); err != nil {
				return err
			}
			if pos < h[1] {
				next = append(next, [2]uint64{pos, h[1]})
			}
		}
		holes = next
		return nil
	}
	for _, m := range v.mems {
		if len(holes) == 0 {
			break
		}
		if err := fill(&memIter{m: m}); err != nil {
			return nil, err
		}
	}
	for _, pt := range v.patches {
		if len(holes) == 0 {
			break
		}
		lo := append(slices.Clone(prefix), holes[0][0])
		hi := append(slices.Clone(prefix), holes[len(holes)-1][1]-1)
		if slices.Compare(hi, pt.info.MinKey) < 0 || !pt.mayReach(lo) {
			continue
		}
		if err := fill(&patchIter{ctx: ctx, pt: pt}); err != nil {
			return nil, err
		}
	}
	sort.Slice(pieces, func(i, j int) bool { return sh.start(pieces[i]) < sh.start(pieces[j]) })
	return pieces, nil
}

// mayReach reports whether a range patch may hold a run ending after
// probe's position (or with a later prefix).
func (pt *patch) mayReach(probe []uint64) bool {
	sh := &pt.rel.sh
	c := slices.Compare(probe[:sh.k-1], pt.info.MaxKey[:sh.k-1])
	return c < 0 || (c == 0 && probe[sh.k-1] < pt.info.LastEnd)
}

// NewIter returns an iterator over the relation (see Iter). It pins the
// current version: the pages it reads stay live (LivePages) until Close.
func (r *Relation) NewIter(ctx context.Context, opts IterOptions) *Iter {
	v := r.pin()
	srcs := make([]internalIter, 0, len(v.mems)+len(v.patches))
	for _, m := range v.mems {
		srcs = append(srcs, &memIter{m: m})
	}
	for _, pt := range v.patches {
		srcs = append(srcs, &patchIter{ctx: ctx, pt: pt})
	}
	it := &Iter{r: r, v: v, m: newMergeIter(&r.sh, srcs), opts: opts}
	it.m.seek(opts.Lower)
	return it
}

func (r *Relation) pin() *version {
	r.pinMu.Lock()
	defer r.pinMu.Unlock()
	v := r.cur.Load()
	r.pinned[v]++
	return v
}

func (r *Relation) unpin(v *version) {
	r.pinMu.Lock()
	defer r.pinMu.Unlock()
	if r.pinned[v]--; r.pinned[v] <= 0 {
		delete(r.pinned, v)
	}
}

// PatchPages calls fn with the address and level (0: leaf) of every page
// of the persisted patch pi, index pages before the pages below them. It
// reads the index pages (through the cache), not the leaves.
func (r *Relation) PatchPages(ctx context.Context, pi PatchInfo, fn func(a Addr, level int) error) error {
	pt := &patch{info: pi, rel: r}
	var walk func(a Addr, level int) error
	walk = func(a Addr, level int) error {
		if err := fn(a, level); err != nil || level == 0 {
			return err
		}
		p, err := pt.getPage(ctx, a, level)
		if err != nil {
			return err
		}
		for i := 0; i < p.Len(); i++ {
			if err := walk(childAddr(p, i, r.sh.k), level-1); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(pi.Root, pi.Levels)
}

// LivePages calls fn with the info of every persisted patch that is live:
// in the current version or in one an open iterator pins. The page store
// may reclaim the pages of any other patch (PatchPages lists a patch's
// pages; PatchTag identifies them in the store).
func (r *Relation) LivePages(fn func(pi PatchInfo)) {
	seen := map[Addr]bool{}
	visit := func(v *version) {
		for _, pt := range v.patches {
			if !seen[pt.info.Root] {
				seen[pt.info.Root] = true
				fn(pt.info)
			}
		}
	}
	visit(r.cur.Load())
	r.pinMu.Lock()
	vs := make([]*version, 0, len(r.pinned))
	for v := range r.pinned {
		vs = append(vs, v)
	}
	r.pinMu.Unlock()
	for _, v := range vs {
		visit(v)
	}
}
