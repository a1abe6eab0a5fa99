package pyramid_test

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	"github.com/shalestore/shale/core/pyramid"
)

// TestDataDriven runs the scripts under testdata/ (see ddRunner for the
// commands). Rewrite expected output with -rewrite, then read the diff.
func TestDataDriven(t *testing.T) {
	datadriven.Walk(t, "testdata/scripts", func(t *testing.T, path string) {
		d := &ddRunner{outer: t, merged: map[string]*pyramid.Merged{}}
		datadriven.RunTest(t, path, func(t *testing.T, td *datadriven.TestData) string {
			return d.run(t, td)
		})
	})
}

// ddRunner holds one script's state. Commands:
//
//	open [page-bytes=N] [max-page-tuples=N]   fresh devices and DB (Manual)
//	insert rel=R [batch]                        one tuple per input line; each
//	                                            line its own persist unless batch
//	elide table=T lo=N hi=N
//	flush [rel=R]                               one relation or all; prints patches
//	merge rel=R newest=I oldest=J as=NAME       prints the merged patch
//	flatten rel=R merged=NAME                   prints patches (or the error)
//	compact rel=R
//	patches rel=R
//	scan rel=R [relaxed] [lower=(..)] [upper=(..)]
//	get rel=R key=(..) [relaxed]
//	resolve rel=R prefix=(..) start=N n=N [relaxed]
//	crash [seed=N]                              power loss on every device, reopen
//	durable                                     DB.DurableSeq
type ddRunner struct {
	outer  *testing.T // owns the env's cleanup
	e      *env
	merged map[string]*pyramid.Merged
}

func u64s(t *testing.T, s string) []uint64 {
	var out []uint64
	for _, f := range strings.Fields(strings.NewReplacer(",", " ", "(", " ", ")", " ").Replace(s)) {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			t.Fatalf("bad number %q", f)
		}
		out = append(out, v)
	}
	return out
}

func argU64s(t *testing.T, td *datadriven.TestData, key string) []uint64 {
	a, ok := td.Arg(key)
	if !ok {
		return nil
	}
	return u64s(t, strings.Join(a.Vals, " "))
}

func fmtTuple(t []uint64) string {
	parts := make([]string, len(t))
	for i, v := range t {
		parts[i] = strconv.FormatUint(v, 10)
	}
	return strings.Join(parts, " ")
}

func fmtPatches(r *pyramid.Relation) string {
	var b strings.Builder
	ps := r.Patches()
	if len(ps) == 0 {
		return "no patches\n"
	}
	for i, p := range ps {
		fmt.Fprintf(&b, "%d: seq %d..%d tuples %d leaves %d levels %d keys (%s)..(%s)\n",
			i, p.SeqLo, p.SeqHi, p.Tuples, p.LeafPages, p.Levels, fmtTuple(p.MinKey), fmtTuple(p.MaxKey))
	}
	return b.String()
}

func (d *ddRunner) rel(t *testing.T, td *datadriven.TestData, key string) *pyramid.Relation {
	var name string
	td.ScanArgs(t, key, &name)
	r := d.e.db.Relation(name)
	if r == nil {
		t.Fatalf("no relation %q", name)
	}
	return r
}

