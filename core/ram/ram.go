// Package ram implements RAM volumes: block devices whose data lives in
// memory only, like nbdkit's memory plugin. A volume is sparse: memory
// grows with the data written, so a 1 TiB volume costs nothing until it is
// written, and its size may exceed the machine's RAM. Its contents are lost
// when the process exits.
//
// # Layout
//
// Data is kept in 4 KiB pages found through a three-level radix table:
//
//	dirs[p >> 18] -> dir.chunks[(p >> 9) & 511] -> chunk.pages[p & 511] -> page
//
// where p = offset / PageSize. A dir covers 1 GiB, a chunk 2 MiB. Dirs and
// chunks are created on first write and kept (4 KiB of pointers per 2 MiB
// written); pages are freed when they become all zeros (by a write of
// zeros, TRIM or WRITE_ZEROES), so zeroed ranges are holes again.
//
// # Concurrency
//
// Page pointers are atomics, so lookups take no lock. Page contents are
// guarded by a striped lock (one of 1024 RWMutexes by page number): reads
// take it shared, writes exclusive, one page at a time, so there is no
// global lock on the hot path and a large I/O is not atomic as a whole
// (NBD promises nothing more).
//
// # Durability
//
// Memory is this volume's medium: Flush and FUA are no-ops, and every
// completed write is visible to every reader at once, so multi-connection
// clients are safe (MultiConn true).
package ram

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
)

// PageSize is the allocation unit of a RAM volume, in bytes.
const PageSize = 4096

const (
	pageShift  = 12
	chunkShift = 9 // pages per chunk: 512
	dirShift   = 9 // chunks per dir: 512
	chunkPages = 1 << chunkShift
	dirPages   = 1 << (chunkShift + dirShift)
	numLocks   = 1024
)

// Error classes, wrapping the errno an NBD server maps them to.
var (
	// ErrOutOfRange: the request reaches past the end of the volume.
	ErrOutOfRange = fmt.Errorf("ram: beyond end of volume: %w", syscall.EINVAL)
	// ErrNoSpace: MaxBytes would be exceeded.
	ErrNoSpace = fmt.Errorf("ram: memory limit reached: %w", syscall.ENOSPC)
)

type page [PageSize]byte

type chunk struct {
	pages [chunkPages]atomic.Pointer[page]
}

type dir struct {
	chunks [1 << dirShift]atomic.Pointer[chunk]
}

type paddedLock struct {
	sync.RWMutex
	_ [40]byte // keep stripes on separate cache lines
}

// Options configure a volume.
type Options struct {
	// MaxBytes bounds the memory the volume's pages may use; a write that
	// needs a new page beyond it fails with ErrNoSpace. 0 means no limit.
	// With a limit, WriteZeroes with NoHole keeps zeroed pages allocated
	// so later writes there cannot fail.
	MaxBytes int64
}

// Volume is a sparse in-memory block device. All methods are safe for
// concurrent use.
type Volume struct {
	size     int64
	maxPages int64 // 0: unlimited
	dirs     []atomic.Pointer[dir]
	locks    [numLocks]paddedLock
	pages    atomic.Int64 // pages allocated
}

var pagePool = sync.Pool{New: func() any { return new(page) }}

var zeroPage page

// New returns an empty (all zeros) volume of size bytes.
func New(size int64, opts Options) (*Volume, error) {
	if size < 0 {
		return nil, fmt.Errorf("ram: negative size %d", size)
	}
	if opts.MaxBytes < 0 {
		return nil, fmt.Errorf("ram: negative MaxBytes %d", opts.MaxBytes)
	}
	npages := (size + PageSize - 1) / PageSize
	return &Volume{
		size:     size,
		maxPages: opts.MaxBytes / PageSize,
		dirs:     make([]atomic.Pointer[dir], (npages+dirPages-1)/dirPages),
	}, nil
}

// Size returns the volume's size in bytes.
func (v *Volume) Size() int64 { return v.size }

// AllocatedBytes returns the memory held by data pages.
func (v *Volume) AllocatedBytes() int64 { return v.pages.Load() * PageSize }

