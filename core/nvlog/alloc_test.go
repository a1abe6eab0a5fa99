package nvlog

import (
	"context"
	"runtime"
	"sync"
	"testing"

	"github.com/shalestore/shale/backend"
)

// quietDev keeps the superblock slots and discards the log region: a device
// that allocates nothing, so allocation counts are the log's own.
type quietDev struct {
	mu    sync.Mutex
	size  int64
	slots [regionOff]byte
}

func (d *quietDev) ReadAt(_ context.Context, b []byte, off int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(b)
	if off < regionOff {
		copy(b, d.slots[off:])
	}
	return nil
}

func (d *quietDev) WriteAt(_ context.Context, b []byte, off int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if off < regionOff {
		copy(d.slots[off:], b)
	}
	return nil
}

func (d *quietDev) Sync(context.Context) error                  { return nil }
func (d *quietDev) Discard(context.Context, int64, int64) error { return nil }
func (d *quietDev) Size() int64                                 { return d.size }
func (d *quietDev) Alignment() int                              { return 512 }
func (d *quietDev) Kind() backend.Kind                          { return backend.NVRAM }
func (d *quietDev) Close() error                                { return nil }

// TestCommitAllocs: in steady state Commit and CommitAsync allocate
// nothing per entry, with one committer and with many, trims included.
func TestCommitAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	ctx := context.Background()
	dev := &quietDev{size: regionOff + 1<<20}
	if err := Format(ctx, dev, testOpts()); err != nil {
		t.Fatal(err)
	}
	l, err := Open(ctx, dev, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	entry := make([]byte, 4096+200)
	trimEvery := func(seq uint64) {
		if seq%64 == 0 {
			if err := l.Trim(ctx, seq); err != nil {
				t.Fatal(err)
			}
		}
	}
	commit := func() {
		seq, err := l.Commit(ctx, entry)
		if err != nil {
			t.Fatal(err)
		}
		trimEvery(seq)
	}
	for range 1000 { // warm up: pools, queues, ack lists
		commit()
	}
	if a := testing.AllocsPerRun(2000, commit); a != 0 {
		t.Errorf("Commit: %v allocations per call", a)
	}

	var wg sync.WaitGroup
	done := func(seq uint64, err error) {
		if err != nil {
			t.Error(err)
		}
		wg.Done()
	}
	var issued int
	async := func() {
		wg.Add(1)
		l.CommitAsync(entry, done)
		if issued++; issued%64 == 0 {
			wg.Wait()
			if err := l.Trim(ctx, l.DurableSeq()); err != nil {
				t.Fatal(err)
			}
		}
	}
	for range 1000 {
		async()
	}
	wg.Wait()
	if a := testing.AllocsPerRun(2000, async); a != 0 {
		t.Errorf("CommitAsync: %v allocations per call", a)
	}
	wg.Wait()

	if a := testing.AllocsPerRun(100, func() { _ = l.Stats() }); a != 0 {
		t.Errorf("Stats: %v allocations per call", a)
	}

	// Many committers: count every allocation in the process over a run.
	const workers, each = 16, 2000
	run := func() {
		var w sync.WaitGroup
		for range workers {
			w.Add(1)
			go func() {
				defer w.Done()
				for range each {
					commit()
				}
			}()
		}
		w.Wait()
	}
	run() // warm up the queue and the ack lists at this concurrency
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	run()
	runtime.ReadMemStats(&after)
	// Goroutine starts themselves allocate a little; allow a handful per
	// worker, none per commit.
	if n := after.Mallocs - before.Mallocs; n > 4*workers {
		t.Errorf("%d committers: %d allocations for %d commits", workers, n, workers*each)
	}
}
