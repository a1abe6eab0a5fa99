package nvlog

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// model is the plain in-memory log the real one is checked against.
type model struct {
	entries []modelEntry // every live entry, seq order
	trim    uint64
	maxSeq  uint64 // highest seq ever handed out and known
}

type modelEntry struct {
	seq  uint64
	data []byte
}

func (m *model) add(seq uint64, data []byte) {
	m.maxSeq = max(m.maxSeq, seq)
	if seq <= m.trim {
		return // trimmed already: a trim may pass an ack still on its way
	}
	i, found := slices.BinarySearchFunc(m.entries, seq, func(e modelEntry, s uint64) int { return cmpU64(e.seq, s) })
	if found {
		panic(fmt.Sprintf("model: seq %d twice", seq))
	}
	m.entries = slices.Insert(m.entries, i, modelEntry{seq, data})
	m.maxSeq = max(m.maxSeq, seq)
}

func (m *model) trimTo(upTo uint64) {
	m.trim = max(m.trim, upTo)
	m.entries = slices.DeleteFunc(m.entries, func(e modelEntry) bool { return e.seq <= m.trim })
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// modelRun drives one seeded random run. Sessions open the log with a hook
// that cuts power when cutIn counts down to zero.
type modelRun struct {
	t      *testing.T
	rng    *rand.Rand
	dev    crashable
	opts   Options
	l      *Log
	m      model
	cutIn  atomic.Int64 // > 0: cut power at the cutIn-th crash point reached
	cutDev crashable    // set by the hook
	cutMu  sync.Mutex
	laps   float64 // device bytes written / region size, over all sessions
	region int64
	ops    map[string]int
	// unacked holds entries whose commit failed, by seq: after a cut they
	// may or may not be replayed.
	unacked map[uint64][]byte
	trace   []string // the last steps, for failure messages
}

func (r *modelRun) note(format string, args ...any) {
	if len(r.trace) >= 12 {
		r.trace = r.trace[1:]
	}
	r.trace = append(r.trace, fmt.Sprintf(format, args...))
}

func (r *modelRun) open() {
	r.t.Helper()
	o := r.opts
	o.CrashHook = func(string) {
		if r.cutIn.Load() <= 0 || r.cutIn.Add(-1) != 0 {
			return
		}
		r.cutMu.Lock()
		r.cutDev = r.dev.cut(r.t)
		r.cutMu.Unlock()
	}
	l, err := Open(context.Background(), r.dev, o)
	if err != nil {
		r.t.Fatalf("open: %v", err)
	}
	r.l = l
	r.region = l.Stats().RegionBytes
}

func (r *modelRun) close() {
	s := r.l.Stats()
	r.laps += float64(s.DeviceBytes) / float64(s.RegionBytes)
	r.l.Close()
}

// check compares a freshly opened log with the model, exactly.
func (r *modelRun) check(what string) {
	r.t.Helper()
	got := replayAll(r.t, r.l)
	if r.l.TrimSeq() != r.m.trim {
		r.t.Fatalf("%s: trim point %d, model %d", what, r.l.TrimSeq(), r.m.trim)
	}
	if len(got) != len(r.m.entries) {
		var gs, ms []uint64
		for _, g := range got {
			gs = append(gs, g.seq)
		}
		for _, e := range r.m.entries {
			ms = append(ms, e.seq)
		}
		r.t.Fatalf("%s: replayed %d entries %v, model has %d %v (trim %d); last ops %v", what, len(got), gs, len(r.m.entries), ms, r.m.trim, r.trace)
	}
	for i, g := range got {
		if w := r.m.entries[i]; g.seq != w.seq || !bytes.Equal(g.entry, w.data) {
			r.t.Fatalf("%s: entry %d: seq %d (%d bytes), model seq %d (%d bytes)", what, i, g.seq, len(g.entry), w.seq, len(w.data))
		}
	}
}

func (r *modelRun) entry() []byte {
	var n int
	switch r.rng.IntN(10) {
	case 0:
		n = 0
	case 1: // as large as a batch of one may be
		n = int(r.region) - batchHeaderBytes - entryHeaderBytes - r.rng.IntN(3)
	case 2, 3:
		n = r.rng.IntN(int(r.region) / 3)
	default:
		n = r.rng.IntN(2000)
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.rng.Uint32())
	}
	return b
}