func (v *Volume) check(off, length int64) error {
	if off < 0 || length < 0 || off > v.size || length > v.size-off {
		return fmt.Errorf("offset %d length %d size %d: %w", off, length, v.size, ErrOutOfRange)
	}
	return nil
}

func (v *Volume) lock(p int64) *paddedLock { return &v.locks[p&(numLocks-1)] }

// slot returns the page pointer for page p, creating the dir and chunk on
// the way when create is set; nil if they do not exist.
func (v *Volume) slot(p int64, create bool) *atomic.Pointer[page] {
	dp := &v.dirs[p>>(chunkShift+dirShift)]
	d := dp.Load()
	if d == nil {
		if !create {
			return nil
		}
		d = new(dir)
		if !dp.CompareAndSwap(nil, d) {
			d = dp.Load()
		}
	}
	cp := &d.chunks[(p>>chunkShift)&(1<<dirShift-1)]
	c := cp.Load()
	if c == nil {
		if !create {
			return nil
		}
		c = new(chunk)
		if !cp.CompareAndSwap(nil, c) {
			c = cp.Load()
		}
	}
	return &c.pages[p&(chunkPages-1)]
}

func (v *Volume) loadPage(p int64) *page {
	if s := v.slot(p, false); s != nil {
		return s.Load()
	}
	return nil
}

// allocPage returns a page; zeroed unless the caller overwrites all of it.
func (v *Volume) allocPage(clearIt bool) (*page, error) {
	if n := v.pages.Add(1); v.maxPages > 0 && n > v.maxPages {
		v.pages.Add(-1)
		return nil, ErrNoSpace
	}
	pg := pagePool.Get().(*page)
	if clearIt {
		clear(pg[:])
	}
	return pg, nil
}

func (v *Volume) freePage(pg *page) {
	v.pages.Add(-1)
	pagePool.Put(pg)
}

// ReadAt fills p with the data at off. Unwritten ranges read as zeros.
func (v *Volume) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := v.check(off, int64(len(p))); err != nil {
		return err
	}
	for len(p) > 0 {
		pn, po := off>>pageShift, int(off&(PageSize-1))
		n := min(PageSize-po, len(p))
		s := v.slot(pn, false)
		if s == nil || s.Load() == nil {
			clear(p[:n])
		} else {
			l := v.lock(pn)
			l.RLock()
			if pg := s.Load(); pg != nil {
				copy(p[:n], pg[po:po+n])
			} else {
				clear(p[:n])
			}
			l.RUnlock()
		}
		p = p[n:]
		off += int64(n)
	}
	return nil
}

// WriteAt stores p at off. Pages left all zeros are freed. fua is
// accepted and ignored: memory is the medium.
func (v *Volume) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if err := v.check(off, int64(len(p))); err != nil {
		return err
	}
	for len(p) > 0 {
		pn, po := off>>pageShift, int(off&(PageSize-1))
		n := min(PageSize-po, len(p))
		src := p[:n]
		zero := isZero(src)
		if zero && v.loadPage(pn) == nil {
			// Zeros over a hole: nothing to store.
		} else if err := v.writePage(pn, po, src, zero); err != nil {
			return err
		}
		p = p[n:]
		off += int64(n)
	}
	return nil
}

func (v *Volume) writePage(pn int64, po int, src []byte, zero bool) error {
	s := v.slot(pn, true)
	l := v.lock(pn)
	l.Lock()
	defer l.Unlock()
	pg := s.Load()
	if pg == nil {
		if zero {
			return nil
		}
		var err error
		if pg, err = v.allocPage(len(src) != PageSize); err != nil {
			return err
		}
		s.Store(pg)
	}
	copy(pg[po:], src)
	if zero && (len(src) == PageSize || isZero(pg[:])) {
		s.Store(nil)
		v.freePage(pg)
	}
	return nil
}

// Flush does nothing: every completed write is already in memory, the
// volume's only medium.
func (v *Volume) Flush(ctx context.Context) error { return nil }

