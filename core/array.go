package core

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/shalestore/shale/core/alloc"
	"github.com/shalestore/shale/core/dedup"
	"github.com/shalestore/shale/core/pyramid"
	"github.com/shalestore/shale/core/segment"
	"github.com/shalestore/shale/core/store"
)

// Crash points of the engine's own protocol steps (the store's, the
// segment writer's, the NVRAM log's and the pyramid's come on top, see
// store.CrashPoints and pyramid.CrashPoints). Options.CrashHook sees them.
const (
	// CrashWriteAppended: a write's cblocks are appended to the open segio,
	// its NVRAM entry is not committed (the write is not acknowledged).
	CrashWriteAppended = "core.write.appended"
	// CrashAdminFacts: an admin operation's facts are durable, the catalog
	// root does not reflect them yet.
	CrashAdminFacts = "core.admin.facts"
	// CrashAdminCatalog: the catalog root is durable; mediums it dropped
	// are not elided yet.
	CrashAdminCatalog = "core.admin.catalog"
	// CrashTrimmed: the maintenance loop trimmed the NVRAM log.
	CrashTrimmed = "core.nvram.trimmed"
)

// CrashPoints lists the engine's own crash points.
var CrashPoints = []string{CrashWriteAppended, CrashAdminFacts, CrashAdminCatalog, CrashTrimmed}

// Limits and tunables (not user knobs: sized from the hardware or fixed).
const (
	// defaultCacheBytes and defaultMetaCacheBytes: Options defaults.
	defaultCacheBytes     = 256 << 20
	defaultMetaCacheBytes = 128 << 20
	// flushIntervalMs is the segio deadline: cblocks reach the drives at
	// most this long after their write even when the segio is not full.
	// Acknowledged writes are durable in NVRAM already, so the deadline
	// only bounds how long the open segio's cblocks wait in NVRAM and in
	// DRAM (pending); NVRAM pressure seals it sooner (trimLog). It is long
	// because a sealed segio is written whole: every early seal leaves the
	// rest of the segio (up to k write units) unused until GC. At 100 ms,
	// 4 KiB writes at queue depth 1 used 10–30× their size in segment space
	// (bench/RESULTS.md, "Segio deadline").
	flushIntervalMs = 5000
	// maintenanceIntervalMs is how often the maintenance loop trims the
	// NVRAM log and checks free space when nothing kicks it.
	maintenanceIntervalMs = 20
	// reserveSegments is how many plannable segments are kept for
	// metadata: data writes get ErrNoSpace below it, so pyramid flushes
	// (which need segment space to free NVRAM) still go.
	reserveSegments = 4
	// maxChainDepth bounds a medium chain walked by a read (a guard
	// against a corrupt medium table; chains only grow by snapshots).
	maxChainDepth = 1 << 16
	// noSpaceLogInterval rate-limits the out-of-space log line.
	noSpaceLogInterval = 10 * time.Second
)

// Array is an open shale array. Its methods are safe for concurrent use.
type Array struct {
	opts  Options
	log   *slog.Logger
	st    *store.Store
	db    *pyramid.DB
	bm    *pyramid.Relation // block map
	mt    *pyramid.Relation // medium table
	me    *pyramid.Relation // medium elide table
	roots *rootStore
	geo   segment.Geometry
	pend  pending
	cache *ristretto.Cache[uint64, *cachedCblock]
	// partSeen remembers cblocks read in part or batched recently (see
	// readCblock, batchRun).
	partSeen seenSet
	// refs keeps inline dedup from referencing segments GC is collecting.
	refs refGate
	// dedup is the inline dedup index; nil with Options.NoDedup.
	dedup   *dedup.Index
	dt      *pyramid.Relation // dedup table
	dtQueue chan dedupRecord  // to writeDedupTable

	// ops is held shared by every operation and exclusively by Close.
	ops    sync.RWMutex
	closed bool // guarded by ops

	// adminMu serialises admin operations.
	adminMu sync.Mutex
	// catMu guards cat and vols; admin operations replace cat whole.
	catMu sync.RWMutex
	cat   *catalog
	vols  map[string]*volState

	maxAppend      atomic.Uint64 // highest segio position a cblock was appended to
	durableThrough atomic.Uint64 // every segio position ≤ it is durable
	needCheckpoint atomic.Bool
	noSpace        atomic.Bool
	noSpaceLogged  atomic.Int64 // unix ns of the last out-of-space log line
	free           atomic.Int64 // plannable segments at the last check
	capacity       int64        // plannable segments of the empty array
	entryData      int          // logical bytes per NVRAM entry: min(maxEntryData, log region/8)

	kick   chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// Guarded by the maintenance goroutine only.
	cands   []trimCand
	safeSeq uint64
	trimmed uint64

	stats counters
}

