package segment

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shalestore/shale/backend"
)

// failingSync fails every Sync once armed.
type failingSync struct {
	backend.Device
	armed *atomic.Bool
}

func (f failingSync) Sync(ctx context.Context) error {
	if f.armed.Load() {
		return backend.ErrFailed
	}
	return f.Device.Sync(ctx)
}

// TestFlushFailureDoesNotHang: when segio syncs fail while appenders keep
// appending, the writer must stop with an error, not deadlock. (The
// sync stage once took the writer's lock to record its error, while an
// appender sealing a segio held that lock waiting for room in the queue
// the sync stage drains.)
func TestFlushFailureDoesNotHang(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, small, 6, 64)
	var armed atomic.Bool
	for i, d := range r.d.Devs {
		r.d.Devs[i] = failingSync{Device: d, armed: &armed}
	}
	hook := func(p string) {
		if p == PointSegioWritten && armed.Load() {
			time.Sleep(5 * time.Millisecond) // let appenders fill the queue
		}
	}
	w, err := NewWriter(r.d, WriterOptions{Next: r.next, Stamp: 1, CrashHook: hook, MaxPendingSegios: 1})
	if err != nil {
		t.Fatal(err)
	}
	p := payload(rand.New(rand.NewPCG(5, 6)), 3000)
	done := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			if i == 20 {
				armed.Store(true)
			}
			if _, err := w.Append(ctx, Cblock, 0, 0, p); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if !errors.Is(err, backend.ErrFailed) {
			t.Fatalf("writer stopped with %v, want ErrFailed", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("appends hang after sync failures")
	}
	closed := make(chan error, 1)
	go func() { closed <- w.Close(ctx) }()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Close hangs after sync failures")
	}
}