// Trim frees [off, off+length); the range reads as zeros afterwards.
func (v *Volume) Trim(ctx context.Context, off, length int64, fua bool) error {
	if err := v.check(off, length); err != nil {
		return err
	}
	return v.zero(off, length, false)
}

// ZeroFlags qualify WriteZeroes; the fields match nbd.ZeroFlags.
type ZeroFlags struct {
	NoHole   bool
	FastZero bool
	FUA      bool
}

// WriteZeroes makes [off, off+length) read as zeros, freeing whole pages.
// It is always fast, so FastZero never fails. NoHole keeps the range
// allocated only when MaxBytes is set (without a limit a later write can
// never fail for lack of space anyway).
func (v *Volume) WriteZeroes(ctx context.Context, off, length int64, flags ZeroFlags) error {
	if err := v.check(off, length); err != nil {
		return err
	}
	return v.zero(off, length, flags.NoHole && v.maxPages > 0)
}

func (v *Volume) zero(off, length int64, provision bool) error {
	end := off + length
	for off < end {
		pn, po := off>>pageShift, off&(PageSize-1)
		n := min(PageSize-po, end-off)
		if !provision && v.slot(pn, false) == nil {
			// No chunk here: skip to the next chunk boundary.
			next := (pn | (chunkPages - 1) + 1) << pageShift
			off = min(next, end)
			continue
		}
		if err := v.zeroPage(pn, int(po), int(n), provision); err != nil {
			return err
		}
		off += n
	}
	return nil
}

func (v *Volume) zeroPage(pn int64, po, n int, provision bool) error {
	s := v.slot(pn, provision)
	if s == nil {
		return nil
	}
	l := v.lock(pn)
	l.Lock()
	defer l.Unlock()
	pg := s.Load()
	if pg == nil {
		if !provision {
			return nil
		}
		pg, err := v.allocPage(true)
		if err != nil {
			return err
		}
		s.Store(pg)
		return nil
	}
	clear(pg[po : po+n])
	if !provision && (n == PageSize || isZero(pg[:])) {
		s.Store(nil)
		v.freePage(pg)
	}
	return nil
}

// Cache does nothing: the data is already in memory.
func (v *Volume) Cache(ctx context.Context, off, length int64) error {
	return v.check(off, length)
}

// ExtentFlags are allocation status bits; the values match NBD's
// base:allocation (and nbd.ExtentFlags).
type ExtentFlags uint32

const (
	// ExtentHole: no page holds this range.
	ExtentHole ExtentFlags = 1 << 0
	// ExtentZero: the range reads as zeros.
	ExtentZero ExtentFlags = 1 << 1
)

// Extent is a run of equal allocation status.
type Extent struct {
	Length int64
	Flags  ExtentFlags
}

// maxExtentsPerCall bounds the work of one Extents call.
const maxExtentsPerCall = 1024

// Extents appends to dst the status of a prefix of [off, off+length),
// starting at off: unwritten and zeroed pages are holes (HOLE|ZERO), pages
// holding data are 0. Adjacent extents differ. It returns at least one
// extent when length > 0; they end at off+length at the latest.
func (v *Volume) Extents(ctx context.Context, off, length int64, dst []Extent) ([]Extent, error) {
	if err := v.check(off, length); err != nil {
		return dst, err
	}
	end := off + length
	first := len(dst)
	for off < end && len(dst)-first < maxExtentsPerCall {
		pn := off >> pageShift
		var flags ExtentFlags
		var next int64
		if v.slot(pn, false) == nil {
			// Whole chunk missing.
			flags = ExtentHole | ExtentZero
			next = (pn | (chunkPages - 1) + 1) << pageShift
		} else {
			if v.loadPage(pn) == nil {
				flags = ExtentHole | ExtentZero
			}
			next = (pn + 1) << pageShift
		}
		l := min(next, end) - off
		if k := len(dst); k > first && dst[k-1].Flags == flags {
			dst[k-1].Length += l
		} else {
			dst = append(dst, Extent{Length: l, Flags: flags})
		}
		off += l
	}
	return dst, nil
}

func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), PageSize)
		if !bytes.Equal(b[:n], zeroPage[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}
