// Package pyramidtest implements the pyramid's storage interfaces (page
// store, root store, committer) over backend.Device, for tests and
// benchmarks of core/pyramid, and a crashable in-memory Device to run them
// on.
//
// These are stand-ins, not the production parts: core/segment (pages as
// log records in segios), the boot region (roots) and core/nvlog (the
// committer) replace them in the engine. They are real in the sense that
// matters for crash tests: everything goes through a Device as aligned
// writes and syncs, and a power loss on MemDevice keeps exactly what was
// synced plus an arbitrary subset of the unsynced blocks.
package pyramidtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"

	"github.com/shalestore/shale/backend"
)

const chunkBytes = 1 << 20

// MemDevice is a sparse in-memory backend.Device that can lose power.
// Every aligned block written since the last Sync remembers its durable
// contents; PowerLoss keeps or reverts each such block at random.
type MemDevice struct {
	size  int64
	align int
	kind  backend.Kind

	mu     sync.Mutex
	chunks map[int64][]byte // chunk index -> data
	shadow map[int64][]byte // block offset -> durable contents (nil: zeros)
	closed bool
	// FailWrites, when set, is called before each write; an error fails it.
	failWrite func(off int64, n int) error
}

// NewMemDevice returns a device of size bytes (a multiple of align).
func NewMemDevice(size int64, align int, kind backend.Kind) *MemDevice {
	return &MemDevice{size: size, align: align, kind: kind, chunks: map[int64][]byte{}, shadow: map[int64][]byte{}}
}

// SetFailWrite installs a write-failure rule (nil removes it).
func (d *MemDevice) SetFailWrite(fn func(off int64, n int) error) {
	d.mu.Lock()
	d.failWrite = fn
	d.mu.Unlock()
}

func (d *MemDevice) chunk(i int64, create bool) []byte {
	c := d.chunks[i]
	if c == nil && create {
		c = make([]byte, chunkBytes)
		d.chunks[i] = c
	}
	return c
}

// copyOut reads [off, off+len(buf)) into buf. REQUIRES: d.mu held.
func (d *MemDevice) copyOut(buf []byte, off int64) {
	for len(buf) > 0 {
		ci, co := off/chunkBytes, off%chunkBytes
		n := min(int64(len(buf)), chunkBytes-co)
		if c := d.chunk(ci, false); c != nil {
			copy(buf[:n], c[co:co+n])
		} else {
			clear(buf[:n])
		}
		buf, off = buf[n:], off+n
	}
}

// copyIn writes buf at off. REQUIRES: d.mu held.
func (d *MemDevice) copyIn(buf []byte, off int64) {
	for len(buf) > 0 {
		ci, co := off/chunkBytes, off%chunkBytes
		n := min(int64(len(buf)), chunkBytes-co)
		copy(d.chunk(ci, true)[co:co+n], buf[:n])
		buf, off = buf[n:], off+n
	}
}

// ReadAt implements backend.Device.
func (d *MemDevice) ReadAt(ctx context.Context, buf []byte, off int64) error {
	if err := backend.CheckRange(off, int64(len(buf)), d.size, d.align); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return backend.ErrClosed
	}
	d.copyOut(buf, off)
	return nil
}

// WriteAt implements backend.Device.
func (d *MemDevice) WriteAt(ctx context.Context, buf []byte, off int64) error {
	if err := backend.CheckRange(off, int64(len(buf)), d.size, d.align); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return backend.ErrClosed
	}
	if d.failWrite != nil {
		if err := d.failWrite(off, len(buf)); err != nil {
			return fmt.Errorf("mem device write at %d: %w: %w", off, backend.ErrFailed, err)
		}
	}
	a := int64(d.align)
	for b := off; b < off+int64(len(buf)); b += a {
		if _, ok := d.shadow[b]; !ok {
			var old []byte
			if d.chunk(b/chunkBytes, false) != nil {
				old = make([]byte, a)
				d.copyOut(old, b)
			}
			d.shadow[b] = old
		}
	}
	d.copyIn(buf, off)
	return nil
}

// Sync implements backend.Device.
func (d *MemDevice) Sync(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return backend.ErrClosed
	}
	clear(d.shadow)
	return nil
}

// Discard implements backend.Device (a no-op: discarded data reads back
// unchanged, which the contract allows).
func (d *MemDevice) Discard(ctx context.Context, off, length int64) error {
	return backend.CheckRange(off, length, d.size, d.align)
}

// Size implements backend.Device.
func (d *MemDevice) Size() int64 { return d.size }

// Alignment implements backend.Device.
func (d *MemDevice) Alignment() int { return d.align }

// Kind implements backend.Device.
func (d *MemDevice) Kind() backend.Kind { return d.kind }

// Close implements backend.Device. A closed MemDevice can be reopened with
// Reopen (its contents survive, as a drive's do).
func (d *MemDevice) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	return nil
}

// PowerLoss simulates losing power: each block written since the last Sync
// keeps its new contents or reverts to its durable ones, at random. The
// device stays usable (as after a reboot).
func (d *MemDevice) PowerLoss(rng *rand.Rand) {
	d.mu.Lock()
	defer d.mu.Unlock()
	a := int64(d.align)
	blocks := make([]int64, 0, len(d.shadow))
	for b := range d.shadow {
		blocks = append(blocks, b)
	}
	slices.Sort(blocks) // deterministic under the seed
	for _, b := range blocks {
		old := d.shadow[b]
		if rng.IntN(2) == 0 {
			continue // the write made it
		}
		if old == nil {
			old = make([]byte, a)
		}
		d.copyIn(old, b)
	}
	clear(d.shadow)
	d.closed = false
}

// Reopen makes a closed device usable again.
func (d *MemDevice) Reopen() {
	d.mu.Lock()
	d.closed = false
	d.mu.Unlock()
}

// BytesUsed returns the bytes of memory the device holds.
func (d *MemDevice) BytesUsed() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return int64(len(d.chunks)) * chunkBytes
}
