package backendtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/shalestore/shale/backend"
)

// memDev is a plain in-memory Device that keeps the contracts, with
// optional bugs (mutants) to prove that the suite catches them. Its power
// loss keeps synced data and keeps or drops each block written since the
// last Sync at random.
type memDev struct {
	align int
	bug   string
	mu    sync.Mutex
	// Guarded by mu.
	data    []byte
	durable []byte
	dirty   map[int64]bool
	corrupt map[int64]bool // blocks that fail reads with ErrCorrupt until written
	closed  bool
}

func newMem(size, align int, bug string) *memDev {
	return &memDev{align: align, bug: bug, data: make([]byte, size), durable: make([]byte, size), dirty: map[int64]bool{}, corrupt: map[int64]bool{}}
}

func (d *memDev) check(buf []byte, off, n int64) error {
	if d.closed && d.bug != "closedWorks" {
		return backend.ErrClosed
	}
	if d.bug == "noRangeCheck" && off >= 0 && off%int64(d.align) == 0 && n%int64(d.align) == 0 {
		return nil
	}
	if err := backend.CheckRange(off, n, int64(len(d.data)), d.align); err != nil {
		return err
	}
	if d.bug != "acceptUnalignedBuf" && buf != nil && !backend.IsAligned(buf, d.align) && d.bug != "" {
		// Mutant tests run with NeedsAlignedBuffers.
		return fmt.Errorf("buffer: %w", backend.ErrMisaligned)
	}
	return nil
}

func (d *memDev) ReadAt(ctx context.Context, buf []byte, off int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(buf, off, int64(len(buf))); err != nil {
		return err
	}
	if d.bug == "readNothing" && len(buf) > d.align {
		return nil
	}
	for b := off / int64(d.align); b < (off+int64(len(buf)))/int64(d.align); b++ {
		if d.corrupt[b] {
			return fmt.Errorf("block %d: %w", b, backend.ErrCorrupt)
		}
	}
	end := min(off+int64(len(buf)), int64(len(d.data)))
	if off < end {
		copy(buf, d.data[off:end])
	}
	return nil
}

func (d *memDev) WriteAt(ctx context.Context, buf []byte, off int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(buf, off, int64(len(buf))); err != nil {
		return err
	}
	if d.bug == "shiftWrite" && len(buf) > 4*d.align {
		off += int64(d.align)
	}
	end := min(off+int64(len(buf)), int64(len(d.data)))
	if off < end {
		copy(d.data[off:end], buf)
	}
	for b := off / int64(d.align); b < end/int64(d.align); b++ {
		d.dirty[b] = true
		delete(d.corrupt, b)
	}
	return nil
}

func (d *memDev) Sync(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed && d.bug != "closedWorks" {
		return backend.ErrClosed
	}
	a := int64(d.align)
	for b := range d.dirty {
		copy(d.durable[b*a:(b+1)*a], d.data[b*a:])
	}
	clear(d.dirty)
	return nil
}

func (d *memDev) Discard(ctx context.Context, off, n int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(nil, off, n); err != nil {
		return err
	}
	if d.bug == "discardSpill" && n > 0 {
		n += int64(d.align)
		n = min(n, int64(len(d.data))-off)
	}
	end := min(off+n, int64(len(d.data)))
	if off < end {
		clear(d.data[off:end])
	}
	for b := off / int64(d.align); b < end/int64(d.align); b++ {
		d.dirty[b] = true
	}
	return nil
}

func (d *memDev) Size() int64        { return int64(len(d.data)) }
func (d *memDev) Alignment() int     { return d.align }
func (d *memDev) Kind() backend.Kind { return backend.SSD }

func (d *memDev) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return backend.ErrClosed
	}
	d.closed = true
	return nil
}

