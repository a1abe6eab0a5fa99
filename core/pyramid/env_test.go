package pyramid_test

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/shalestore/shale/backend"
	"github.com/shalestore/shale/core/pyramid"
	"github.com/shalestore/shale/core/pyramid/pyramidtest"
)

// env is a DB on crashable memory devices: one for pages, one for roots,
// one for the commit log.
type env struct {
	t                  testing.TB
	ctx                context.Context
	pagesDev, rootsDev *pyramidtest.MemDevice
	logDev             *pyramidtest.MemDevice
	opts               pyramid.Options
	db                 *pyramid.DB
	log                *pyramidtest.Log
}

func newEnv(t testing.TB, opts pyramid.Options) *env {
	e := &env{
		t: t, ctx: context.Background(), opts: opts,
		pagesDev: pyramidtest.NewMemDevice(4<<30, 512, backend.SSD),
		rootsDev: pyramidtest.NewMemDevice(1<<20, 512, backend.SSD),
		logDev:   pyramidtest.NewMemDevice(1<<30, 512, backend.NVRAM),
	}
	if e.opts.Schemas == nil {
		e.opts.Schemas = pyramid.StandardSchemas()
	}
	e.open()
	t.Cleanup(func() {
		if e.db != nil {
			e.db.Close()
		}
		e.log.Close()
	})
	return e
}

// open opens the stores and the DB on the devices as they are.
func (e *env) open() {
	e.t.Helper()
	ps, err := pyramidtest.OpenPageStore(e.ctx, e.pagesDev)
	if err != nil {
		e.t.Fatal(err)
	}
	rs, err := pyramidtest.OpenRootStore(e.ctx, e.rootsDev)
	if err != nil {
		e.t.Fatal(err)
	}
	e.log, err = pyramidtest.OpenLog(e.ctx, e.logDev)
	if err != nil {
		e.t.Fatal(err)
	}
	o := e.opts
	o.Pages, o.Roots, o.Log = ps, rs, e.log
	e.db, err = pyramid.Open(e.ctx, o)
	if err != nil {
		e.t.Fatal(err)
	}
}

// crash abandons the DB (its goroutines are stopped, nothing is flushed),
// loses power on every device and opens everything again.
func (e *env) crash(rng *rand.Rand) {
	e.t.Helper()
	if e.db != nil {
		e.db.Close()
	}
	e.db = nil
	e.log.Close() // its writer goroutine must not write after the power loss
	for _, d := range []*pyramidtest.MemDevice{e.pagesDev, e.rootsDev, e.logDev} {
		d.PowerLoss(rng)
	}
	e.open()
}

// abandon drops the DB after a simulated crash inside it (a CrashHook
// panic): its locks may be held, so it is not closed, only forgotten.
func (e *env) abandon() { e.db = nil }

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
