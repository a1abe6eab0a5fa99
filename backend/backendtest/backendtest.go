// Package backendtest is the conformance suite every backend.Device passes,
// and a small device benchmark every backend reuses.
//
// A backend's test calls Run with a Factory that opens fresh devices of its
// kind:
//
//	func TestConformance(t *testing.T) {
//		backendtest.Run(t, backendtest.Factory{
//			Open:   func(t testing.TB) backend.Device { ... },
//			Reopen: func(t testing.TB, old backend.Device) backend.Device { ... },
//		})
//	}
//
// Run checks the contracts of package backend: read-your-writes at many
// offsets and sizes, alignment and range errors (with their error classes),
// zero-length I/O, concurrent I/O to disjoint ranges, Sync, Discard,
// persistence across Close and reopen, use after Close, and, for devices
// that can simulate it, what survives a power cut. Run it under -race.
//
// The suite assumes nothing about a fresh device's contents: it checks only
// blocks it has written. Data is a pattern unique to (offset, write), so a
// mismatch report says which write's data, from which offset, a block holds.
package backendtest

import (
	"context"
	"errors"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/shalestore/shale/backend"
)

// MinSize is the smallest device Run accepts. Every case runs on any device
// of at least MinSize; the suite uses at most the first and last 8 MiB, so
// 16 MiB devices exercise it fully and larger ones add nothing but time.
const MinSize = 1 << 20

// Factory opens the devices Run tests. Open is required; a nil Reopen or
// PowerLoss skips the cases that need it (with a message under -v).
//
// Every device a Factory returns belongs to the suite, which closes it
// (ignoring ErrClosed) when its subtest ends, except a device it hands back
// to Reopen or PowerLoss, which then owns it.
type Factory struct {
	// Open returns a newly created device: its own storage, not shared with
	// any other device Open returned. It calls t.Fatal if it cannot. The
	// contents of a fresh device are unspecified.
	Open func(t testing.TB) backend.Device

	// Reopen closes old (checking that Close succeeds) and opens the same
	// storage again, returning the new device. Persistence is tested through
	// it: what was written and synced before must read back after.
	Reopen func(t testing.TB, old backend.Device) backend.Device

	// PowerLoss simulates a power cut on dev: every write that returned
	// before the last Sync returned must survive; writes since may survive,
	// vanish, or survive in part (some aligned blocks of a write and not
	// others), but a block nobody wrote since the last Sync keeps its synced
	// data. It returns the device as it comes back, ready for I/O; dev is
	// not used again. Only simulated devices provide it.
	PowerLoss func(t testing.TB, dev backend.Device) backend.Device

	// PowerLossCorruptsUnsynced loosens the power-loss check for blocks
	// written since the last Sync: they may then hold any data, or fail to
	// read with ErrCorrupt (a flash page torn mid-program), where otherwise
	// each must hold its synced data or one of the writes since, whole.
	// Blocks not written since the last Sync are checked exactly either way.
	PowerLossCorruptsUnsynced bool

	// NeedsAlignedBuffers says the device refuses buffers whose address is
	// not a multiple of Alignment() (direct I/O). The suite then checks that
	// such buffers are refused with ErrMisaligned; otherwise it checks that
	// they work.
	NeedsAlignedBuffers bool
}

// testCase is one conformance check, run as a subtest on a fresh device.
type testCase struct {
	name string
	// needs lists what the case requires of the Factory: "reopen",
	// "powerloss".
	needs string
	run   func(h *harness)
}

// cases is the whole suite, in the order it runs.
var cases = []testCase{
	{name: "Geometry", run: testGeometry},
	{name: "ReadYourWrites", run: testReadYourWrites},
	{name: "Misaligned", run: testMisaligned},
	{name: "BufferAddress", run: testBufferAddress},
	{name: "OutOfRange", run: testOutOfRange},
	{name: "ZeroLength", run: testZeroLength},
	{name: "Concurrent", run: testConcurrent},
	{name: "Sync", run: testSync},
	{name: "Discard", run: testDiscard},
	{name: "DiscardRange", run: testDiscardRange},
	{name: "CanceledContext", run: testCanceledContext},
	{name: "Closed", run: testClosed},
	{name: "Reopen", needs: "reopen", run: testReopen},
	{name: "PowerLoss/SyncedSurvives", needs: "powerloss", run: testPowerLossRounds},
	{name: "PowerLoss/ConcurrentWritersThenSync", needs: "powerloss", run: testPowerLossConcurrent},
	{name: "PowerLoss/NothingPending", needs: "powerloss", run: testPowerLossNothingPending},
}

// Run runs the conformance suite against devices from f, one fresh device
// per subtest. Subtests run one after another (the suite's own concurrency
// is inside them), so a Factory needs no locking.
func Run(t *testing.T, f Factory) {
	if f.Open == nil {
		t.Fatal("backendtest: Factory.Open is nil")
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			switch {
			case c.needs == "reopen" && f.Reopen == nil:
				t.Skip("Factory.Reopen is nil")
			case c.needs == "powerloss" && f.PowerLoss == nil:
				t.Skip("Factory.PowerLoss is nil: the device cannot simulate power loss")
			}
			h := newHarness(t, f)
			c.run(h)
		})
	}
}

// harness holds one subtest's device, model and generation counter.
type harness struct {
	t     *testing.T
	f     Factory
	ctx   context.Context
	dev   backend.Device
	m     *model
	gen   atomic.Uint32
	align int64
	size  int64
	rng   *rand.Rand
}

