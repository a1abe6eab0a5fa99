package pyramid_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/shalestore/shale/backend"
	"github.com/shalestore/shale/backend/sim"
	"github.com/shalestore/shale/core/alloc"
	"github.com/shalestore/shale/core/pyramid"
	"github.com/shalestore/shale/core/pyramid/pyramidtest"
	"github.com/shalestore/shale/core/segment"
	"github.com/shalestore/shale/core/store"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Storage kits: what the pyramid's PageStore, RootStore and Committer run
// on. Both use backend/sim devices, which lose power for real: synced data
// kept, unsynced writes kept, dropped or torn (and garbled) per seed.
const (
	// kitDev: pyramidtest's simple stores, one sim device each.
	kitDev = "dev"
	// kitStore: the production parts, core/store (segments, boot region)
	// and core/nvlog, through the adapters below.
	kitStore = "store"
)

// env is a DB on a storage kit.
type env struct {
	t    testing.TB
	ctx  context.Context
	kit  string
	seed int64
	opts pyramid.Options
	db   *pyramid.DB

	rail *sim.Rail // all devices: cutting it cuts power to every one

	// kitDev
	pagesDev, rootsDev, logDev *sim.Device
	log                        *pyramidtest.Log
	// kitStore
	drives []*sim.Device
	nvram  *sim.Device
	st     *store.Store
	roots  *bootRoots
}

func newEnv(t testing.TB, opts pyramid.Options) *env {
	return newKitEnv(t, kitDev, 1, opts)
}