// commit issues k entries at once and waits for all of them, trimming when
// the log is full. It returns how many were acknowledged (all of them
// unless power is cut meanwhile).
func (r *modelRun) commit(k int) int {
	r.t.Helper()
	type res struct {
		seq  uint64
		err  error
		data []byte
	}
	results := make(chan res, k)
	for range k {
		data := r.entry()
		if r.rng.IntN(2) == 0 {
			go func() {
				seq, err := r.l.Commit(context.Background(), data)
				results <- res{seq, err, data}
			}()
		} else {
			// Not on this goroutine: CommitAsync blocks while the log is
			// full, and this goroutine is the one that trims.
			go r.l.CommitAsync(data, func(seq uint64, err error) { results <- res{seq, err, data} })
		}
	}
	acked := 0
	before := r.m.maxSeq // every new seq must be above everything acknowledged so far
	for got := 0; got < k; {
		select {
		case x := <-results:
			got++
			if x.err != nil {
				if x.seq != 0 {
					r.unacked[x.seq] = x.data
				}
				continue
			}
			if x.seq <= before {
				r.t.Fatalf("seq %d not above %d, acknowledged earlier", x.seq, before)
			}
			r.m.add(x.seq, x.data) // panics on a duplicate
			acked++
		case <-time.After(time.Millisecond):
			s := r.l.Stats()
			if s.Failed != nil || !s.WaitingForTrim {
				continue
			}
			// Full: trim part of what is durable, or all of it.
			upTo := s.DurableSeq
			if r.rng.IntN(2) == 0 && s.DurableSeq > s.TrimSeq {
				upTo = s.TrimSeq + 1 + r.rng.Uint64N(s.DurableSeq-s.TrimSeq)
			}
			if err := r.l.Trim(context.Background(), upTo); err != nil {
				r.cutMu.Lock()
				cut := r.cutDev != nil
				r.cutMu.Unlock()
				if !cut {
					r.t.Fatalf("trim on a full log: %v", err)
				}
				continue
			}
			r.m.trimTo(upTo)
			r.note("full: trim %d", upTo)
		}
	}
	return acked
}

func (r *modelRun) step() {
	r.t.Helper()
	ctx := context.Background()
	switch op := r.rng.IntN(20); {
	case op < 11:
		r.ops["commit"]++
		k := 1 + r.rng.IntN(6)
		n := r.commit(k)
		r.note("commit %d: %d acked, max seq %d, trim %d", k, n, r.m.maxSeq, r.m.trim)
	case op < 15:
		r.ops["trim"]++
		s := r.l.Stats()
		upTo := s.TrimSeq + r.rng.Uint64N(s.DurableSeq-s.TrimSeq+2)
		err := r.l.Trim(ctx, upTo)
		if upTo > s.DurableSeq {
			if err == nil {
				r.t.Fatalf("trim to %d beyond durable %d succeeded", upTo, s.DurableSeq)
			}
			return
		}
		if err != nil {
			r.t.Fatalf("trim to %d: %v", upTo, err)
		}
		r.m.trimTo(upTo)
		r.note("trim %d", upTo)
	case op < 17:
		r.ops["reopen"]++
		r.close()
		r.open()
		r.check("reopen")
		r.note("reopen")
	case op < 18:
		// Power loss while idle: everything acknowledged is synced.
		r.ops["power loss idle"]++
		r.close()
		r.dev = r.dev.cut(r.t)
		r.open()
		r.check("power loss while idle")
		r.note("power loss idle")
	default:
		// Power loss in the middle of commits (and the trims they need):
		// acknowledged entries must be there; others may be, whole.
		r.ops["power loss busy"]++
		r.cutIn.Store(1 + r.rng.Int64N(12))
		r.commit(2 + r.rng.IntN(8))
		r.cutIn.Store(0)
		r.close()
		r.cutMu.Lock()
		if r.cutDev != nil {
			r.dev, r.cutDev = r.cutDev, nil
		} else {
			r.dev = r.dev.cut(r.t)
		}
		r.cutMu.Unlock()
		r.open()
		r.adopt()
		r.note("power loss busy: trim %d, max seq %d, %d live", r.m.trim, r.m.maxSeq, len(r.m.entries))
		clear(r.unacked) // their seqs may be handed out again
	}
	if s := r.l.Stats(); s.BytesInUse > s.RegionBytes || s.TrimSeq != r.m.trim {
		r.t.Fatalf("stats: %d of %d bytes in use, trim %d (model %d)", s.BytesInUse, s.RegionBytes, s.TrimSeq, r.m.trim)
	}
}

