package pyramid

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shalestore/shale/core/page"
)

// Error classes.
var (
	// ErrCorrupt: a page, manifest or commit-log entry failed its checks.
	ErrCorrupt = errors.New("pyramid: corrupt")
	// ErrStale: Flatten found the merged patches no longer in the manifest
	// (another merge replaced them). Merge again.
	ErrStale = errors.New("pyramid: stale merge")
	// ErrClosed: the DB was used after Close.
	ErrClosed = errors.New("pyramid: closed")
)

// Crash points, in protocol order. Options.CrashHook is called with each as
// the step is reached; a test that crashes there and recovers must see the
// same contents.
const (
	// CrashFlushSealed: a DRAM patch is sealed; nothing written.
	CrashFlushSealed = "pyramid.flush.sealed"
	// CrashFlushPageAppended: the first page of the patch is appended, not
	// durable.
	CrashFlushPageAppended = "pyramid.flush.page-appended"
	// CrashFlushPagesDurable: all pages durable; the manifest does not name
	// them (they leak until reclaimed).
	CrashFlushPagesDurable = "pyramid.flush.pages-durable"
	// CrashFlushRootSet: the manifest names the patch; the DRAM patch is
	// still in memory (recovery skips its batches in the replay).
	CrashFlushRootSet = "pyramid.flush.root-set"
	// CrashMergePageAppended: the first merged page is appended.
	CrashMergePageAppended = "pyramid.merge.page-appended"
	// CrashMergePagesDurable: the merged patch is durable, not yet
	// flattened in.
	CrashMergePagesDurable = "pyramid.merge.pages-durable"
	// CrashFlattenBeforeRoot: the new manifest is built, not yet set.
	CrashFlattenBeforeRoot = "pyramid.flatten.before-root"
	// CrashFlattenRootSet: the manifest names the merged patch; the
	// in-memory version is not yet swapped.
	CrashFlattenRootSet = "pyramid.flatten.root-set"
)

// CrashPoints lists every crash point.
var CrashPoints = []string{
	CrashFlushSealed, CrashFlushPageAppended, CrashFlushPagesDurable, CrashFlushRootSet,
	CrashMergePageAppended, CrashMergePagesDurable, CrashFlattenBeforeRoot, CrashFlattenRootSet,
}

// Options configure a DB. Pages, Roots, Log and Schemas are required.
type Options struct {
	// Pages persists the pages of patches (core/store in shale).
	Pages PageStore
	// Roots holds each relation's manifest (the boot region in shale).
	Roots RootStore
	// Log is the commit log persist goes through (core/nvlog in shale).
	Log Committer
	// Schemas are the relations. Schemas may be added in later versions;
	// an existing relation's ID and shape must never change.
	Schemas []Schema

	// PageBytes bounds an encoded page (default 4096; MinPageBytes..1 MiB).
	PageBytes int
	// MaxPageTuples bounds the tuples of one page (default 4096), which
	// bounds a page search and the encoder's work.
	MaxPageTuples int
	// FlushBytes is the DRAM patch size at which a relation's active patch
	// is sealed and flushed (default 32 MiB).
	FlushBytes int64
	// MaxDRAMBytes bounds a relation's DRAM patches (active and sealed);
	// Persist waits above it until a flush completes (default 4 ×
	// FlushBytes). Not enforced with Manual.
	MaxDRAMBytes int64
	// CacheBytes bounds the page cache (default 256 MiB).
	CacheBytes int64
	// MergeFanout is the size ratio between neighbouring patches the merge
	// policy keeps (default 4).
	MergeFanout int
	// MaxPatches is the patch count above which the policy merges the
	// smallest neighbours whatever their sizes (default 16).
	MaxPatches int
	// Manual turns off the background flusher and merger: nothing flushes
	// or merges unless the caller calls Flush, Merge/Flatten or Compact.
	// UNSAFE outside tests: DRAM use is then unbounded.
	Manual bool
	// Logger receives background errors (default slog.Default()).
	Logger *slog.Logger
	// CrashHook, if set, is called at each crash point (CrashPoints).
	CrashHook func(point string)
}

