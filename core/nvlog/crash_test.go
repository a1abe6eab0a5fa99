package nvlog

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shalestore/shale/backend"
)

var long = flag.Bool("long", false, "run the long crash and model soaks")

func TestMain(m *testing.M) {
	slog.SetDefault(quiet) // backends log through the default logger
	os.Exit(m.Run())
}

// crashable is a device that can lose power.
type crashable interface {
	backend.Device
	// cut cuts power now: the receiver fails every later call, and the
	// returned device holds what survived.
	cut(t testing.TB) crashable
}

// history records what a workload was told, for checking a recovered log.
type history struct {
	mu      sync.Mutex
	ids     map[uint64]uint64 // seq → entry id, for every entry that got a seq
	acked   map[uint64]bool   // seqs acknowledged durable
	maxAck  uint64
	trimmed uint64 // highest trim point acknowledged
	trimReq uint64 // highest trim point asked for
}

func newHistory() *history {
	return &history{ids: map[uint64]uint64{}, acked: map[uint64]bool{}}
}

func (h *history) committed(seq, id uint64, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if seq == 0 {
		return
	}
	h.ids[seq] = id
	if err == nil {
		h.acked[seq] = true
		h.maxAck = max(h.maxAck, seq)
	}
}

// verify opens the recovered device and checks it against h: every
// acknowledged entry above the recovered trim point is there, whole; every
// entry there is one that was committed with that seq; seqs are contiguous;
// the trim point is no lower than an acknowledged trim; new commits get
// larger seqs. It returns the open log.
func (h *history) verify(t testing.TB, dev backend.Device, opts Options) *Log {
	t.Helper()
	ctx := context.Background()
	l, err := Open(ctx, dev, opts)
	if err != nil {
		t.Fatalf("open after crash: %v", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	trim := l.TrimSeq()
	if trim < h.trimmed || trim > max(h.trimReq, h.trimmed) {
		t.Fatalf("recovered trim point %d, acknowledged %d, asked %d", trim, h.trimmed, h.trimReq)
	}
	var prev, maxSeen uint64
	seen := map[uint64]bool{}
	err = l.Replay(ctx, func(seq uint64, e []byte) error {
		if prev != 0 && seq != prev+1 {
			return fmt.Errorf("seq %d after %d", seq, prev)
		}
		if seq <= trim {
			return fmt.Errorf("seq %d at or below trim point %d", seq, trim)
		}
		prev = seq
		id, err := checkPayload(e)
		if err != nil {
			return fmt.Errorf("seq %d: %w", seq, err)
		}
		want, ok := h.ids[seq]
		if !ok {
			return fmt.Errorf("seq %d (id %d) was never committed", seq, id)
		}
		if want != id {
			return fmt.Errorf("seq %d holds id %d, committed id %d", seq, id, want)
		}
		seen[seq] = true
		maxSeen = seq
		return nil
	})
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	t.Logf("recovered: trim %d, %d entries replayed up to seq %d, %d acknowledged up to %d, %d/%d bytes in use",
		trim, len(seen), maxSeen, len(h.acked), h.maxAck, l.Stats().BytesInUse, l.Stats().RegionBytes)
	for seq := range h.acked {
		if seq > trim && !seen[seq] {
			t.Fatalf("acknowledged seq %d missing (trim %d, replayed up to %d)", seq, trim, maxSeen)
		}
	}
	if s := l.Stats(); s.BytesInUse > s.RegionBytes/2 {
		// The crash may have come while the log was full: make room, as
		// the engine would after flushing the replayed entries.
		if err := l.Trim(ctx, s.DurableSeq); err != nil {
			t.Fatalf("trim after recovery: %v", err)
		}
		trim = s.DurableSeq
	}
	seq, err := l.Commit(ctx, payload(1<<40, 16))
	if err != nil {
		t.Fatalf("commit after recovery: %v", err)
	}
	if seq <= max(maxSeen, h.maxAck, trim) {
		t.Fatalf("new seq %d not above replayed %d, acked %d, trim %d", seq, maxSeen, h.maxAck, trim)
	}
	// The recovered state is now the truth (Open synced it): later phases
	// build on it.
	ids := map[uint64]uint64{seq: 1 << 40}
	acked := map[uint64]bool{seq: true}
	for s := range seen {
		if s > trim {
			ids[s] = h.ids[s]
			acked[s] = true
		}
	}
	h.ids, h.acked, h.maxAck = ids, acked, seq
	h.trimmed, h.trimReq = trim, trim
	return l
}

// workload runs committers and a trimmer on l until stop is closed or the
// log fails, recording into h.
type workload struct {
	committers int
	maxEntry   int // entry sizes are drawn in [8, maxEntry]
	async      bool
	trim       trimPolicy
}

// trimPolicy says when the workload's trimmer trims.
type trimPolicy int

const (
	trimEager    trimPolicy = iota // often, whatever the fill
	trimWhenFull                   // only when the writer waits for room
	trimHalf                       // when more than half the log is in use
	trimPolicies
)

func randomWorkload(rng *rand.Rand, maxCommitters, maxEntry int) workload {
	return workload{
		committers: 1 + rng.IntN(maxCommitters),
		maxEntry:   16 + rng.IntN(maxEntry),
		async:      rng.IntN(2) == 0,
		trim:       trimPolicy(rng.IntN(int(trimPolicies))),
	}
}

func (w workload) run(l *Log, h *history, seed uint64, stop <-chan struct{}) {
	ctx := context.Background()
	var wg sync.WaitGroup
	var nextID atomic.Uint64
	failed := make(chan struct{})
	var once sync.Once
	quit := func() { once.Do(func() { close(failed) }) }
	done := func() bool {
		select {
		case <-stop:
			return true
		case <-failed:
			return true
		default:
			return false
		}
	}
	for c := range w.committers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(c)))
			var inflight sync.WaitGroup
			for !done() {
				id := nextID.Add(1)
				n := 8 + rng.IntN(w.maxEntry-7)
				if rng.IntN(8) == 0 {
					n = 8 + rng.IntN(16)
				}
				if w.async && rng.IntN(2) == 0 {
					inflight.Add(1)
					l.CommitAsync(payload(id, n), func(seq uint64, err error) {
						h.committed(seq, id, err)
						if err != nil {
							quit()
						}
						inflight.Done()
					})
					continue
				}
				seq, err := l.Commit(ctx, payload(id, n))
				h.committed(seq, id, err)
				if err != nil {
					quit()
				}
			}
			inflight.Wait()
		}()
	}
	committersDone := make(chan struct{})
	trimmerDone := make(chan struct{})
	go func() {
		// The trimmer outlives the committers: one may be waiting for room
		// on a full log when the workload is told to stop.
		defer close(trimmerDone)
		rng := rand.New(rand.NewPCG(seed, 99))
		for {
			select {
			case <-committersDone:
				return
			default:
			}
			time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
			s := l.Stats()
			if s.DurableSeq <= s.TrimSeq {
				continue
			}
			switch w.trim {
			case trimEager:
				if rng.IntN(4) != 0 && s.BytesInUse < s.RegionBytes/2 && !s.WaitingForTrim {
					continue
				}
			case trimWhenFull:
				if !s.WaitingForTrim {
					continue
				}
			case trimHalf:
				if s.BytesInUse < s.RegionBytes/2 {
					continue
				}
			}
			upTo := s.TrimSeq + 1 + rng.Uint64N(s.DurableSeq-s.TrimSeq)
			h.mu.Lock()
			h.trimReq = max(h.trimReq, upTo)
			h.mu.Unlock()
			if err := l.Trim(ctx, upTo); err != nil {
				if !errors.Is(err, ErrTrimRange) {
					quit()
					time.Sleep(time.Millisecond) // failed: nothing to do but wait for the committers
				}
				continue
			}
			h.mu.Lock()
			h.trimmed = max(h.trimmed, upTo)
			h.mu.Unlock()
		}
	}()
	wg.Wait()
	close(committersDone)
	<-trimmerDone
}