func newHarness(t *testing.T, f Factory) *harness {
	h := &harness{t: t, f: f, ctx: t.Context()}
	h.dev = f.Open(t)
	if h.dev == nil {
		t.Fatal("Factory.Open returned a nil device")
	}
	t.Cleanup(func() {
		if h.dev != nil {
			if err := h.dev.Close(); err != nil && !errors.Is(err, backend.ErrClosed) {
				t.Errorf("Close at end of test: %v", err)
			}
		}
	})
	h.align = int64(h.dev.Alignment())
	h.size = h.dev.Size()
	if h.align < 512 || h.align > backend.MaxAlignment || h.align&(h.align-1) != 0 {
		t.Fatalf("Alignment() = %d: want a power of two in [512, %d]", h.align, backend.MaxAlignment)
	}
	if h.size < MinSize || h.size%h.align != 0 {
		t.Fatalf("Size() = %d: want a multiple of Alignment() %d, at least %d", h.size, h.align, MinSize)
	}
	h.m = newModel(int(h.align))
	h.m.gen = &h.gen
	// Seeded per subtest so a failure repeats.
	name := fnv.New64a()
	name.Write([]byte(t.Name()))
	h.rng = rand.New(rand.NewPCG(name.Sum64(), 0x5eed))
	return h
}

func (h *harness) nextGen() uint32 { return h.gen.Add(1) }

// write writes a fresh generation over [off, off+n), records it in the
// model and returns the generation.
func (h *harness) write(off, n int64) uint32 {
	h.t.Helper()
	g := h.nextGen()
	buf := backend.AlignedBuffer(int(n))
	fill(buf, off, g)
	if err := h.dev.WriteAt(h.ctx, buf, off); err != nil {
		h.t.Fatalf("WriteAt(%d bytes at %d): %v", n, off, err)
	}
	h.m.wrote(off, n, g)
	return g
}

// readCheck reads [off, off+n) into a buffer pre-filled with junk (so a
// read that returns nothing is caught) and compares it with the model.
func (h *harness) readCheck(off, n int64) {
	h.t.Helper()
	buf := backend.AlignedBuffer(int(n))
	for i := range buf {
		buf[i] = 0xa5
	}
	if err := h.dev.ReadAt(h.ctx, buf, off); err != nil {
		h.t.Fatalf("ReadAt(%d bytes at %d): %v", n, off, err)
	}
	for b := off / h.align; b < (off+n)/h.align; b++ {
		g, ok := h.m.cur[b]
		if !ok || g == genAny {
			continue
		}
		p := buf[b*h.align-off : (b+1)*h.align-off]
		if !holds(p, b*h.align, g) {
			h.t.Fatalf("ReadAt(%d bytes at %d): block at %d: want generation %d, have %s",
				n, off, b*h.align, g, describe(p, b*h.align, []uint32{g}, h.gen.Load()))
		}
	}
}

// sync calls Sync and records it in the model.
func (h *harness) sync() {
	h.t.Helper()
	if err := h.dev.Sync(h.ctx); err != nil {
		h.t.Fatalf("Sync: %v", err)
	}
	h.m.synced()
}

// checkAll compares every block the model knows with the device.
func (h *harness) checkAll() {
	h.t.Helper()
	if err := h.m.check(h.ctx, h.dev); err != nil {
		h.t.Fatal(err)
	}
}

// reopen replaces the device with Factory.Reopen's and checks that its
// geometry did not change.
func (h *harness) reopen() {
	h.t.Helper()
	old := h.dev
	h.dev = nil // Reopen owns it now
	h.dev = h.f.Reopen(h.t, old)
	h.checkSameGeometry("Reopen", old)
}

// powerLoss replaces the device with Factory.PowerLoss's.
func (h *harness) powerLoss() {
	h.t.Helper()
	old := h.dev
	h.dev = nil
	h.dev = h.f.PowerLoss(h.t, old)
	h.checkSameGeometry("PowerLoss", old)
}

func (h *harness) checkSameGeometry(what string, old backend.Device) {
	h.t.Helper()
	if h.dev == nil {
		h.t.Fatalf("%s returned a nil device", what)
	}
	if h.dev.Size() != h.size || int64(h.dev.Alignment()) != h.align || h.dev.Kind() != old.Kind() {
		h.t.Fatalf("after %s: size %d alignment %d kind %v, before: size %d alignment %d kind %v", what,
			h.dev.Size(), h.dev.Alignment(), h.dev.Kind(), h.size, h.align, old.Kind())
	}
}

// windows returns the byte ranges the random tests use: the first and last
// few MiB of the device (they overlap on small devices, which is fine).
func (h *harness) windows(n int64) [][2]int64 {
	n = min(n, h.size)
	return [][2]int64{{0, n}, {h.size - n, n}}
}

// randRange picks a random aligned range of 1..maxBlocks blocks inside w.
func (h *harness) randRange(w [2]int64, maxBlocks int64) (off, n int64) {
	blocks := w[1] / h.align
	nb := 1 + h.rng.Int64N(min(maxBlocks, blocks))
	ob := h.rng.Int64N(blocks - nb + 1)
	return w[0] + ob*h.align, nb * h.align
}

// maxAlignedInt64 is the largest int64 that is a multiple of every
// alignment: offsets near it overflow when a length is added.
const maxAlignedInt64 = math.MaxInt64 &^ (backend.MaxAlignment - 1)

// wantErr fails the test unless err is in one of the classes.
func wantErr(t *testing.T, what string, err error, classes ...error) {
	t.Helper()
	for _, c := range classes {
		if errors.Is(err, c) {
			return
		}
	}
	t.Errorf("%s: got error %v, want one of %v", what, err, classes)
}

// parallel runs fn(0..n-1) in n goroutines and waits for them.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { fn(i) })
	}
	wg.Wait()
}