// volState is the shared state of a volume or snapshot; every Volume
// handle of that name points at it.
type volState struct {
	name     string
	readOnly bool
	// mu is held shared by writes from the medium lookup through the
	// persist, and exclusively by snapshot, resize and delete, so a write
	// never lands in a medium that was just frozen.
	mu      sync.RWMutex
	medium  uint64 // guarded by mu
	size    int64  // guarded by mu
	deleted bool   // guarded by mu
}

// pos packs a segio position (segment, segio index) so positions compare
// as integers in write order.
func pos(seg segment.ID, segio int) uint64 { return uint64(seg)<<24 | uint64(segio) }

func (o *Options) fill() error {
	if len(o.Drives) == 0 || o.NVRAM == nil {
		return fmt.Errorf("%w: drives and an NVRAM device are required", ErrInvalid)
	}
	if o.CacheBytes == 0 {
		o.CacheBytes = defaultCacheBytes
	}
	if o.MetaCacheBytes == 0 {
		o.MetaCacheBytes = defaultMetaCacheBytes
	}
	if o.DedupIndexBytes == 0 {
		o.DedupIndexBytes = defaultDedupIndexBytes
	}
	if o.CacheBytes < 1<<20 || o.MetaCacheBytes < 1<<20 {
		return fmt.Errorf("%w: cache sizes below 1 MiB", ErrInvalid)
	}
	if o.DedupIndexBytes < dedup.MinIndexBytes {
		return fmt.Errorf("%w: dedup index of %d bytes, below the minimum %d", ErrInvalid, o.DedupIndexBytes, dedup.MinIndexBytes)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

func (a *Array) hook(point string) {
	if a.opts.CrashHook != nil {
		a.opts.CrashHook(point)
	}
}

func newArray(opts Options) (*Array, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	a := &Array{opts: opts, log: opts.Logger, kick: make(chan struct{}, 1), vols: map[string]*volState{}}
	a.pend.init()
	var err error
	a.cache, err = ristretto.NewCache(&ristretto.Config[uint64, *cachedCblock]{
		NumCounters: max(opts.CacheBytes/4096*10, 1000), MaxCost: opts.CacheBytes, BufferItems: 64,
		IgnoreInternalCost: true, OnExit: onCacheExit,
	})
	if err != nil {
		return nil, fmt.Errorf("core: cblock cache: %w", err)
	}
	if !opts.NoDedup {
		a.dedup = dedup.NewIndex(opts.DedupIndexBytes)
	}
	a.partSeen.init(opts.CacheBytes / spanBytes)
	return a, nil
}

func (a *Array) storeOptions(create bool) store.Options {
	so := store.Options{
		Geometry: a.opts.Geometry, FlushIntervalMs: flushIntervalMs,
		OnFlush: a.onFlush, CrashHook: a.opts.CrashHook, Logger: a.log,
		MaxRootsBytes: 1 << 30, // Open: the boot slot's size is the bound
	}
	if create {
		so.MaxRootsBytes = rootsBytes(a.opts)
	}
	return so
}

// rootsBytes sizes the roots at Create: 64 KiB for the catalog and the
// pyramid manifests, plus the layouts root's bound (see the package doc).
func rootsBytes(o Options) int {
	g := o.Geometry
	if g == (segment.Geometry{}) {
		g = segment.DefaultGeometry()
	}
	var aus int64
	for _, d := range o.Drives {
		aus += d.Size() / g.AUSize
	}
	return 64<<10 + int(aus/int64(g.Width())+1)*(11+15*g.Width())
}

func (a *Array) openDB(ctx context.Context) error {
	var err error
	a.db, err = pyramid.Open(ctx, pyramid.Options{
		Pages: segmentPages{s: a.st, roots: a.roots}, Roots: a.roots, Log: a.st.Log(),
		Schemas: pyramid.StandardSchemas(), CacheBytes: a.opts.MetaCacheBytes,
		Logger: a.log, CrashHook: a.opts.CrashHook,
	})
	if err != nil {
		return fmt.Errorf("core: metadata: %w", err)
	}
	a.bm, a.mt, a.me = a.db.Relation(pyramid.BlockMap), a.db.Relation(pyramid.MediumTable), a.db.Relation(pyramid.MediumElide)
	a.dt = a.db.Relation(pyramid.DedupTable)
	return nil
}

// Create formats the devices as a new, empty array and opens it.
func Create(ctx context.Context, opts Options) (*Array, error) {
	a, err := newArray(opts)
	if err != nil {
		return nil, err
	}
	a.st, err = store.Create(ctx, opts.Drives, opts.NVRAM, a.storeOptions(true))
	if err != nil {
		return nil, fmt.Errorf("core: create: %w", err)
	}
	a.geo = a.st.Geometry()
	a.roots = newRootStore(a.st, nil)
	if err := a.openDB(ctx); err != nil {
		a.st.Close(ctx)
		return nil, err
	}
	a.cat = &catalog{NextMedium: 1}
	if err := a.roots.SetRoot(ctx, catalogRoot, a.cat.encode()); err != nil {
		a.abort(ctx)
		return nil, fmt.Errorf("core: create: catalog: %w", err)
	}
	a.start()
	a.log.Info("core: array created", "geometry", a.geo.String(), "drives", len(opts.Drives))
	return a, nil
}

// Open recovers the array on the devices: every acknowledged write is back.
func Open(ctx context.Context, opts Options) (*Array, error) {
	a, err := newArray(opts)
	if err != nil {
		return nil, err
	}
	st, rec, err := store.Open(ctx, opts.Drives, opts.NVRAM, a.storeOptions(false))
	if err != nil {
		return nil, fmt.Errorf("core: open: %w", err)
	}
	a.st, a.geo = st, st.Geometry()
	a.roots = newRootStore(st, rec.Roots)
	fail := func(err error) (*Array, error) {
		a.abort(ctx)
		return nil, fmt.Errorf("core: open: %w", err)
	}
	if err := a.roots.loadLayouts(); err != nil {
		return fail(err)
	}
	// Put back the acknowledged cblocks whose segio did not make it.
	restored, lastSeq := 0, uint64(0)
	err = st.Replay(ctx, func(seq uint64, entry []byte) error {
		lastSeq = seq
		att, err := pyramid.EntryAttachment(entry)
		if err != nil {
			return fmt.Errorf("NVRAM entry %d: %w", seq, err)
		}
		return eachAttached(att, func(addr segment.Addr, payload []byte) error {
			restored++
			if err := st.Restore(addr, segment.Cblock, 0, 0, payload); err != nil {
				return fmt.Errorf("NVRAM entry %d: restoring %v: %w", seq, addr, err)
			}
			a.roots.use(addr.Segment)
			return nil
		})
	})
	if err != nil {
		return fail(err)
	}
	if err := st.EndRestore(ctx); err != nil {
		return fail(err)
	}
	// Everything replayed is on the drives now: its data is safe.
	a.safeSeq = lastSeq
	if err := a.openDB(ctx); err != nil {
		return fail(err)
	}
	if err := a.loadCatalog(ctx); err != nil {
		return fail(err)
	}
	a.start()
	a.log.Info("core: array opened", "geometry", a.geo.String(), "nvram_entries_with_cblocks", restored,
		"volumes", len(a.cat.Volumes), "snapshots", len(a.cat.Snapshots))
	return a, nil
}

// abort closes what Create or Open opened after a failure.
func (a *Array) abort(ctx context.Context) {
	if a.db != nil {
		a.db.Close()
	}
	a.st.Close(ctx)
	a.cache.Close()
}

// loadCatalog reads the catalog, fixes the next medium id against the
// medium table, and elides mediums nothing names (left by a crash inside
// an admin operation).
func (a *Array) loadCatalog(ctx context.Context) error {
	v, _, _ := a.roots.GetRoot(ctx, catalogRoot)
	cat, err := decodeCatalog(v)
	if err != nil {
		return err
	}
	known := map[uint64]bool{}
	for _, m := range cat.Mediums {
		known[m.ID] = true
	}
	// Every id ever used (elided ones too) is below the next one; ids
	// still visible that the catalog does not list are orphans.
	var orphans []uint64
	for _, relaxed := range []bool{true, false} {
		seen := map[uint64]bool{}
		it := a.mt.NewIter(ctx, pyramid.IterOptions{Relaxed: relaxed})
		for it.Next() {
			id := it.Tuple()[pyramid.MTMedium]
			cat.NextMedium = max(cat.NextMedium, id+1)
			if !relaxed && !known[id] && !seen[id] {
				seen[id] = true
				orphans = append(orphans, id)
			}
		}
		it.Close()
		if err := it.Err(); err != nil {
			return fmt.Errorf("medium table: %w", err)
		}
	}
	garbage := garbageMediums(cat)
	if len(garbage) > 0 {
		cat.dropMediums(garbage)
		if err := a.roots.SetRoot(ctx, catalogRoot, cat.encode()); err != nil {
			return err
		}
	}
	if err := a.elideMediums(ctx, append(orphans, garbage...)); err != nil {
		return err
	}
	a.cat = cat
	for _, vr := range cat.Volumes {
		a.vols[vr.Name] = &volState{name: vr.Name, medium: vr.Medium, size: vr.Size}
	}
	for _, s := range cat.Snapshots {
		n := s.Volume + "@" + s.Name
		a.vols[n] = &volState{name: n, medium: s.Medium, size: s.Size, readOnly: true}
	}
	return nil
}

// elideMediums persists medium-elide records for ids (already elided ids
// are harmless to elide again).
func (a *Array) elideMediums(ctx context.Context, ids []uint64) error {
	if len(ids) == 0 {
		return nil
	}
	var b pyramid.Batch
	for _, id := range ids {
		if err := b.Elide(a.me, id, id); err != nil {
			return err
		}
	}
	if _, err := a.db.Persist(ctx, &b); err != nil {
		return fmt.Errorf("eliding mediums %v: %w", ids, err)
	}
	a.log.Info("core: mediums elided", "mediums", ids)
	return nil
}

func (a *Array) start() {
	region := a.st.Log().Stats().RegionBytes
	a.entryData = int(max(min(maxEntryData, region/8), 64<<10) / SectorSize * SectorSize)
	free, total := a.st.Space()
	a.capacity = plannableSegments(total, a.geo.Width())
	a.updateSpace(free)
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	a.wg.Add(1)
	go a.maintain(ctx)
	if a.dedup != nil {
		a.dtQueue = make(chan dedupRecord, dtQueueLen)
		a.wg.Add(2)
		go a.writeDedupTable(ctx)
		go a.warmDedup(ctx)
	}
}

// enter admits an operation; exit ends it.
func (a *Array) enter() error {
	a.ops.RLock()
	if a.closed {
		a.ops.RUnlock()
		return ErrClosed
	}
	return nil
}

func (a *Array) exit() { a.ops.RUnlock() }

// Close flushes what is in flight and closes the array; the devices stay
// open (the caller owns them).
func (a *Array) Close(ctx context.Context) error {
	a.ops.Lock()
	if a.closed {
		a.ops.Unlock()
		return ErrClosed
	}
	a.closed = true
	a.ops.Unlock()
	a.cancel()
	a.wg.Wait()
	var errs []error
	errs = append(errs, a.db.Close())
	errs = append(errs, a.st.Close(ctx))
	a.cache.Close()
	return errors.Join(errs...)
}

// abandon stops the array's background work after a simulated crash
// without flushing or closing the store (its devices are dead; closing
// the segment writer could wait forever on a segio that cannot flush).
// For tests.
func (a *Array) abandon() {
	a.ops.Lock()
	a.closed = true
	a.ops.Unlock()
	a.cancel()
	a.wg.Wait()
	a.db.Close()
	a.cache.Close()
	// Closing the store stops its goroutines (which hold the array through
	// OnFlush); on dead devices it may never return, so it is not waited
	// for.
	go a.st.Close(context.Background())
}

// onFlush is the store's report of a durable segio (flusher goroutine,
// in write order).
func (a *Array) onFlush(f segment.Flushed) {
	p := pos(f.Segment, f.Segio)
	a.pend.flushed(p)
	a.durableThrough.Store(p)
	a.stats.segiosFlushed.Add(1)
	if f.Last {
		a.needCheckpoint.Store(true)
	}
	a.kickMaintenance()
}

func (a *Array) kickMaintenance() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// noteAppend records that a cblock went to addr's segio.
func (a *Array) noteAppend(addr segment.Addr) {
	p := pos(addr.Segment, int(addr.Offset/a.geo.SegioBytes()))
	for {
		cur := a.maxAppend.Load()
		if p <= cur || a.maxAppend.CompareAndSwap(cur, p) {
			return
		}
	}
}

// trimCand says: every NVRAM entry ≤ seq has its cblocks at segio
// positions ≤ at.
type trimCand struct{ seq, at uint64 }

// maintain runs the background duties: NVRAM trimming (forcing flushes
// when the log fills), checkpoints when segments close, and the free
// space check.
func (a *Array) maintain(ctx context.Context) {
	defer a.wg.Done()
	tick := time.NewTicker(maintenanceIntervalMs * time.Millisecond)
	defer tick.Stop()
	spaceEvery := 1000 / maintenanceIntervalMs
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-a.kick:
		}
		if a.needCheckpoint.Swap(false) {
			if err := a.roots.checkpoint(ctx); err != nil && ctx.Err() == nil {
				a.log.Error("core: checkpoint", "err", err)
				a.needCheckpoint.Store(true)
			}
			free, _ := a.st.Space()
			a.updateSpace(free)
		} else if n%spaceEvery == 0 {
			free, _ := a.st.Space()
			a.updateSpace(free)
		}
		if err := a.trimLog(ctx); err != nil && ctx.Err() == nil {
			a.stats.maintErrors.Add(1)
			a.log.Error("core: NVRAM trim", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// trimLog trims the NVRAM log as far as is safe, forcing a segio flush
// and a pyramid flush first when the log is more than half full.
func (a *Array) trimLog(ctx context.Context) error {
	lg := a.st.Log()
	ls := lg.Stats()
	if ls.Failed != nil {
		return nil // reported by the writes; nothing to trim
	}
	pressure := ls.WaitingForTrim || ls.BytesInUse*2 > ls.RegionBytes
	if pressure {
		a.stats.forcedFlushes.Add(1)
		if err := a.st.Flush(context.WithoutCancel(ctx)); err != nil {
			return fmt.Errorf("segio flush: %w", err)
		}
		if err := a.db.Flush(ctx); err != nil {
			return fmt.Errorf("metadata flush: %w", err)
		}
	}
	// Candidate: s first, then the append position (see the package doc).
	s := lg.DurableSeq()
	c := trimCand{seq: s, at: a.maxAppend.Load()}
	if n := len(a.cands); n == 0 || a.cands[n-1] != c {
		a.cands = append(a.cands, c)
	}
	d := a.durableThrough.Load()
	i := 0
	for ; i < len(a.cands) && a.cands[i].at <= d; i++ {
		a.safeSeq = max(a.safeSeq, a.cands[i].seq)
	}
	a.cands = slices.Delete(a.cands, 0, i)
	if len(a.cands) > 64 { // bound: keep the newest
		a.cands = slices.Delete(a.cands, 0, len(a.cands)-64)
	}
	upTo := min(a.safeSeq, a.db.DurableSeq())
	if upTo <= a.trimmed || upTo <= ls.TrimSeq {
		return nil
	}
	if err := lg.Trim(ctx, upTo); err != nil {
		return err
	}
	a.trimmed = upTo
	a.stats.nvramTrims.Add(1)
	a.hook(CrashTrimmed)
	return nil
}

// plannableSegments is how many more segments of width drives the free
// AUs allow: the largest t with Σ min(free_i, t) ≥ width·t (each segment
// takes one AU on each of width distinct drives).
func plannableSegments(free []int64, width int) int64 {
	lo, hi := int64(0), int64(0)
	for _, f := range free {
		hi += f
	}
	hi /= int64(width)
	for lo < hi {
		t := (lo + hi + 1) / 2
		var s int64
		for _, f := range free {
			s += min(f, t)
		}
		if s >= int64(width)*t {
			lo = t
		} else {
			hi = t - 1
		}
	}
	return lo
}

func (a *Array) updateSpace(free []int64) {
	n := plannableSegments(free, a.geo.Width())
	a.free.Store(n)
	full := n < reserveSegments
	if full != a.noSpace.Load() {
		a.noSpace.Store(full)
		if !full {
			a.log.Info("core: space available again", "free_segments", n)
		}
	}
}

// noSpaceErr logs (rate-limited) and returns ErrNoSpace.
func (a *Array) noSpaceErr(cause error) error {
	a.stats.noSpace.Add(1)
	now := time.Now().UnixNano()
	if last := a.noSpaceLogged.Load(); now-last > int64(noSpaceLogInterval) && a.noSpaceLogged.CompareAndSwap(last, now) {
		a.log.Error("core: array full: writes fail with ENOSPC until space is freed (deleted data is not reclaimed yet: no GC)",
			"free_segments", a.free.Load(), "reserve_segments", reserveSegments, "cause", cause)
	}
	if cause != nil {
		return fmt.Errorf("%w: %v", ErrNoSpace, cause)
	}
	return ErrNoSpace
}

func isNoSpace(err error) bool {
	return errors.Is(err, alloc.ErrNoSpace) || errors.Is(err, alloc.ErrFrontierFull)
}