// crashAt opens the formatted log on dev, runs w on it and, once warmup
// batches are durable, cuts power the k-th time the log reaches point (or
// stops after maxRun). It returns the device after the cut, or nil if the
// point was not reached.
func crashAt(t testing.TB, dev crashable, opts Options, w workload, point string, warmup, k int, seed uint64, h *history, maxRun time.Duration) crashable {
	t.Helper()
	var after crashable
	var hits, batches atomic.Int64
	stop := make(chan struct{})
	var once sync.Once
	o := opts
	var rngMu sync.Mutex
	rng := rand.New(rand.NewPCG(seed, 5))
	o.CrashHook = func(p string) {
		if p == CrashBatchSynced {
			batches.Add(1)
		}
		if p != point || batches.Load() < int64(warmup) || hits.Add(1) != int64(k) {
			// Pause now and then, so that the cut lands in windows other
			// goroutines open (a trim's superblock written but not synced
			// while a batch is written, ...).
			rngMu.Lock()
			d := time.Duration(rng.IntN(8*400)) * time.Microsecond
			rngMu.Unlock()
			if d < 400*time.Microsecond {
				time.Sleep(d)
			}
			return
		}
		once.Do(func() {
			// Sometimes let the other goroutines run on a little first, so
			// that the cut lands inside windows they open.
			if d := time.Duration(seed % 7 * 150); d > 300 {
				time.Sleep(d * time.Microsecond)
			}
			after = dev.cut(t)
			close(stop)
		})
	}
	l, err := Open(context.Background(), dev, o)
	if err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(maxRun, func() { once.Do(func() { close(stop) }) })
	w.run(l, h, seed, stop)
	timer.Stop()
	l.Close()
	once.Do(func() {}) // after is settled
	return after
}

