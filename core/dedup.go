package core

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/shalestore/shale/core/cblock"
	"github.com/shalestore/shale/core/dedup"
	"github.com/shalestore/shale/core/pyramid"
	"github.com/shalestore/shale/core/segment"
)

// Inline deduplication (package dedup has the rules). A write with dedup
// on hashes every sector, asks dedup.Plan which runs are already stored,
// and stores those as KindDup block-map tuples naming the existing cblock,
// in the same batch (so the same NVRAM entry) as the write's other facts.
// The new cblocks' every-8th sectors by position are recorded, once the
// write is durable, in the inline index and the dedup table relation: a
// location enters either only after the facts that make its cblock
// durable (the write's NVRAM entry, which carries the cblock), so a later
// duplicate never names a cblock a crash could lose.
//
// References to existing cblocks go through the refGate: the writer holds
// it from the first lookup until its facts are durable, and a segment GC
// is collecting is a miss.

// defaultDedupIndexBytes: Options default for the inline index.
const defaultDedupIndexBytes = 64 << 20

// dedupRecord is a location to put in the inline index once the write
// that stored it is durable.
type dedupRecord struct {
	hash uint64
	loc  dedup.Loc
}

// dedupState is a write's dedup scratch, part of the pooled writeCtx.
type dedupState struct {
	hashes []uint64
	plan   []dedup.Run
	record []dedupRecord
	src    dedupSource
}

// dedupSource is dedup.Source over the array: the inline index, the refGate
// and the read path.
type dedupSource struct {
	a   *Array
	ctx context.Context
	buf []byte
	t   [bmTupleFields]uint64
}

// bmTupleFields is the number of fields of a block-map tuple.
const bmTupleFields = pyramid.BMSector + 1

func (s *dedupSource) Lookup(h uint64) (dedup.Loc, bool) {
	loc, ok := s.a.dedup.Get(h)
	if !ok {
		return loc, false
	}
	s.a.stats.dedupLookupHits.Add(1)
	if !s.a.refs.allowed(segment.ID(loc.Segment)) {
		return loc, false
	}
	return loc, true
}

func (s *dedupSource) Cblock(loc dedup.Loc) ([]byte, bool) {
	n := int(loc.Sectors) * SectorSize
	if cap(s.buf) < n {
		s.buf = make([]byte, 0, cblock.MaxLogical)
	}
	t := &s.t
	t[pyramid.BMLen], t[pyramid.BMKind] = uint64(loc.Sectors), pyramid.KindData
	t[pyramid.BMSegment], t[pyramid.BMOffset], t[pyramid.BMCLen], t[pyramid.BMSector] = loc.Segment, uint64(loc.Offset), uint64(loc.CLen), 0
	if err := s.a.readRun(s.ctx, t[:], s.buf[:n]); err != nil {
		// Gone or unreadable: a miss. The write goes on storing the data.
		s.a.log.Debug("core: dedup candidate unreadable", "segment", loc.Segment, "offset", loc.Offset, "err", err)
		s.a.stats.dedupUnreadable.Add(1)
		return nil, false
	}
	return s.buf[:n], true
}

// dedupPlan hashes p's sectors and plans its duplicate and new runs.
// REQUIRES: a.dedup != nil, the caller between a.refs.enter and exit.
func (a *Array) dedupPlan(ctx context.Context, w *writeCtx, p []byte) []dedup.Run {
	d := &w.dd
	nsec := len(p) / SectorSize
	d.hashes = d.hashes[:0]
	hash := a.opts.dedupHash
	if hash == nil {
		hash = dedup.Hash
	}
	for i := range nsec {
		d.hashes = append(d.hashes, hash(p[i*SectorSize:(i+1)*SectorSize]))
	}
	a.dedup.Prefetch(d.hashes)
	d.src.a, d.src.ctx = a, ctx
	d.plan = dedup.Plan(p, d.hashes, &d.src, func(i int) bool { return isZeroSector(p[i*SectorSize : (i+1)*SectorSize]) }, d.plan)
	d.src.ctx = nil
	return d.plan
}

// insertDup adds the KindDup tuple of run r (sectors of the write at lba).
func (a *Array) insertDup(w *writeCtx, m, lba uint64, r dedup.Run) error {
	n := uint64(r.End - r.Start)
	if err := w.b.Insert(a.bm, m, lba+uint64(r.Start), n, pyramid.KindDup,
		r.Src.Segment, uint64(r.Src.Offset), uint64(r.Src.CLen), uint64(r.Src.Sector)); err != nil {
		return err
	}
	a.stats.dedupRuns.Add(1)
	a.stats.dedupSectors.Add(int64(n))
	return nil
}