// powerLoss returns the device as it comes back after a power cut.
func (d *memDev) powerLoss(rng *rand.Rand) *memDev {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := newMem(len(d.data), d.align, d.bug)
	copy(n.data, d.durable)
	a := int64(d.align)
	for b := range d.dirty {
		switch {
		case strings.HasPrefix(d.bug, "garbage"):
			for i := b * a; i < (b+1)*a; i++ {
				n.data[i] = byte(rng.Uint32())
			}
			if rng.IntN(4) == 0 {
				n.corrupt[b] = true
			}
		case d.bug == "tearInsideBlock":
			copy(n.data[b*a:b*a+a/2], d.data[b*a:])
		case rng.IntN(2) == 0:
			copy(n.data[b*a:(b+1)*a], d.data[b*a:])
		}
	}
	if strings.HasPrefix(d.bug, "loseSynced") {
		// Drop one block that was synced and not rewritten since.
		for b := int64(0); b < int64(len(d.data))/a; b++ {
			if !d.dirty[b] && rng.IntN(64) == 0 {
				clear(n.data[b*a : (b+1)*a])
				break
			}
		}
	}
	copy(n.durable, n.data)
	d.closed = true
	return n
}

func memFactory(size, align int, bug string) Factory {
	rng := rand.New(rand.NewPCG(1, 2))
	return Factory{
		Open: func(t testing.TB) backend.Device { return newMem(size, align, bug) },
		Reopen: func(t testing.TB, old backend.Device) backend.Device {
			d := old.(*memDev)
			if err := d.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			n := newMem(size, align, bug)
			copy(n.data, d.data)
			copy(n.durable, d.data)
			return n
		},
		PowerLoss: func(t testing.TB, dev backend.Device) backend.Device {
			return dev.(*memDev).powerLoss(rng)
		},
		NeedsAlignedBuffers:       bug != "",
		PowerLossCorruptsUnsynced: strings.HasSuffix(bug, "+lenient"),
	}
}

func TestMemDevice(t *testing.T) {
	for _, c := range []struct{ size, align int }{{16 << 20, 4096}, {4 << 20, 512}, {MinSize, 4096}} {
		t.Run(fmt.Sprintf("%dB-align%d", c.size, c.align), func(t *testing.T) {
			Run(t, memFactory(c.size, c.align, ""))
		})
	}
	// A device whose power cuts leave garbage, or unreadable blocks, where
	// writes were unsynced passes with PowerLossCorruptsUnsynced.
	t.Run("garbage+lenient", func(t *testing.T) { Run(t, memFactory(2<<20, 4096, "garbage+lenient")) })
}

// mutants are devices with one bug each and the subtest that must catch it.
var mutants = []struct{ bug, catcher string }{
	{"noRangeCheck", "OutOfRange"},
	{"shiftWrite", "ReadYourWrites"},
	{"closedWorks", "Closed"},
	{"loseSynced", "PowerLoss/SyncedSurvives"},
	{"tearInsideBlock", "PowerLoss/SyncedSurvives"},
	{"garbage", "PowerLoss/SyncedSurvives"},
	{"loseSynced+lenient", "PowerLoss/SyncedSurvives"},
	{"discardSpill", "Discard"},
	{"acceptUnalignedBuf", "BufferAddress"},
	{"readNothing", "ReadYourWrites"},
}

// TestSuiteCatchesBugs runs the suite on each mutant in a child process
// (a failing suite fails its test, so it cannot run in this one) and checks
// that the right subtest fails.
func TestSuiteCatchesBugs(t *testing.T) {
	if os.Getenv("BACKENDTEST_MUTANT") != "" {
		t.Skip("in a mutant child")
	}
	for _, m := range mutants {
		t.Run(m.bug, func(t *testing.T) {
			run := "^TestMutant$"
			for _, level := range strings.Split(m.catcher, "/") {
				run += "/^" + level + "$"
			}
			cmd := exec.Command(os.Args[0], "-test.run="+run, "-test.v")
			cmd.Env = append(os.Environ(), "BACKENDTEST_MUTANT="+m.bug)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("suite passed a device with bug %s (err %v):\n%s", m.bug, err, out)
			}
			if !strings.Contains(string(out), "--- FAIL: TestMutant/"+m.catcher+" ") {
				t.Errorf("bug %s: subtest %s did not fail:\n%s", m.bug, m.catcher, out)
			}
		})
	}
}

// TestMutant runs the suite on the mutant named by $BACKENDTEST_MUTANT.
func TestMutant(t *testing.T) {
	bug := os.Getenv("BACKENDTEST_MUTANT")
	if bug == "" {
		t.Skip("run by TestSuiteCatchesBugs")
	}
	Run(t, memFactory(4<<20, 4096, bug))
}

func BenchmarkMem(b *testing.B) {
	dev := newMem(64<<20, 4096, "")
	Bench(b, dev)
}