func (d *ddRunner) run(t *testing.T, td *datadriven.TestData) string {
	if td.Cmd != "open" && d.e == nil {
		t.Fatalf("%s before open", td.Cmd)
	}
	if d.e != nil {
		d.e.t = t // helpers fail the directive's test
	}
	ro := pyramid.ReadOptions{Relaxed: td.HasArg("relaxed")}
	switch td.Cmd {
	case "open":
		opts := pyramid.Options{Manual: true, CacheBytes: 1 << 20}
		td.MaybeScanArgs(t, "page-bytes", &opts.PageBytes)
		td.MaybeScanArgs(t, "max-page-tuples", &opts.MaxPageTuples)
		d.e = newEnv(d.outer, opts)
		return ""
	case "insert":
		r := d.rel(t, td, "rel")
		var out strings.Builder
		var b pyramid.Batch
		lines := strings.Split(strings.TrimSpace(td.Input), "\n")
		for i, line := range lines {
			if err := b.Insert(r, u64s(t, line)...); err != nil {
				return "error: " + err.Error()
			}
			if td.HasArg("batch") && i < len(lines)-1 {
				continue
			}
			seq, err := d.e.db.Persist(d.e.ctx, &b)
			if err != nil {
				t.Fatal(err)
			}
			b.Reset()
			fmt.Fprintf(&out, "seq %d\n", seq)
		}
		return out.String()
	case "elide":
		r := d.rel(t, td, "table")
		var lo, hi uint64
		td.ScanArgs(t, "lo", &lo)
		td.ScanArgs(t, "hi", &hi)
		var b pyramid.Batch
		if err := b.Elide(r, lo, hi); err != nil {
			return "error: " + err.Error()
		}
		seq, err := d.e.db.Persist(d.e.ctx, &b)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("seq %d\n", seq)
	case "flush":
		if !td.HasArg("rel") {
			if err := d.e.db.Flush(d.e.ctx); err != nil {
				t.Fatal(err)
			}
			return ""
		}
		r := d.rel(t, td, "rel")
		if err := r.Flush(d.e.ctx); err != nil {
			t.Fatal(err)
		}
		return fmtPatches(r)
	case "merge":
		r := d.rel(t, td, "rel")
		var newest, oldest int
		var as string
		td.ScanArgs(t, "newest", &newest)
		td.ScanArgs(t, "oldest", &oldest)
		td.ScanArgs(t, "as", &as)
		m, err := r.Merge(d.e.ctx, newest, oldest)
		if err != nil {
			return "error: " + err.Error()
		}
		d.merged[as] = m
		if m.Empty {
			return "empty: every tuple elided\n"
		}
		p := m.Output
		return fmt.Sprintf("seq %d..%d tuples %d keys (%s)..(%s)\n", p.SeqLo, p.SeqHi, p.Tuples, fmtTuple(p.MinKey), fmtTuple(p.MaxKey))
	case "flatten":
		r := d.rel(t, td, "rel")
		var name string
		td.ScanArgs(t, "merged", &name)
		m := d.merged[name]
		if m == nil {
			t.Fatalf("no merge %q", name)
		}
		if err := r.Flatten(d.e.ctx, m); err != nil {
			return "error: " + err.Error()
		}
		return fmtPatches(r)
	case "compact":
		r := d.rel(t, td, "rel")
		did, err := r.Compact(d.e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("did %v\n%s", did, fmtPatches(r))
	case "patches":
		return fmtPatches(d.rel(t, td, "rel"))
	case "scan":
		r := d.rel(t, td, "rel")
		tuples := d.e.scan(r, pyramid.IterOptions{Lower: argU64s(t, td, "lower"), Upper: argU64s(t, td, "upper"), Relaxed: ro.Relaxed})
		var b strings.Builder
		for _, tu := range tuples {
			b.WriteString(fmtTuple(tu) + "\n")
		}
		if b.Len() == 0 {
			return "empty\n"
		}
		return b.String()
	case "get":
		r := d.rel(t, td, "rel")
		got, ok, err := r.Get(d.e.ctx, argU64s(t, td, "key"), nil, ro)
		if err != nil {
			return "error: " + err.Error()
		}
		if !ok {
			return "not found\n"
		}
		return fmtTuple(got) + "\n"
	case "resolve":
		r := d.rel(t, td, "rel")
		var start, n uint64
		td.ScanArgs(t, "start", &start)
		td.ScanArgs(t, "n", &n)
		var b strings.Builder
		if err := r.Resolve(d.e.ctx, argU64s(t, td, "prefix"), start, n, ro, func(tu []uint64) error {
			b.WriteString(fmtTuple(tu) + "\n")
			return nil
		}); err != nil {
			return "error: " + err.Error()
		}
		if b.Len() == 0 {
			return "unmapped\n"
		}
		return b.String()
	case "crash":
		seed := uint64(1)
		td.MaybeScanArgs(t, "seed", &seed)
		d.e.crash(rand.New(rand.NewPCG(seed, seed)))
		return ""
	case "durable":
		return fmt.Sprintf("%d\n", d.e.db.DurableSeq())
	}
	t.Fatalf("unknown command %q", td.Cmd)
	return ""
}