// adopt checks a log recovered after a cut in mid-commit: the trim point is
// the model's, or a later one whose Trim was under way; every acknowledged
// entry above it is there; anything else must be an entry whose Commit got
// an error or no answer, with the bytes of some entry committed in this
// run. The model then takes the recovered log as the truth.
func (r *modelRun) adopt() {
	r.t.Helper()
	got := replayAll(r.t, r.l)
	trim := r.l.TrimSeq()
	if trim < r.m.trim {
		r.t.Fatalf("after cut: trim point %d below acknowledged %d", trim, r.m.trim)
	}
	r.m.trimTo(trim)
	i := 0
	for _, g := range got {
		for i < len(r.m.entries) && r.m.entries[i].seq < g.seq {
			r.t.Fatalf("after cut: acknowledged seq %d missing", r.m.entries[i].seq)
		}
		if i < len(r.m.entries) && r.m.entries[i].seq == g.seq {
			if !bytes.Equal(r.m.entries[i].data, g.entry) {
				r.t.Fatalf("after cut: seq %d has other bytes", g.seq)
			}
			i++
			continue
		}
		// Unacknowledged but durable: it must be what was committed with
		// that seq. Adopt it.
		if want, ok := r.unacked[g.seq]; !ok || !bytes.Equal(want, g.entry) {
			r.t.Fatalf("after cut: seq %d (%d bytes) was not committed with these bytes", g.seq, len(g.entry))
		}
		r.m.add(g.seq, g.entry)
		i++
	}
	if i < len(r.m.entries) {
		r.t.Fatalf("after cut: acknowledged seq %d missing", r.m.entries[i].seq)
	}
}

func TestModel(t *testing.T) {
	seeds, steps := 6, 250
	if *long {
		seeds, steps = 60, 3000
	}
	var laps float64
	for s := range seeds {
		seed := uint64(s) + 1
		r := &modelRun{
			t:    t,
			rng:  rand.New(rand.NewPCG(seed, 11)),
			opts: testOpts(),
			ops:  map[string]int{},

			unacked: map[uint64][]byte{},
		}
		r.opts.MaxBatchBytes = MinMaxBatchBytes << r.rng.IntN(4)
		if r.rng.IntN(3) == 0 {
			r.opts.MaxDelay = time.Duration(1+r.rng.IntN(300)) * time.Microsecond
		}
		regionKiB := 16 + r.rng.IntN(112)
		if seed%2 == 1 { // 4 KiB sectors (newCrashDev): at least 16 of them
			regionKiB = max(regionKiB, 64)
		}
		size := regionOff + int64(regionKiB)<<10
		r.dev = newCrashDev(t, size, seed)
		if err := Format(context.Background(), r.dev, r.opts); err != nil {
			t.Fatal(err)
		}
		r.open()
		for range steps {
			r.step()
		}
		r.close()
		r.open()
		r.check("final")
		r.close()
		laps += r.laps
		t.Logf("seed %d: max delay %v, %d KiB region, %.1f laps, %d live entries, ops %v", seed, r.opts.MaxDelay, r.region>>10, r.laps, len(r.m.entries), r.ops)
	}
	if laps < float64(seeds)*10 {
		t.Fatalf("only %.1f laps around the log over %d seeds", laps, seeds)
	}
}
