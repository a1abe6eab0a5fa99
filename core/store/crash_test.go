package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/shalestore/shale/backend"
	"github.com/shalestore/shale/core/nvlog"
	"github.com/shalestore/shale/core/segment"
)

var long = flag.Bool("long", false, "run the long crash and model soak")

// The crash harness plays a small engine on the store: a "write" appends a
// cblock and commits (address, payload) to NVRAM, acknowledged when the
// commit returns; a "record" appends a log record, acknowledged when a
// Flush covering it returns; flushes trim NVRAM; checkpoints store the
// acknowledged records in a root (as pyramids will store patches). Facts
// are the records and the NVRAM entries. After a power loss at a crash
// point, recovery must find every acknowledged fact, and every fact it
// finds must be one that was attempted, byte for byte.

type wfact struct {
	seq  uint64
	addr segment.Addr
	data []byte
}

type rfact struct {
	addr segment.Addr
	lay  segment.Layout
	data []byte
}

type harness struct {
	t   *testing.T
	rng *rand.Rand
	a   *array
	s   *Store

	// attempted: every item ever appended, by address (addresses are
	// unique for the array's life, restores reuse them with equal bytes).
	attempted map[segment.Addr][]byte

	mu           sync.Mutex
	ackedW       []wfact
	flushedW     int // ackedW[:flushedW] are in durable segios
	ackedR       []rfact
	pendingR     []rfact // appended, flush not yet returned
	lastSeq      uint64
	crashPoint   string
	crashNth     int
	crashCount   int
	crashed      *array
	snapW        []wfact
	snapR        []rfact
	armed        bool
	reached      map[string]int
	seg          segment.Geometry
	ops, crashes int
	// gate, if set, holds segio N's syncs until segio N+1 is written,
	// then cuts power (TestCrashWhileSyncing).
	gate *syncGate
	// appendOnly restricts step to writes and records: nothing waits for
	// a segio to be durable.
	appendOnly bool
}

func (h *harness) devs() []backend.Device {
	ds := h.a.devs()
	if h.gate != nil {
		for i, d := range ds {
			ds[i] = gatedSync{d, h.gate}
		}
	}
	return ds
}

func newHarness(t *testing.T, seed uint64) *harness {
	h := &harness{t: t, rng: rand.New(rand.NewPCG(seed, 77)), attempted: map[segment.Addr][]byte{}, reached: map[string]int{}}
	h.a = newArray(t, 7, 3<<20, int64(seed))
	return h
}

func (h *harness) options() Options {
	o := testOptions()
	o.CrashHook = h.hook
	return o
}

// hook captures the power-loss image at the armed crash point.
func (h *harness) hook(p string) {
	if h.gate != nil && h.gate.point(p) {
		h.mu.Lock()
		h.reached[p]++
		h.cutPowerLocked()
		h.mu.Unlock()
		h.gate.cut()
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reached[p]++
	if !h.armed || h.crashed != nil || p != h.crashPoint {
		return
	}
	h.crashCount++
	if h.crashCount < h.crashNth {
		return
	}
	h.cutPowerLocked()
}

// cutPowerLocked cuts power to the whole array and keeps the facts
// acknowledged so far. REQUIRES: h.mu held.
func (h *harness) cutPowerLocked() {
	if h.crashed != nil {
		return
	}
	h.crashed = h.a.powerLoss(h.t)
	h.snapW = slices.Clone(h.ackedW)
	h.snapR = slices.Clone(h.ackedR)
}

func (h *harness) isCrashed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.crashed != nil
}

func (h *harness) payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(h.rng.Uint32())
	}
	return b
}

func encodeEntry(a segment.Addr, p []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(a.Segment))
	b = binary.LittleEndian.AppendUint64(b, uint64(a.Offset))
	b = binary.LittleEndian.AppendUint32(b, uint32(a.Length))
	return append(b, p...)
}

func decodeEntry(b []byte) (segment.Addr, []byte, error) {
	if len(b) < 20 {
		return segment.Addr{}, nil, fmt.Errorf("entry of %d bytes", len(b))
	}
	a := segment.Addr{Segment: segment.ID(binary.LittleEndian.Uint64(b)), Offset: int64(binary.LittleEndian.Uint64(b[8:])), Length: int32(binary.LittleEndian.Uint32(b[16:]))}
	if int(a.Length) != len(b)-20 {
		return a, nil, fmt.Errorf("entry length %d, payload %d", a.Length, len(b)-20)
	}
	return a, b[20:], nil
}