// crashOpts is a small log that wraps around often.
func crashOpts() Options {
	o := testOpts()
	o.MaxBatchBytes = 8 << 10
	return o
}

const crashDevBytes = regionOff + 96<<10

// TestCrashPoints cuts power at every crash point of the commit and trim
// protocols under a concurrent workload, then checks the recovered log.
func TestCrashPoints(t *testing.T) {
	seeds := 4
	if *long {
		seeds = 100
	}
	for _, point := range CrashPoints {
		if !workloadPoint(point) {
			continue // TestCrashFormat, TestCrashOpen
		}
		t.Run(point, func(t *testing.T) {
			for s := range seeds {
				seed := uint64(s)*1000 + uint64(len(point))
				rng := rand.New(rand.NewPCG(seed, 1))
				k := 1 + rng.IntN(6)
				w := randomWorkload(rng, 8, 12<<10)
				h := newHistory()
				dev := newCrashDev(t, crashDevBytes, seed)
				if err := Format(context.Background(), dev, crashOpts()); err != nil {
					t.Fatal(err)
				}
				after := crashAt(t, dev, crashOpts(), w, point, rng.IntN(400), k, seed, h, 5*time.Second)
				if after == nil {
					t.Fatalf("seed %d: point %s not reached %d times", seed, point, k)
				}
				l := h.verify(t, after, crashOpts())
				l.Close()
			}
		})
	}
}

// TestCrashRandom cuts power at a random point after a random number of
// hits, over many seeds, twice in a row on the same device.
func TestCrashRandom(t *testing.T) {
	seeds := 20
	if *long {
		seeds = 2000
	}
	points := slices.DeleteFunc(slices.Clone(CrashPoints), func(p string) bool { return !workloadPoint(p) })
	for s := range seeds {
		seed := uint64(s) + 77
		rng := rand.New(rand.NewPCG(seed, 2))
		w := randomWorkload(rng, 16, 20<<10)
		h := newHistory()
		o := crashOpts()
		if rng.IntN(4) == 0 {
			o.MaxDelay = time.Duration(1+rng.IntN(200)) * time.Microsecond
		}
		var dev crashable = newCrashDev(t, crashDevBytes, seed)
		if err := Format(context.Background(), dev, o); err != nil {
			t.Fatal(err)
		}
		for round := range 2 {
			point := points[rng.IntN(len(points))]
			after := crashAt(t, dev, o, w, point, rng.IntN(600), 1+rng.IntN(20), seed+uint64(round)<<32, h, time.Second)
			if after == nil {
				after = dev // not reached: a clean shutdown, checked the same way
			}
			l := h.verify(t, after, o)
			l.Close()
			dev = after
		}
	}
}