func (o *Options) setDefaults() error {
	if o.Pages == nil || o.Roots == nil || o.Log == nil {
		return errors.New("pyramid: Pages, Roots and Log are required")
	}
	if len(o.Schemas) == 0 {
		return errors.New("pyramid: no schemas")
	}
	if o.PageBytes == 0 {
		o.PageBytes = 4096
	}
	if o.PageBytes < page.MinPageBytes || o.PageBytes > 1<<20 {
		return fmt.Errorf("pyramid: PageBytes %d outside [%d, %d]", o.PageBytes, page.MinPageBytes, 1<<20)
	}
	if o.MaxPageTuples == 0 {
		o.MaxPageTuples = 4096
	}
	if o.MaxPageTuples < 2 || o.MaxPageTuples > page.MaxTuples {
		return fmt.Errorf("pyramid: MaxPageTuples %d outside [2, %d]", o.MaxPageTuples, page.MaxTuples)
	}
	if o.FlushBytes == 0 {
		o.FlushBytes = 32 << 20
	}
	if o.MaxDRAMBytes == 0 {
		o.MaxDRAMBytes = 4 * o.FlushBytes
	}
	if o.FlushBytes <= 0 || o.MaxDRAMBytes < o.FlushBytes {
		return fmt.Errorf("pyramid: FlushBytes %d, MaxDRAMBytes %d", o.FlushBytes, o.MaxDRAMBytes)
	}
	if o.CacheBytes == 0 {
		o.CacheBytes = 256 << 20
	}
	if o.CacheBytes < 1<<16 {
		return fmt.Errorf("pyramid: CacheBytes %d below 64 KiB", o.CacheBytes)
	}
	if o.MergeFanout == 0 {
		o.MergeFanout = 4
	}
	if o.MaxPatches == 0 {
		o.MaxPatches = 16
	}
	if o.MergeFanout < 2 || o.MaxPatches < 2 || o.MaxPatches > maxManifestPatches/2 {
		return fmt.Errorf("pyramid: MergeFanout %d, MaxPatches %d", o.MergeFanout, o.MaxPatches)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// Stats counts the DB's work: persists and their tuples, replayed entries
// and tuples, flushes and merges (count, tuples and bytes written),
// flattens, merges found stale, tuples dropped by elision, page cache hits
// and misses, reads retried on a newer version, persists that waited for
// room, background errors and seals. Fields are updated atomically; read
// them with Snapshot.
type Stats struct {
	Persists, PersistTuples               atomic.Uint64
	ReplayedEntries, ReplayedTuples       atomic.Uint64
	Flushes, FlushTuples, FlushBytes      atomic.Uint64
	Merges, MergeTuples, MergeBytes       atomic.Uint64
	Flattens, StaleMerges, ElidedDropped  atomic.Uint64
	CacheHits, CacheMisses, ReadRetries   atomic.Uint64
	PersistWaits, BackgroundErrors, Seals atomic.Uint64
}

// StatsSnapshot is a copy of Stats.
type StatsSnapshot struct {
	Persists, PersistTuples               uint64
	ReplayedEntries, ReplayedTuples       uint64
	Flushes, FlushTuples, FlushBytes      uint64
	Merges, MergeTuples, MergeBytes       uint64
	Flattens, StaleMerges, ElidedDropped  uint64
	CacheHits, CacheMisses, ReadRetries   uint64
	PersistWaits, BackgroundErrors, Seals uint64
}

// Snapshot copies the counters.
func (s *Stats) Snapshot() StatsSnapshot {
	return StatsSnapshot{
		Persists: s.Persists.Load(), PersistTuples: s.PersistTuples.Load(),
		ReplayedEntries: s.ReplayedEntries.Load(), ReplayedTuples: s.ReplayedTuples.Load(),
		Flushes: s.Flushes.Load(), FlushTuples: s.FlushTuples.Load(), FlushBytes: s.FlushBytes.Load(),
		Merges: s.Merges.Load(), MergeTuples: s.MergeTuples.Load(), MergeBytes: s.MergeBytes.Load(),
		Flattens: s.Flattens.Load(), StaleMerges: s.StaleMerges.Load(), ElidedDropped: s.ElidedDropped.Load(),
		CacheHits: s.CacheHits.Load(), CacheMisses: s.CacheMisses.Load(), ReadRetries: s.ReadRetries.Load(),
		PersistWaits: s.PersistWaits.Load(), BackgroundErrors: s.BackgroundErrors.Load(), Seals: s.Seals.Load(),
	}
}

// DB is a set of relations sharing a commit log, a page store, a root store
// and a page cache.
type DB struct {
	opts   Options
	log    *slog.Logger
	rels   []*Relation
	byID   map[uint16]*Relation
	byName map[string]*Relation
	cache  *pageCache
	stats  Stats

	// mu orders inserts and seals: batches are inserted under it in
	// sequence order, and seals happen under it, so a sealed patch holds
	// exactly the batches numbered up to the seal.
	mu sync.Mutex
	// Guarded by mu.
	lastSeq uint64 // the highest sequence number inserted or covered

	flushedMu sync.Mutex
	flushed   chan struct{} // closed and replaced after every flush

	flushKick, mergeKick chan struct{}
	cancel               context.CancelFunc
	wg                   sync.WaitGroup
	closed               atomic.Bool
}

// Open opens the relations: it reads their manifests from the root store,
// then replays the commit log into fresh DRAM patches (batches the
// manifests already cover are skipped; replaying twice is harmless), then
// starts the background flusher and merger unless Manual.
func Open(ctx context.Context, opts Options) (*DB, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	db := &DB{opts: opts, log: opts.Logger, byID: map[uint16]*Relation{}, byName: map[string]*Relation{},
		flushed: make(chan struct{}), flushKick: make(chan struct{}, 1), mergeKick: make(chan struct{}, 1)}
	var err error
	if db.cache, err = newPageCache(opts.Pages, opts.CacheBytes, &db.stats); err != nil {
		return nil, err
	}
	for i := range opts.Schemas {
		s := opts.Schemas[i]
		s.Keys, s.Values, s.Shift, s.Elide = append([]string(nil), s.Keys...), append([]string(nil), s.Values...),
			append([]int(nil), s.Shift...), append([]ElideRule(nil), s.Elide...)
		if err := s.validate(); err != nil {
			return nil, err
		}
		if db.byID[s.ID] != nil || db.byName[s.Name] != nil {
			return nil, fmt.Errorf("pyramid: schema %s (id %d) repeats a name or id", s.Name, s.ID)
		}
		r := newRelation(db, s)
		db.rels = append(db.rels, r)
		db.byID[s.ID], db.byName[s.Name] = r, r
	}
	for _, r := range db.rels {
		for _, er := range r.schema.Elide {
			t := db.byName[er.Table]
			if t == nil || !t.schema.ElideTable {
				return nil, fmt.Errorf("pyramid: relation %s: elide table %q is not an elide table of this DB", r.schema.Name, er.Table)
			}
			r.rules = append(r.rules, rule{field: er.Field, table: t})
		}
	}
	for _, r := range db.rels {
		if err := r.load(ctx); err != nil {
			return nil, err
		}
		db.lastSeq = max(db.lastSeq, r.through)
	}
	for _, r := range db.rels {
		if r.schema.ElideTable {
			if err := r.loadElideSet(ctx); err != nil {
				return nil, err
			}
		}
	}
	if err := db.replay(ctx); err != nil {
		return nil, err
	}
	if !opts.Manual {
		bctx, cancel := context.WithCancel(context.Background())
		db.cancel = cancel
		db.wg.Add(2)
		go db.flusher(bctx)
		go db.merger(bctx)
	}
	return db, nil
}

// Relation returns the relation named name, or nil.
func (db *DB) Relation(name string) *Relation { return db.byName[name] }

// Relations returns the relations in schema order.
func (db *DB) Relations() []*Relation { return append([]*Relation(nil), db.rels...) }

// Stats returns the DB's counters.
func (db *DB) Stats() *Stats { return &db.stats }

func (db *DB) crash(point string) {
	if db.opts.CrashHook != nil {
		db.opts.CrashHook(point)
	}
}

// replay re-inserts the commit log's batches the manifests do not cover.
func (db *DB) replay(ctx context.Context) error {
	var b Batch
	return db.opts.Log.Replay(ctx, func(seq uint64, entry []byte) error {
		if err := db.decodeBatch(entry, &b); err != nil {
			return fmt.Errorf("replay seq %d: %w", seq, err)
		}
		db.stats.ReplayedEntries.Add(1)
		db.mu.Lock()
		if seq > db.lastSeq {
			db.lastSeq = seq
		}
		var full []*Relation
		b.each(func(r *Relation, t []uint64) {
			if seq <= r.through {
				return // already in a persisted patch
			}
			m := r.cur.Load().mems[0]
			if m.minSeq == 0 || seq < m.minSeq {
				m.minSeq = seq
			}
			r.apply(m, t, seq)
			db.stats.ReplayedTuples.Add(1)
			if m.bytes.Load() >= db.opts.FlushBytes && !containsRel(full, r) {
				full = append(full, r)
			}
		})
		for _, r := range full {
			db.sealLocked(r)
		}
		db.mu.Unlock()
		for _, r := range full {
			if err := r.Flush(ctx); err != nil {
				return fmt.Errorf("replay seq %d: %w", seq, err)
			}
		}
		return nil
	})
}

func containsRel(rs []*Relation, r *Relation) bool {
	for _, x := range rs {
		if x == r {
			return true
		}
	}
	return false
}

// sealLocked seals r's active DRAM patch and starts a new one.
// REQUIRES: db.mu held.
func (db *DB) sealLocked(r *Relation) {
	r.vmu.Lock()
	defer r.vmu.Unlock()
	v := r.cur.Load()
	old := v.mems[0]
	old.hi = db.lastSeq
	nv := &version{mems: append([]*memPatch{newMemPatch(&r.sh)}, v.mems...), patches: v.patches}
	r.cur.Store(nv)
	db.stats.Seals.Add(1)
}

// Persist commits the batch to the log under a new sequence number, waits
// until it is durable, and returns the number. The batch is inserted into
// the DRAM patches (where readers see it) before Persist returns, by the
// log's completion callback, in sequence order. Concurrent persists share
// the log's device writes (group commit). When a relation's DRAM patches
// are over MaxDRAMBytes, Persist first waits for a flush; ctx bounds only
// that wait: once the entry is handed to the log, Persist waits for the
// log's answer (the log answers every entry, durable or failed).
//
// The caller must not modify b until Persist returns. If the log fails, the
// batch is not inserted and Persist returns the error; the entry may still
// turn out durable and come back on replay (an unacknowledged write may or
// may not survive a crash).
func (db *DB) Persist(ctx context.Context, b *Batch) (uint64, error) {
	if db.closed.Load() {
		return 0, ErrClosed
	}
	if b.Len() == 0 {
		return 0, nil
	}
	if !db.opts.Manual {
		for i, r := range b.rels {
			if i > 0 && r == b.rels[i-1] {
				continue
			}
			if err := db.waitRoom(ctx, r); err != nil {
				return 0, err
			}
		}
	}
	w := waiterPool.Get().(*waiter)
	w.db, w.b = db, b
	w.entry = b.encode(w.entry[:0])
	db.opts.Log.CommitAsync(w.entry, w.done)
	res := <-w.ch
	if res.b != b {
		panic("pyramid: commit log answered another entry")
	}
	w.db, w.b = nil, nil
	waiterPool.Put(w)
	if res.err != nil {
		return 0, fmt.Errorf("pyramid: persist: %w", res.err)
	}
	return res.seq, nil
}

// waiter carries one persist through the log's callback. Pooled: its done
// method value and channel are made once.
type waiter struct {
	db    *DB
	b     *Batch
	entry []byte
	ch    chan persistResult
	done  func(seq uint64, err error)
}

type persistResult struct {
	seq uint64
	err error
	b   *Batch // the batch the answer is for
}

var waiterPool = sync.Pool{New: func() any {
	w := &waiter{ch: make(chan persistResult, 1)}
	w.done = func(seq uint64, err error) {
		if err == nil {
			w.db.applyCommitted(seq, w.b)
		}
		w.ch <- persistResult{seq: seq, err: err, b: w.b}
	}
	return w
}}

// applyCommitted inserts a durable batch into the active DRAM patches. It
// runs in the log's callback, one batch at a time in sequence order, so
// holding db.mu here makes a seal see either all of a batch or none, and
// every batch numbered below the seal.
func (db *DB) applyCommitted(seq uint64, b *Batch) {
	db.mu.Lock()
	if seq > db.lastSeq {
		db.lastSeq = seq
	}
	kick := false
	b.each(func(r *Relation, t []uint64) {
		m := r.cur.Load().mems[0]
		if m.minSeq == 0 {
			m.minSeq = seq
		}
		r.apply(m, t, seq)
		kick = kick || m.bytes.Load() >= db.opts.FlushBytes
	})
	db.mu.Unlock()
	db.stats.Persists.Add(1)
	db.stats.PersistTuples.Add(uint64(b.Len()))
	if kick {
		db.kickFlusher()
	}
}

// waitRoom blocks while r's DRAM patches hold more than MaxDRAMBytes.
func (db *DB) waitRoom(ctx context.Context, r *Relation) error {
	for {
		db.flushedMu.Lock()
		ch := db.flushed
		db.flushedMu.Unlock()
		if r.dramBytes() <= db.opts.MaxDRAMBytes {
			return nil
		}
		db.stats.PersistWaits.Add(1)
		db.kickFlusher()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if db.closed.Load() {
			return ErrClosed
		}
	}
}

func (db *DB) signalFlushed() {
	db.flushedMu.Lock()
	close(db.flushed)
	db.flushed = make(chan struct{})
	db.flushedMu.Unlock()
}

func (db *DB) kickFlusher() {
	select {
	case db.flushKick <- struct{}{}:
	default:
	}
}

func (db *DB) kickMerger() {
	select {
	case db.mergeKick <- struct{}{}:
	default:
	}
}

// DurableSeq returns the highest sequence number through which every
// batch is in persisted patches: the commit log may be trimmed through it.
func (db *DB) DurableSeq() uint64 {
	db.mu.Lock()
	defer db.mu.Unlock()
	d := db.lastSeq
	for _, r := range db.rels {
		for _, m := range r.cur.Load().mems {
			if m.minSeq != 0 {
				d = min(d, m.minSeq-1)
			}
		}
	}
	return d
}

// Flush flushes every relation's DRAM patches.
func (db *DB) Flush(ctx context.Context) error {
	for _, r := range db.rels {
		if err := r.Flush(ctx); err != nil {
			return err
		}
	}
	return nil
}

// flusher flushes relations whose active patch is full, or that have
// sealed patches waiting.
func (db *DB) flusher(ctx context.Context) {
	defer db.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	backoff := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-db.flushKick:
		case <-tick.C:
		}
		if backoff > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
		failed := false
		for _, r := range db.rels {
			if !r.needsFlush() {
				continue
			}
			if err := r.Flush(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				db.stats.BackgroundErrors.Add(1)
				db.log.Error("pyramid: flush", "relation", r.schema.Name, "err", err)
				failed = true
			}
		}
		if failed {
			backoff = min(max(2*backoff, 100*time.Millisecond), 10*time.Second)
		} else {
			backoff = 0
		}
	}
}

// merger runs the merge policy over every relation.
func (db *DB) merger(ctx context.Context) {
	defer db.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-db.mergeKick:
		case <-tick.C:
		}
		for _, r := range db.rels {
			for {
				did, err := r.Compact(ctx)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					if !errors.Is(err, ErrStale) {
						db.stats.BackgroundErrors.Add(1)
						db.log.Error("pyramid: merge", "relation", r.schema.Name, "err", err)
					}
					break
				}
				if !did {
					break
				}
			}
		}
	}
}

// Close stops the background work. It does not flush: what is in DRAM is
// durable in the commit log and comes back on replay.
func (db *DB) Close() error {
	if db.closed.Swap(true) {
		return nil
	}
	if db.cancel != nil {
		db.cancel()
	}
	db.wg.Wait()
	db.cache.c.Close()
	return nil
}