// encodeRoots stores the acknowledged records (address and layout).
func encodeRoots(rs []rfact) map[string][]byte {
	var b []byte
	le := binary.LittleEndian
	for _, r := range rs {
		b = le.AppendUint64(b, uint64(r.addr.Segment))
		b = le.AppendUint64(b, uint64(r.addr.Offset))
		b = le.AppendUint32(b, uint32(r.addr.Length))
		b = le.AppendUint32(b, uint32(len(r.lay.Members)))
		for _, m := range r.lay.Members {
			b = le.AppendUint32(b, uint32(m.Drive))
			b = le.AppendUint32(b, uint32(m.AU))
		}
	}
	return map[string][]byte{"records": b}
}

func decodeRoots(roots map[string][]byte) []rfact {
	b := roots["records"]
	le := binary.LittleEndian
	var out []rfact
	for len(b) > 0 {
		r := rfact{addr: segment.Addr{Segment: segment.ID(le.Uint64(b)), Offset: int64(le.Uint64(b[8:])), Length: int32(le.Uint32(b[16:]))}}
		n := int(le.Uint32(b[20:]))
		b = b[24:]
		r.lay.Segment = r.addr.Segment
		for range n {
			r.lay.Members = append(r.lay.Members, segment.Member{Drive: int(le.Uint32(b)), AU: int64(le.Uint32(b[4:]))})
			b = b[8:]
		}
		out = append(out, r)
	}
	return out
}

// segmentTable encodes the layouts of every segment holding an
// acknowledged write: the engine's segment table, persisted with the roots.
// REQUIRES: h.mu held.
func (h *harness) segmentTable() []byte {
	seen := map[segment.ID]bool{}
	var rs []rfact
	for _, w := range h.ackedW {
		if seen[w.addr.Segment] {
			continue
		}
		seen[w.addr.Segment] = true
		lay, ok := h.s.Layout(w.addr.Segment)
		if !ok {
			h.t.Fatalf("no layout for segment %d", w.addr.Segment)
		}
		rs = append(rs, rfact{addr: segment.Addr{Segment: lay.Segment}, lay: lay})
	}
	return encodeRoots(rs)["records"]
}

// step runs one random operation; it returns false once the crash
// happened (operations then fail, as on a dead machine).
func (h *harness) step(ctx context.Context) bool {
	h.ops++
	s := h.s
	ops := 100
	if h.appendOnly {
		ops = 70
	}
	switch x := h.rng.IntN(ops); {
	case x < 60: // write
		p := h.payload(1 + h.rng.IntN(5000))
		a, err := s.Append(ctx, segment.Cblock, 0, 0, p)
		if err != nil {
			return h.failed("append", err)
		}
		h.attempted[a] = p
		seq, err := s.Log().Commit(ctx, encodeEntry(a, p))
		if err != nil {
			return h.failed("commit", err)
		}
		h.mu.Lock()
		h.ackedW = append(h.ackedW, wfact{seq, a, p})
		h.lastSeq = seq
		h.mu.Unlock()
	case x < 70: // record (WAL: its seqs are durable in NVRAM)
		h.mu.Lock()
		seq := h.lastSeq
		nrec := len(h.ackedR) + len(h.pendingR)
		h.mu.Unlock()
		if nrec > 300 {
			return true
		}
		p := h.payload(1 + h.rng.IntN(3000))
		a, err := s.Append(ctx, segment.Record, seq, seq, p)
		if err != nil {
			return h.failed("append record", err)
		}
		lay, _ := s.Layout(a.Segment)
		h.attempted[a] = p
		h.mu.Lock()
		h.pendingR = append(h.pendingR, rfact{a, lay, p})
		h.mu.Unlock()
	case x < 80: // read back an acknowledged write already flushed (the
		// engine serves unflushed ones from its DRAM copy)
		h.mu.Lock()
		var w wfact
		if h.flushedW > 0 {
			w = h.ackedW[h.rng.IntN(h.flushedW)]
		}
		h.mu.Unlock()
		if w.data == nil {
			return true
		}
		buf := make([]byte, len(w.data))
		if _, err := s.Read(ctx, w.addr, buf); err != nil {
			return h.failed("read", err)
		}
		if !bytes.Equal(buf, w.data) {
			h.t.Fatalf("read of acknowledged %v returned wrong data", w.addr)
		}
	case x < 95: // flush, then trim NVRAM past what the flush made durable
		return h.flush(ctx)
	default: // checkpoint: flush, then persist roots covering all records
		h.mu.Lock()
		pend := h.pendingR
		h.mu.Unlock()
		if err := s.Flush(ctx); err != nil {
			return h.failed("flush", err)
		}
		h.mu.Lock()
		h.ackedR = append(h.ackedR, pend...)
		h.pendingR = h.pendingR[len(pend):]
		roots := encodeRoots(h.ackedR)
		roots["segments"] = h.segmentTable()
		h.mu.Unlock()
		if err := s.Checkpoint(ctx, roots); err != nil {
			return h.failed("checkpoint", err)
		}
	}
	return !h.isCrashed()
}