// TestCrashFormat cuts power after Format's first superblock copy is
// durable, over a device that holds an old log: Open must find the new,
// empty log, never the old one and never nothing.
func TestCrashFormat(t *testing.T) {
	ctx := context.Background()
	for seed := range uint64(8) {
		dev := newCrashDev(t, crashDevBytes, seed)
		old := crashOpts()
		if err := Format(ctx, dev, old); err != nil {
			t.Fatal(err)
		}
		l, err := Open(ctx, dev, old)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 10 + int(seed)*7 {
			if _, err := l.Commit(ctx, payload(uint64(i), 500)); err != nil {
				t.Fatal(err)
			}
			if i%4 == 3 {
				if err := l.Trim(ctx, l.DurableSeq()-1); err != nil { // several superblock generations
					t.Fatal(err)
				}
			}
		}
		l.Close()
		var after crashable
		o := crashOpts()
		o.UUID[15] ^= 0xff // another array takes the device over
		o.Force = true
		o.FirstSeq = 500
		o.CrashHook = func(p string) {
			if p == CrashFormatFirstCopy && after == nil {
				after = dev.cut(t)
			}
		}
		if err := Format(ctx, dev, o); err == nil {
			t.Fatal("format survived the power cut")
		}
		if after == nil {
			t.Fatal("crash point not reached")
		}
		if _, err := Open(ctx, after, old); !errors.Is(err, ErrIdentity) {
			t.Fatalf("seed %d: open as the old array: %v, want ErrIdentity", seed, err)
		}
		o.CrashHook = nil
		l, err = Open(ctx, after, o)
		if err != nil {
			t.Fatalf("seed %d: open the new log: %v", seed, err)
		}
		if got := replayAll(t, l); len(got) != 0 {
			t.Fatalf("seed %d: new log replays %d entries", seed, len(got))
		}
		if seq, err := l.Commit(ctx, payload(1, 10)); err != nil || seq != 500 {
			t.Fatalf("seed %d: first commit: seq %d err %v", seed, seq, err)
		}
		l.Close()
	}
}

// workloadPoint says whether a crash point is reached while a workload
// runs (not in Format or Open).
func workloadPoint(p string) bool {
	return p != CrashFormatFirstCopy && p != CrashOpenTailCleared && p != CrashOpenSessionWritten
}

// TestCrashOpen cuts power during recovery itself (after Open cleared the
// tail, or wrote the superblock of its session, before the sync),
// following a first cut in mid-workload.
func TestCrashOpen(t *testing.T) {
	seeds := 6
	if *long {
		seeds = 200
	}
	points := slices.DeleteFunc(slices.Clone(CrashPoints), func(p string) bool { return !workloadPoint(p) })
	openPoints := []string{CrashOpenTailCleared, CrashOpenSessionWritten}
	for s := range seeds {
		seed := uint64(s) + 5000
		rng := rand.New(rand.NewPCG(seed, 4))
		h := newHistory()
		dev := newCrashDev(t, crashDevBytes, seed)
		if err := Format(context.Background(), dev, crashOpts()); err != nil {
			t.Fatal(err)
		}
		point := points[rng.IntN(len(points))]
		after := crashAt(t, dev, crashOpts(), randomWorkload(rng, 8, 12<<10), point, rng.IntN(300), 1+rng.IntN(5), seed, h, time.Second)
		if after == nil {
			after = dev
		}
		var again crashable
		o := crashOpts()
		openPoint := openPoints[s%len(openPoints)]
		o.CrashHook = func(p string) {
			if p == openPoint {
				again = after.cut(t)
			}
		}
		if _, err := Open(context.Background(), after, o); err == nil {
			t.Fatal("open survived the power cut")
		}
		if again == nil {
			t.Fatal("crash point not reached")
		}
		l := h.verify(t, again, crashOpts())
		l.Close()
	}
}
