// Package memdev is an in-memory backend.Device for the core's unit tests:
// it keeps what was synced apart from what was only written, so a test can
// take the image a power loss would leave (synced bytes kept, each unsynced
// block kept, dropped or torn at random under a seed), and it can be told to
// fail, to refuse I/O while "busy", or to flip bits on reads.
//
// It is a test fixture, not a backend: it does not register with backend and
// models no FTL. Crash and fault tests that the project commits run on
// backend/sim; memdev serves the fast unit tests below them.
package memdev

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"

	"github.com/shalestore/shale/backend"
)

// BlockSize is the granularity of tearing on power loss and of Alignment.
const BlockSize = 4096

// Device is an in-memory device. Safe for concurrent use.
type Device struct {
	size int64
	kind backend.Kind

	mu      sync.Mutex
	data    []byte         // what reads see
	durable []byte         // what survives power loss
	dirty   map[int64]bool // blocks written since their last sync
	failed  bool
	flip    map[int64]bool // block offsets whose reads come back corrupted
	writes  int
	closed  bool
}

// New returns a zeroed device of size bytes (a multiple of BlockSize).
func New(size int64, kind backend.Kind) *Device {
	return &Device{size: size, kind: kind, data: make([]byte, size), durable: make([]byte, size), dirty: map[int64]bool{}, flip: map[int64]bool{}}
}

func (d *Device) check(off, n int64) error {
	if d.closed {
		return backend.ErrClosed
	}
	if d.failed {
		return fmt.Errorf("memdev: %w", backend.ErrFailed)
	}
	return backend.CheckRange(off, n, d.size, BlockSize)
}

// ReadAt implements backend.Device.
func (d *Device) ReadAt(ctx context.Context, buf []byte, off int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(off, int64(len(buf))); err != nil {
		return err
	}
	copy(buf, d.data[off:])
	for b := off; b < off+int64(len(buf)); b += BlockSize {
		if d.flip[b] {
			buf[b-off+17] ^= 0x5a
		}
	}
	return nil
}

// WriteAt implements backend.Device.
func (d *Device) WriteAt(ctx context.Context, buf []byte, off int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(off, int64(len(buf))); err != nil {
		return err
	}
	copy(d.data[off:], buf)
	for b := off; b < off+int64(len(buf)); b += BlockSize {
		d.dirty[b] = true
	}
	d.writes++
	return nil
}

// Sync implements backend.Device.
func (d *Device) Sync(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(0, 0); err != nil {
		return err
	}
	for b := range d.dirty {
		copy(d.durable[b:b+BlockSize], d.data[b:b+BlockSize])
	}
	clear(d.dirty)
	return nil
}

// Discard implements backend.Device: the range reads as zeros.
func (d *Device) Discard(ctx context.Context, off, length int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(off, length); err != nil {
		return err
	}
	clear(d.data[off : off+length])
	for b := off; b < off+length; b += BlockSize {
		d.dirty[b] = true
	}
	return nil
}

// Size implements backend.Device.
func (d *Device) Size() int64 { return d.size }

// Alignment implements backend.Device.
func (d *Device) Alignment() int { return BlockSize }

// Kind implements backend.Device.
func (d *Device) Kind() backend.Kind { return d.kind }

// Close implements backend.Device.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	return nil
}

// Fail makes every later call fail with backend.ErrFailed (fail-stop), or
// heals the device when fail is false.
func (d *Device) Fail(fail bool) {
	d.mu.Lock()
	d.failed = fail
	d.mu.Unlock()
}

// Corrupt makes reads of the block holding off return a flipped byte
// (silent corruption: no error is reported).
func (d *Device) Corrupt(off int64) {
	d.mu.Lock()
	d.flip[off/BlockSize*BlockSize] = true
	d.mu.Unlock()
}

// Heal undoes Corrupt and Fail.
func (d *Device) Heal() {
	d.mu.Lock()
	clear(d.flip)
	d.failed = false
	d.mu.Unlock()
}

// Writes reports how many WriteAt calls succeeded.
func (d *Device) Writes() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.writes
}

// PowerLoss returns the image a power loss at this instant would leave: the
// synced bytes, and for each block written since its last sync, at random
// under seed, the new data, the old data, or a torn mix of the two. The
// receiver is unchanged.
func (d *Device) PowerLoss(seed uint64) *Device {
	d.mu.Lock()
	defer d.mu.Unlock()
	rng := rand.New(rand.NewPCG(seed, 0x6d656d646576))
	n := New(d.size, d.kind)
	copy(n.data, d.durable)
	for b := range d.dirty {
		switch rng.IntN(3) {
		case 0: // lost
		case 1: // kept
			copy(n.data[b:b+BlockSize], d.data[b:b+BlockSize])
		case 2: // torn at a 512-byte boundary
			cut := int64(rng.IntN(BlockSize/512)) * 512
			copy(n.data[b:b+cut], d.data[b:b+cut])
		}
	}
	copy(n.durable, n.data)
	return n
}