// flush makes everything appended durable, then trims NVRAM past it.
func (h *harness) flush(ctx context.Context) bool {
	s := h.s
	h.mu.Lock()
	upTo := h.lastSeq
	pend := h.pendingR
	nw := len(h.ackedW)
	h.mu.Unlock()
	if err := s.Flush(ctx); err != nil {
		return h.failed("flush", err)
	}
	h.mu.Lock()
	h.flushedW = nw
	h.ackedR = append(h.ackedR, pend...)
	h.pendingR = h.pendingR[len(pend):]
	h.mu.Unlock()
	if err := s.Log().Trim(ctx, upTo); err != nil {
		return h.failed("trim", err)
	}
	return !h.isCrashed()
}

func (h *harness) failed(op string, err error) bool {
	if h.isCrashed() {
		return false
	}
	h.t.Fatalf("%s failed without a crash: %v", op, err)
	return false
}

// recover opens the crashed image (optionally crashing again inside
// recovery at point), replays NVRAM, restores, and checks every fact.
func (h *harness) recover(ctx context.Context, recoverPoint string) *Recovery {
	t := h.t
	_ = h.s.Close(ctx) // the old incarnation; its devices are dead
	h.mu.Lock()
	h.a, h.crashed = h.crashed, nil
	ackedW, ackedR := h.snapW, h.snapR
	h.ackedW, h.ackedR, h.pendingR = ackedW, ackedR, nil
	h.flushedW = len(ackedW) // after EndRestore, all of them
	h.crashPoint, h.crashNth, h.crashCount = recoverPoint, 1, 0
	h.armed = recoverPoint != ""
	h.mu.Unlock()
	h.crashes++

	s, rec, err := Open(ctx, h.devs(), h.a.nvram, h.options())
	if h.isCrashed() {
		// Crashed inside recovery: nothing was acknowledged meanwhile.
		if s != nil {
			_ = s.Close(ctx)
		}
		h.mu.Lock()
		h.a, h.crashed, h.armed = h.crashed, nil, false
		h.mu.Unlock()
		s, rec, err = Open(ctx, h.devs(), h.a.nvram, h.options())
	}
	if err != nil {
		t.Fatalf("recovery: %v", err)
	}
	h.s = s
	h.mu.Lock()
	h.armed = false
	h.mu.Unlock()

	// Facts: records from the roots and from the frontier scan.
	found := map[segment.Addr][]byte{}
	readRecord := func(a segment.Addr) {
		buf := make([]byte, a.Length)
		if _, err := s.Read(ctx, a, buf); err != nil {
			t.Fatalf("recovered record %v unreadable: %v", a, err)
		}
		found[a] = buf
	}
	for _, r := range decodeRoots(map[string][]byte{"records": rec.Roots["segments"]}) {
		if err := s.AddLayout(r.lay); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range decodeRoots(rec.Roots) {
		if err := s.AddLayout(r.lay); err != nil {
			t.Fatal(err)
		}
		readRecord(r.addr)
	}
	for _, r := range rec.Records {
		readRecord(r.Addr)
	}
	// NVRAM: replay and restore.
	var maxSeq uint64
	replayed := map[segment.Addr]bool{}
	err = s.Replay(ctx, func(seq uint64, e []byte) error {
		a, p, err := decodeEntry(e)
		if err != nil {
			return err
		}
		want, ok := h.attempted[a]
		if !ok || !bytes.Equal(want, p) {
			t.Fatalf("NVRAM entry %d names %v with bytes never written there", seq, a)
		}
		replayed[a] = true
		maxSeq = max(maxSeq, seq)
		return s.Restore(a, segment.Cblock, 0, 0, p)
	})
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	if err := s.EndRestore(ctx); err != nil {
		t.Fatalf("end restore: %v", err)
	}
	// Nothing corrupt: every found record is one attempted, byte for byte.
	for a, p := range found {
		if want, ok := h.attempted[a]; !ok || !bytes.Equal(want, p) {
			t.Fatalf("recovered record %v was never written with these bytes", a)
		}
	}
	// Nothing acknowledged missing.
	for _, r := range ackedR {
		if _, ok := found[r.addr]; !ok {
			t.Fatalf("acknowledged record %v not recovered (crash at %s)", r.addr, h.crashPoint)
		}
	}
	for _, w := range ackedW {
		buf := make([]byte, len(w.data))
		if _, err := s.Read(ctx, w.addr, buf); err != nil {
			t.Fatalf("acknowledged write seq %d at %v unreadable after recovery: %v", w.seq, w.addr, err)
		}
		if !bytes.Equal(buf, w.data) {
			t.Fatalf("acknowledged write seq %d at %v reads back wrong after recovery (replayed %v)", w.seq, w.addr, replayed[w.addr])
		}
	}
	// Everything replayed is now durable in segments: trim it.
	if maxSeq > 0 {
		if err := s.Log().Trim(ctx, maxSeq); err != nil {
			t.Fatalf("trim after recovery: %v", err)
		}
	}
	// Records found only by the scan are durable facts: keep them.
	h.mu.Lock()
	known := map[segment.Addr]bool{}
	for _, r := range h.ackedR {
		known[r.addr] = true
	}
	for _, r := range rec.Records {
		if !known[r.Addr] {
			lay, _ := s.Layout(r.Addr.Segment)
			h.ackedR = append(h.ackedR, rfact{r.Addr, lay, found[r.Addr]})
		}
	}
	h.lastSeq = max(h.lastSeq, maxSeq)
	h.mu.Unlock()
	return rec
}

func (h *harness) arm(point string, nth int) {
	h.mu.Lock()
	h.crashPoint, h.crashNth, h.crashCount, h.armed = point, nth, 0, true
	h.mu.Unlock()
}

func (h *harness) create(ctx context.Context) {
	s, err := Create(ctx, h.devs(), h.a.nvram, h.options())
	if err != nil {
		h.t.Fatal(err)
	}
	h.s = s
}

// runUntilCrash runs up to maxOps operations or until the armed crash.
func (h *harness) runUntilCrash(ctx context.Context, maxOps int) bool {
	for range maxOps {
		if !h.step(ctx) {
			return true
		}
	}
	return h.isCrashed()
}

// workloadPoints are the crash points reached during normal operation.
var workloadPoints = []string{
	segment.PointSegioSealed, segment.PointSegioEncoded, segment.PointUnitWritten, segment.PointSegioWritten,
	segment.PointSegioSynced, segment.PointSegioReported,
	PointRefillPlanned, PointFrontierPersisted, PointCheckpointed,
	"boot.encoded", "boot.copy-written", "boot.written",
	"batch-sealed", "batch-written", "batch-synced", "batch-acked",
	"superblock-written", "superblock-synced", "trim-applied",
}

// TestCrashPoints cuts power at every crash point of the commit, flush,
// boot, frontier and allocator protocols (at the 1st, 2nd and 7th time it
// is reached), recovers, and checks the facts; then crashes once more
// inside recovery at each recovery point.
func TestCrashPoints(t *testing.T) {
	ctx := context.Background()
	nths := []int{1, 2, 7}
	if testing.Short() {
		nths = []int{2}
	}
	for _, p := range workloadPoints {
		for _, nth := range nths {
			t.Run(fmt.Sprintf("%s/%d", p, nth), func(t *testing.T) {
				h := newHarness(t, uint64(len(p)*31+nth))
				h.create(ctx)
				h.arm(p, nth)
				if !h.runUntilCrash(ctx, 1500) {
					t.Fatalf("crash point %s not reached %d times in 1500 operations (reached %d)", p, nth, h.reached[p])
				}
				h.recover(ctx, "")
				// Carry on after recovery, then a clean check again.
				h.arm("", 0)
				h.runUntilCrash(ctx, 60)
				h.arm(segment.PointSegioSynced, 1)
				if h.runUntilCrash(ctx, 400) {
					h.recover(ctx, "")
				}
				if err := h.s.Close(ctx); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
	for _, p := range []string{PointRecoverScanned, PointRecoverMounted, "boot.copy-written", nvlog.CrashOpenTailCleared, nvlog.CrashOpenSessionWritten} {
		t.Run("recovery/"+p, func(t *testing.T) {
			h := newHarness(t, uint64(len(p)))
			h.create(ctx)
			h.arm(segment.PointUnitWritten, 5)
			if !h.runUntilCrash(ctx, 400) {
				t.Fatal("first crash not reached")
			}
			h.recover(ctx, p)
			h.runUntilCrash(ctx, 50)
			_ = h.s.Close(ctx)
		})
	}
}

// TestModel runs random operations with power losses at random crash
// points, many cycles on one array, checking after every recovery that the
// store holds exactly the model's acknowledged facts.
func TestModel(t *testing.T) {
	ctx := context.Background()
	seeds := 3
	cycles := 6
	if *long {
		seeds, cycles = 20, 25
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			h := newHarness(t, 1000+seed)
			h.create(ctx)
			for range cycles {
				p := workloadPoints[h.rng.IntN(len(workloadPoints))]
				h.arm(p, 1+h.rng.IntN(5))
				if h.runUntilCrash(ctx, 300) {
					rp := ""
					if h.rng.IntN(4) == 0 {
						rp = PointRecoverScanned
					}
					h.recover(ctx, rp)
				}
			}
			_ = h.s.Close(ctx)
			t.Logf("%d ops, %d crashes, %d acknowledged writes, %d records", h.ops, h.crashes, len(h.ackedW), len(h.ackedR))
		})
	}
}