// recordCblock notes the every-8th sectors of a new cblock holding sectors
// [i, j) of the write at lba, for publishDedup once the write is durable.
func (a *Array) recordCblock(w *writeCtx, lba uint64, i, j int, addr segment.Addr) {
	d := &w.dd
	for s := i; s < j; s++ {
		if (lba+uint64(s))%dedup.RecordEvery != 0 {
			continue
		}
		d.record = append(d.record, dedupRecord{hash: d.hashes[s], loc: dedup.Loc{Segment: uint64(addr.Segment),
			Offset: addr.Offset, CLen: addr.Length, Sector: uint16(s - i), Sectors: uint16(j - i)}})
	}
}

// publishDedup puts a durable write's recorded locations in the index and
// queues them for the dedup table.
func (a *Array) publishDedup(w *writeCtx) {
	for _, r := range w.dd.record {
		a.dedup.Put(r.hash, r.loc)
		select {
		case a.dtQueue <- r:
		default:
			a.stats.dedupTableDropped.Add(1)
		}
	}
	w.dd.record = w.dd.record[:0]
}

// Dedup table writing. The table (hash -> cblock location, one tuple per
// recorded sector) is the complete record the GC's thorough dedup pass
// works from. Its tuples are written in large batches by one goroutine,
// off the write path: a write's NVRAM entry carries only its own facts,
// and the table's commits are few and large. A tuple is queued only once the write that stored its cblock
// is durable, so the table never names a cblock a crash could lose; a
// tuple lost to a crash or a full queue only costs a duplicate found
// later (or not at all), never correctness.
const (
	dtQueueLen   = 1 << 16 // records waiting; beyond, new ones are dropped
	dtBatchLen   = 4096    // tuples per batch
	dtFlushEvery = 200 * time.Millisecond
)

// writeDedupTable persists queued records in batches until ctx ends. A
// batch goes in sorted by hash: the metadata patch's skiplist takes
// inserts in key order faster (its search paths stay in cache), 30-50 %
// on a patch of 300 K tuples.
func (a *Array) writeDedupTable(ctx context.Context) {
	defer a.wg.Done()
	var b pyramid.Batch
	recs := make([]dedupRecord, 0, dtBatchLen)
	tick := time.NewTicker(dtFlushEvery)
	defer tick.Stop()
	flush := func() {
		if len(recs) == 0 {
			return
		}
		slices.SortFunc(recs, func(x, y dedupRecord) int { return cmp.Compare(x.hash, y.hash) })
		b.Reset()
		n := 0
		for _, r := range recs {
			if err := b.Insert(a.dt, r.hash, r.loc.Segment, uint64(r.loc.Offset), uint64(r.loc.CLen), dtPlace(r.loc)); err != nil {
				a.stats.dedupTableDropped.Add(1)
				continue
			}
			n++
		}
		recs = recs[:0]
		if n == 0 {
			return
		}
		if _, err := a.db.Persist(ctx, &b); err != nil {
			if ctx.Err() == nil {
				a.log.Warn("core: dedup table batch not written", "tuples", n, "err", err)
			}
			a.stats.dedupTableDropped.Add(int64(n))
		} else {
			a.stats.dedupTableTuples.Add(int64(n))
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			flush()
		case r := <-a.dtQueue:
			if recs = append(recs, r); len(recs) >= dtBatchLen {
				flush()
			}
		}
	}
}

// dtPlace packs a location's sector and cblock length (both in sectors)
// into the dedup table's place field.
func dtPlace(l dedup.Loc) uint64 { return uint64(l.Sector) | uint64(l.Sectors)<<16 }

// warmDedup fills the inline index from the dedup table when the array
// opens, so data written before a restart is found again: entries are
// added only into free room (what writes put since the start is newer),
// until the index is nine-tenths full or the table ends. The table is in
// hash order, so a table larger than the index gives an arbitrary part of
// it. Runs in the background; the counter dedup_index_loaded says how far
// it got.
func (a *Array) warmDedup(ctx context.Context) {
	defer a.wg.Done()
	start := time.Now()
	it := a.dt.NewIter(ctx, pyramid.IterOptions{})
	defer it.Close()
	limit := a.dedup.Stats().Capacity * 9 / 10
	seen := 0
	for it.Next() {
		t := it.Tuple()
		place := t[4]
		loc := dedup.Loc{Segment: t[1], Offset: int64(t[2]), CLen: int32(t[3]), Sector: uint16(place), Sectors: uint16(place >> 16)}
		if loc.Sectors == 0 || loc.Sector >= loc.Sectors {
			continue
		}
		if a.dedup.Add(t[0], loc) {
			a.stats.dedupLoaded.Add(1)
		}
		if seen++; seen%4096 == 0 && a.dedup.Stats().Entries >= limit {
			break
		}
	}
	if err := it.Err(); err != nil && ctx.Err() == nil {
		a.log.Warn("core: dedup index not fully loaded from the dedup table", "loaded", a.stats.dedupLoaded.Load(), "err", err)
		return
	}
	if n := a.stats.dedupLoaded.Load(); n > 0 {
		a.log.Info("core: dedup index loaded from the dedup table", "entries", n, "took", time.Since(start).Round(time.Millisecond))
	}
}
