package nvlog

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"

	"github.com/shalestore/shale/backend"
)

// memDev is a tiny in-memory NVRAM device for unit tests and the fuzz
// target: reads see every write; Sync makes writes durable; powerLoss
// returns a new device holding the durable state with each unsynced write
// kept, dropped or torn block by block. The crash tests use backend/sim.
type memDev struct {
	mu       sync.Mutex
	align    int
	data     []byte // what reads return
	durable  []byte // what survives power loss
	pending  []memWrite
	dead     bool
	failSync bool // next Sync fails
}

type memWrite struct {
	off  int64
	data []byte
}

func newMemDev(size int64, align int) *memDev {
	return &memDev{align: align, data: make([]byte, size), durable: make([]byte, size)}
}

func (d *memDev) check(off, n int64) error {
	if d.dead {
		return fmt.Errorf("memdev: power lost: %w", backend.ErrFailed)
	}
	return backend.CheckRange(off, n, int64(len(d.data)), d.align)
}

func (d *memDev) ReadAt(_ context.Context, buf []byte, off int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(off, int64(len(buf))); err != nil {
		return err
	}
	copy(buf, d.data[off:])
	return nil
}

func (d *memDev) WriteAt(_ context.Context, buf []byte, off int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(off, int64(len(buf))); err != nil {
		return err
	}
	copy(d.data[off:], buf)
	d.pending = append(d.pending, memWrite{off, append([]byte(nil), buf...)})
	return nil
}

func (d *memDev) Sync(context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(0, 0); err != nil {
		return err
	}
	if d.failSync {
		d.failSync = false
		d.pending = nil // the kernel dropped them: fsyncgate
		return fmt.Errorf("memdev: sync: %w", backend.ErrFailed)
	}
	for _, w := range d.pending {
		copy(d.durable[w.off:], w.data)
	}
	d.pending = d.pending[:0]
	return nil
}

func (d *memDev) Discard(_ context.Context, off, n int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.check(off, n)
}

func (d *memDev) Size() int64        { return int64(len(d.data)) }
func (d *memDev) Alignment() int     { return d.align }
func (d *memDev) Kind() backend.Kind { return backend.NVRAM }
func (d *memDev) Close() error       { return nil }
func (d *memDev) image() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]byte(nil), d.data...)
}
func (d *memDev) setFailSync() { d.mu.Lock(); d.failSync = true; d.mu.Unlock() }

// powerLoss kills d and returns the device as it comes back: durable data,
// plus each unsynced write kept, dropped or torn (per block) at random.
func (d *memDev) powerLoss(rng *rand.Rand) *memDev {
	mode := 0
	return d.powerLossWith(func(_, block int) bool {
		if block == 0 {
			mode = rng.IntN(3)
		}
		switch mode {
		case 0:
			return false // dropped
		case 1:
			return true // kept
		}
		return rng.IntN(2) == 0 // torn
	})
}

// powerLossWith is powerLoss with the choice made by keep: for the i-th
// unsynced write (in write order) and each of its blocks, whether the block
// reached the medium.
func (d *memDev) powerLossWith(keep func(write, block int) bool) *memDev {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dead = true
	nd := newMemDev(int64(len(d.data)), d.align)
	copy(nd.durable, d.durable)
	for i, w := range d.pending {
		for b := 0; b < len(w.data); b += d.align {
			if keep(i, b/d.align) {
				copy(nd.durable[w.off+int64(b):], w.data[b:b+d.align])
			}
		}
	}
	copy(nd.data, nd.durable)
	return nd
}