func newKitEnv(t testing.TB, kit string, seed int64, opts pyramid.Options) *env {
	e := &env{t: t, ctx: context.Background(), kit: kit, seed: seed, opts: opts}
	if e.opts.Schemas == nil {
		e.opts.Schemas = pyramid.StandardSchemas()
	}
	if e.opts.Logger == nil {
		e.opts.Logger = quiet
	}
	rail, clock := sim.NewRail(), sim.NewClock()
	e.rail = rail
	dev := func(name string, size int64, kind backend.Kind, i int64) *sim.Device {
		prof := sim.SSDProfile().ZeroLatency()
		if kind == backend.NVRAM {
			prof = sim.NVRAMProfile().ZeroLatency()
		}
		d, err := sim.New(sim.Options{Size: size, Kind: kind, Profile: prof, Seed: seed*100 + i, Time: sim.Virtual,
			Clock: clock, Rail: rail, CorruptTorn: true, Name: name, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	switch kit {
	case kitDev:
		e.pagesDev = dev("pages", 4<<30, backend.SSD, 1)
		e.rootsDev = dev("roots", 1<<20, backend.SSD, 2)
		e.logDev = dev("log", 1<<30, backend.NVRAM, 3)
	case kitStore:
		for i := range 7 {
			e.drives = append(e.drives, dev(fmt.Sprintf("drives[%d]", i), 64<<20, backend.SSD, int64(i)))
		}
		e.nvram = dev("nvram", 16<<20, backend.NVRAM, 99)
	default:
		t.Fatalf("kit %q", kit)
	}
	e.open(true)
	t.Cleanup(func() {
		if e.db != nil {
			e.db.Close()
		}
		e.closeKit()
	})
	return e
}

var storeGeometry = segment.Geometry{Data: 4, Parity: 2, AUSize: 256 << 10, WriteUnit: 16 << 10}

// open opens the kit and the DB on the devices as they are.
func (e *env) open(create bool) {
	e.t.Helper()
	o := e.opts
	var err error
	switch e.kit {
	case kitDev:
		if o.Pages, err = pyramidtest.OpenPageStore(e.ctx, e.pagesDev); err != nil {
			e.t.Fatal(err)
		}
		if o.Roots, err = pyramidtest.OpenRootStore(e.ctx, e.rootsDev); err != nil {
			e.t.Fatal(err)
		}
		if e.log, err = pyramidtest.OpenLog(e.ctx, e.logDev); err != nil {
			e.t.Fatal(err)
		}
		o.Log = e.log
	case kitStore:
		drives := make([]backend.Device, len(e.drives))
		for i, d := range e.drives {
			drives[i] = d
		}
		so := store.Options{Geometry: storeGeometry, Logger: quiet, Alloc: alloc.Options{Ahead: 3, MaxFrontier: 32}}
		if create {
			e.st, err = store.Create(e.ctx, drives, e.nvram, so)
		} else {
			e.st, _, err = store.Open(e.ctx, drives, e.nvram, so)
			if err == nil {
				// No cblocks here, and pyramid pages are referenced only
				// once durable: nothing to restore.
				err = e.st.EndRestore(e.ctx)
			}
		}
		if err != nil {
			e.t.Fatal(err)
		}
		e.roots = &bootRoots{s: e.st, used: map[segment.ID]bool{}}
		if err := e.roots.loadLayouts(); err != nil {
			e.t.Fatal(err)
		}
		o.Pages, o.Roots, o.Log = segmentPages{e.st, e.roots}, e.roots, e.st.Log()
	}
	if e.db, err = pyramid.Open(e.ctx, o); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) closeKit() {
	switch e.kit {
	case kitDev:
		e.log.Close()
	case kitStore:
		e.st.Close(e.ctx)
	}
}

// crash abandons the DB (its goroutines are stopped, nothing is flushed),
// cuts power to every device at once and opens everything again on the
// devices as they come back.
func (e *env) crash(rng *rand.Rand) {
	e.t.Helper()
	_ = rng // sim draws its power-loss outcomes from its seed and power cycle
	if e.db != nil {
		e.db.Close()
	}
	e.db = nil
	loss := func(d *sim.Device) *sim.Device {
		nd, err := d.PowerLoss()
		if err != nil {
			e.t.Fatal(err)
		}
		return nd
	}
	switch e.kit {
	case kitDev:
		e.pagesDev, e.rootsDev, e.logDev = loss(e.pagesDev), loss(e.rootsDev), loss(e.logDev)
	case kitStore:
		for i, d := range e.drives {
			e.drives[i] = loss(d)
		}
		e.nvram = loss(e.nvram)
	}
	e.closeKit() // on dead devices: only stops goroutines
	e.open(false)
}

// abandon drops the DB after a simulated crash inside it (a CrashHook
// panic): its locks may be held, so it is not closed, only forgotten.
func (e *env) abandon() { e.db = nil }

// trim trims the commit log as far as the pyramid allows.
func (e *env) trim() error {
	d := e.db.DurableSeq()
	switch e.kit {
	case kitDev:
		return e.log.Trim(e.ctx, d)
	default:
		return e.st.Log().Trim(e.ctx, d)
	}
}

func (e *env) rel(name string) *pyramid.Relation {
	r := e.db.Relation(name)
	if r == nil {
		e.t.Fatalf("no relation %s", name)
	}
	return r
}

// persist commits tuples of one relation as one batch.
func (e *env) persist(r *pyramid.Relation, tuples ...[]uint64) uint64 {
	e.t.Helper()
	var b pyramid.Batch
	for _, t := range tuples {
		if err := b.Insert(r, t...); err != nil {
			e.t.Fatal(err)
		}
	}
	seq, err := e.db.Persist(e.ctx, &b)
	if err != nil {
		e.t.Fatal(err)
	}
	return seq
}

func (e *env) elide(table *pyramid.Relation, lo, hi uint64) {
	e.t.Helper()
	var b pyramid.Batch
	if err := b.Elide(table, lo, hi); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.db.Persist(e.ctx, &b); err != nil {
		e.t.Fatal(err)
	}
}

// scan returns every tuple of r.
func (e *env) scan(r *pyramid.Relation, opts pyramid.IterOptions) [][]uint64 {
	e.t.Helper()
	it := r.NewIter(e.ctx, opts)
	defer it.Close()
	var out [][]uint64
	for it.Next() {
		out = append(out, append([]uint64(nil), it.Tuple()...))
	}
	if err := it.Err(); err != nil {
		e.t.Fatal(err)
	}
	return out
}

// ---- adapters from core/store to the pyramid's interfaces ----
//
// These are what the engine integration will use; they live in a test for
// now so the pyramid does not import the segment store.

// segmentPages is a pyramid.PageStore over a store.Store: each page is a
// log record appended to the open segio (from the back), tagged with the
// patch's sequence range. Finish flushes the writer. An Addr holds the
// segment id (8 bytes), the offset (5 bytes) and the length (3 bytes),
// big-endian.
type segmentPages struct {
	s     *store.Store
	roots *bootRoots
}

func encodeAddr(a segment.Addr) (pyramid.Addr, error) {
	var p pyramid.Addr
	if a.Offset < 0 || a.Offset >= 1<<40 || a.Length <= 0 || a.Length >= 1<<24 {
		return p, fmt.Errorf("segment address %v does not fit a pyramid address", a)
	}
	binary.BigEndian.PutUint64(p[:8], uint64(a.Segment))
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(a.Offset)<<24|uint64(a.Length))
	copy(p[8:], b[:])
	return p, nil
}

func decodeAddr(p pyramid.Addr) segment.Addr {
	v := binary.BigEndian.Uint64(p[8:])
	return segment.Addr{Segment: segment.ID(binary.BigEndian.Uint64(p[:8])), Offset: int64(v >> 24), Length: int32(v & (1<<24 - 1))}
}

func (sp segmentPages) NewWriter(ctx context.Context, tag pyramid.PatchTag) (pyramid.PageWriter, error) {
	return &segmentWriter{s: sp.s, roots: sp.roots, tag: tag}, nil
}

func (sp segmentPages) ReadPage(ctx context.Context, addr pyramid.Addr, dst []byte) ([]byte, error) {
	a := decodeAddr(addr)
	buf := make([]byte, a.Length)
	if _, err := sp.s.Read(ctx, a, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

type segmentWriter struct {
	s     *store.Store
	roots *bootRoots
	tag   pyramid.PatchTag
}

func (w *segmentWriter) Append(ctx context.Context, page []byte) (pyramid.Addr, error) {
	a, err := w.s.Append(ctx, segment.Record, w.tag.SeqLo, w.tag.SeqHi, page)
	if err != nil {
		return pyramid.Addr{}, err
	}
	w.roots.use(a.Segment)
	return encodeAddr(a)
}

func (w *segmentWriter) Finish(ctx context.Context) error { return w.s.Flush(ctx) }

func (w *segmentWriter) Abort() {}

// bootRoots is a pyramid.RootStore over the boot region: SetRoot writes a
// boot generation (Checkpoint) holding every root with one replaced.
//
// The store reads only segments whose layout it knows: the frontier's, this
// session's, and those given to AddLayout. In the engine the segment table
// will carry layouts; here every checkpoint also stores, in the root
// layoutsRoot, the layouts of every segment that ever received a page, and
// opening adds them back.
type bootRoots struct {
	s    *store.Store
	mu   sync.Mutex
	used map[segment.ID]bool
}

const layoutsRoot = "test.layouts"

func (b *bootRoots) use(seg segment.ID) {
	b.mu.Lock()
	b.used[seg] = true
	b.mu.Unlock()
}

func (b *bootRoots) SetRoot(ctx context.Context, name string, value []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	roots := b.s.Roots()
	roots[name] = append([]byte(nil), value...)
	var enc []byte
	for seg := range b.used {
		l, ok := b.s.Layout(seg)
		if !ok {
			return fmt.Errorf("no layout for segment %d", seg)
		}
		enc = binary.AppendUvarint(enc, uint64(seg))
		enc = binary.AppendUvarint(enc, uint64(len(l.Members)))
		for _, m := range l.Members {
			enc = binary.AppendUvarint(enc, uint64(m.Drive))
			enc = binary.AppendUvarint(enc, uint64(m.AU))
		}
	}
	roots[layoutsRoot] = enc
	return b.s.Checkpoint(ctx, roots)
}

// loadLayouts gives the store the layouts a previous session recorded.
func (b *bootRoots) loadLayouts() error {
	enc := b.s.Roots()[layoutsRoot]
	next := func() uint64 {
		v, n := binary.Uvarint(enc)
		enc = enc[n:]
		return v
	}
	for len(enc) > 0 {
		l := segment.Layout{Segment: segment.ID(next())}
		for range next() {
			l.Members = append(l.Members, segment.Member{Drive: int(next()), AU: int64(next())})
		}
		b.used[l.Segment] = true
		if _, known := b.s.Layout(l.Segment); !known {
			if err := b.s.AddLayout(l); err != nil {
				return err
			}
		}
	}
	return nil
}

func (b *bootRoots) GetRoot(ctx context.Context, name string) ([]byte, bool, error) {
	v, ok := b.s.Roots()[name]
	return v, ok, nil
}
