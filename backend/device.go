// Package backend defines Device, the only thing the engine knows of
// hardware: a drive (SSD) or an NVRAM part that takes positional reads and
// writes of aligned buffers, a durability barrier, and discards.
//
// Concrete devices live in sub-packages (backend/file, backend/nvme,
// backend/sim) and register themselves by name with Register from an init
// function; callers open them through Open(spec) without importing them, the
// way database/sql drivers work. A binary that wants every backend imports
// backend/all for its side effects.
//
// # Buffer contract
//
// ReadAt and WriteAt take a caller-owned buffer. The device uses it only for
// the duration of the call and keeps no reference after it returns; the
// caller may reuse it at once. len(buf) and off must both be multiples of
// Alignment(), and off+len(buf) must not exceed Size(). Some devices (nvme,
// file with O_DIRECT) also need the buffer's address aligned in memory:
// allocate I/O buffers with AlignedBuffer, which satisfies every device.
//
// # Concurrency contract
//
// Every method may be called from many goroutines at once. Concurrent writes
// to overlapping ranges leave the range holding one of the writes in each
// aligned block, unspecified which; callers that care (all of the engine)
// never issue them. Sync covers every write that returned before Sync was
// called; writes racing with Sync may or may not be covered.
package backend

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"unsafe"
)

// Kind says what a device is for: bulk storage or the small, fast,
// high-endurance commit log.
type Kind int

const (
	// SSD is a data drive: large, striped over by segments.
	SSD Kind = iota
	// NVRAM is the commit-log device: small, low latency, high endurance.
	NVRAM
)

// String returns "ssd" or "nvram".
func (k Kind) String() string {
	switch k {
	case SSD:
		return "ssd"
	case NVRAM:
		return "nvram"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Error classes. Devices wrap them with context (which device, which offset);
// callers test with errors.Is.
var (
	// ErrFailed means the device failed the operation as a whole (I/O error,
	// fail-stop, device gone). The data of a failed write is unspecified.
	ErrFailed = errors.New("device failed")
	// ErrOutOfRange means the operation reached past Size().
	ErrOutOfRange = errors.New("out of range")
	// ErrMisaligned means an offset or length (or, for direct I/O, a buffer
	// address) was not a multiple of Alignment().
	ErrMisaligned = errors.New("misaligned")
	// ErrCorrupt means the device returned data it knows to be wrong (a
	// medium error on read). Silent corruption is not reported this way; the
	// engine's checksums catch it.
	ErrCorrupt = errors.New("corrupt data")
	// ErrClosed means the device was used after Close.
	ErrClosed = errors.New("device closed")
)

// Device is a drive or an NVRAM part. See the package documentation for the
// buffer and concurrency contracts, which every implementation keeps.
type Device interface {
	// ReadAt fills buf with the bytes at off. It reads all of buf or
	// returns an error; there are no short reads.
	ReadAt(ctx context.Context, buf []byte, off int64) error
	// WriteAt writes all of buf at off or returns an error. The data is
	// durable only after a later Sync returns.
	WriteAt(ctx context.Context, buf []byte, off int64) error
	// Sync is the durability barrier: when it returns nil, every write that
	// returned before it was called survives power loss.
	Sync(ctx context.Context) error
	// Discard tells the device that [off, off+length) holds nothing of value.
	// Reads of a discarded range return unspecified data (zeros on most
	// devices) until it is written again. Both bounds must be aligned.
	Discard(ctx context.Context, off, length int64) error
	// Size is the usable capacity in bytes, a multiple of Alignment().
	Size() int64
	// Alignment is the logical block size: offsets, lengths and, for some
	// devices, buffer addresses are multiples of it. A power of two ≥ 512.
	Alignment() int
	// Kind says whether this is a data drive or an NVRAM part.
	Kind() Kind
	// Close releases the device. In-flight calls must have returned.
	Close() error
}

// MaxAlignment is the largest Alignment() any backend reports and the memory
// alignment of buffers from AlignedBuffer.
const MaxAlignment = 4096

// IsAligned reports whether buf starts at an address that is a multiple of
// align (a power of two).
func IsAligned(buf []byte, align int) bool {
	if len(buf) == 0 {
		return true
	}
	return uintptr(unsafe.Pointer(&buf[0]))&uintptr(align-1) == 0
}

// CheckRange validates an I/O of length bytes at off against a device of the
// given size and alignment, returning a wrapped ErrMisaligned or
// ErrOutOfRange. Implementations call it first in every method.
func CheckRange(off, length, size int64, align int) error {
	a := int64(align)
	if off < 0 || length < 0 || off%a != 0 || length%a != 0 {
		return fmt.Errorf("offset %d length %d not multiples of %d: %w", off, length, align, ErrMisaligned)
	}
	if off > size || length > size-off {
		return fmt.Errorf("offset %d length %d beyond size %d: %w", off, length, size, ErrOutOfRange)
	}
	return nil
}

// Spec says which backend to open and how. It comes from one entry of the
// configuration's `drives` list or its `nvram` key.
type Spec struct {
	// Name identifies the device in errors and logs, e.g. "drives[3]" or
	// "nvram".
	Name string
	// Backend names a registered backend: "file", "nvme" or "sim".
	Backend string
	// Path is the file or device path. Optional for sim kept in memory.
	Path string
	// Size in bytes. Required where the backend creates the device (file,
	// sim); for nvme it is taken from the device and, if set, must not
	// exceed it.
	Size int64
	// Kind is SSD or NVRAM.
	Kind Kind
	// Options holds backend-specific keys exactly as configured (for
	// example file's "direct", or sim's "seed" and "profile"). A backend
	// rejects keys it does not know, naming them.
	Options map[string]any
}

// Opener opens a device from a spec. Backends register one with Register.
type Opener func(spec Spec) (Device, error)

var (
	registryMu sync.RWMutex
	registry   = map[string]Opener{}
)

// Register makes a backend available to Open under name. It panics if the
// name is taken: that is a programming error, found at init.
func Register(name string, open Opener) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[name]; dup {
		panic("backend: Register called twice for " + name)
	}
	registry[name] = open
}

// Backends lists the registered backend names in order.
func Backends() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Open opens the device a spec describes. Errors name the device (spec.Name)
// and, where a key is wrong, the key.
func Open(spec Spec) (Device, error) {
	name := spec.Name
	if name == "" {
		name = "device"
	}
	if spec.Backend == "" {
		return nil, fmt.Errorf("%s: backend: missing (one of %v)", name, Backends())
	}
	registryMu.RLock()
	open, ok := registry[spec.Backend]
	registryMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%s: backend: unknown backend %q (one of %v)", name, spec.Backend, Backends())
	}
	if spec.Size < 0 {
		return nil, fmt.Errorf("%s: size: must not be negative, got %d", name, spec.Size)
	}
	dev, err := open(spec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return dev, nil
}

// UnknownOptions returns an error naming every key of opts that is not in
// known, or nil. Backends use it to reject misspelt options.
func UnknownOptions(opts map[string]any, known ...string) error {
	var bad []string
	for k := range opts {
		if !slices.Contains(known, k) {
			bad = append(bad, k)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	return fmt.Errorf("unknown option(s) %v (known: %v)", bad, known)
}
