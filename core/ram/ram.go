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
// # Pinned reads
//
// PinRead hands out views of the pages themselves instead of copying them,
// so a server can send a READ reply straight from the volume (writev). A
// pinned page must not change until the lease is released, so each page
// slot has a pin count beside its pointer (chunk.pins), raised under the
// page's read lock. Writers check it under the page's write lock: a write
// to a pinned page copies it first (copy-on-write) and stores the copy in
// the slot, and a pinned page that becomes all zeros is unlinked but not
// recycled; the old page is left to the garbage collector once the reader
// lets go. Unpinned pages are written in place and recycled as before, so
// the common case costs one atomic load per page written.
//
// INVARIANT: a page reachable from a Lease is never written and never
// returned to pagePool.
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
	// pins[i] counts Leases holding pages[i]'s page (whichever page was
	// in the slot when they pinned it). Raised only under the page's read
	// lock; lowered without a lock by Lease.Release.
	pins [chunkPages]atomic.Int32
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
	// Pages replaced or freed while pinned by a read in flight are not
	// counted: they can exceed the limit by at most the bytes pinned.
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
	stats    stats
}

type stats struct {
	pinReads  atomic.Uint64
	pinPages  atomic.Uint64
	cowPages  atomic.Uint64
	zeroViews atomic.Uint64
}

// Stats are a volume's counters since New.
type Stats struct {
	PinnedReads uint64 // PinRead calls that succeeded
	PinnedPages uint64 // pages pinned by them
	COWPages    uint64 // pages copied because a write or zero met a pin
	ZeroViews   uint64 // hole views PinRead handed out from the shared zero page
}

// Stats returns a snapshot of the volume's counters.
func (v *Volume) Stats() Stats {
	return Stats{
		PinnedReads: v.stats.pinReads.Load(),
		PinnedPages: v.stats.pinPages.Load(),
		COWPages:    v.stats.cowPages.Load(),
		ZeroViews:   v.stats.zeroViews.Load(),
	}
}

var pagePool = sync.Pool{New: func() any { return new(page) }}

// zeroPage is all zeros, always: isZero compares against it and PinRead
// hands out views of it for holes. Nothing writes to it.
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
	c := v.chunkOf(p, create)
	if c == nil {
		return nil
	}
	return &c.pages[p&(chunkPages-1)]
}

// chunkOf returns the chunk holding page p, creating it and its dir when
// create is set; nil if they do not exist.
func (v *Volume) chunkOf(p int64, create bool) *chunk {
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
	return c
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

// maxLeasePins is the largest pin list a released Lease keeps for reuse
// (a 4 MiB read); longer ones are dropped so an occasional 32 MiB read
// does not leave 64 KiB lists in the pool.
const maxLeasePins = 1024

// A Lease holds the pages a PinRead handed out: they keep their contents
// until Release. It is not safe for concurrent use.
type Lease struct {
	pins []*atomic.Int32
}

var leasePool = sync.Pool{New: func() any { return &Lease{pins: make([]*atomic.Int32, 0, 256)} }}

// Release lets the pages go: writes to them no longer copy them first.
// Call it exactly once, after the last use of the views; the Lease must
// not be used after. Releasing a nil Lease does nothing.
func (l *Lease) Release() {
	if l == nil {
		return
	}
	for i, p := range l.pins {
		p.Add(-1)
		l.pins[i] = nil
	}
	if cap(l.pins) > maxLeasePins {
		return
	}
	l.pins = l.pins[:0]
	leasePool.Put(l)
}

// PinRead appends to iov views of the volume's own memory that, in order,
// hold the data at [off, off+length): one view per page, holes as views of
// a shared zero page. The views stay unchanged until the returned Lease is
// released, whatever is written meanwhile (later writes go to copies), so
// they can be sent to the network without copying the data first. The
// caller must only read them. The Lease is nil when nothing was pinned
// (an error, length 0, or only holes); on error iov is returned as given.
//
// Pinning costs a lock and an atomic add per page, and the first write to
// a pinned page pays a page copy.
func (v *Volume) PinRead(ctx context.Context, off, length int64, iov [][]byte) ([][]byte, *Lease, error) {
	if err := v.check(off, length); err != nil {
		return iov, nil, err
	}
	if length == 0 {
		return iov, nil, nil
	}
	var l *Lease
	var c *chunk
	cn := int64(-1) // chunk number c belongs to
	zeros := uint64(0)
	end := off + length
	for off < end {
		pn, po := off>>pageShift, int(off&(PageSize-1))
		n := int(min(int64(PageSize-po), end-off))
		if k := pn >> chunkShift; k != cn {
			c, cn = v.chunkOf(pn, false), k
		}
		var pg *page
		if c != nil {
			i := pn & (chunkPages - 1)
			if c.pages[i].Load() != nil {
				lk := v.lock(pn)
				lk.RLock()
				if pg = c.pages[i].Load(); pg != nil {
					c.pins[i].Add(1)
				}
				lk.RUnlock()
				if pg != nil {
					if l == nil {
						l = leasePool.Get().(*Lease)
					}
					l.pins = append(l.pins, &c.pins[i])
				}
			}
		}
		if pg == nil {
			zeros++
			iov = append(iov, zeroPage[:n:n])
		} else {
			iov = append(iov, pg[po:po+n:po+n])
		}
		off += int64(n)
	}
	v.stats.pinReads.Add(1)
	if l != nil {
		v.stats.pinPages.Add(uint64(len(l.pins)))
	}
	if zeros > 0 {
		v.stats.zeroViews.Add(zeros)
	}
	return iov, l, nil
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
	c := v.chunkOf(pn, true)
	i := int(pn & (chunkPages - 1))
	s := &c.pages[i]
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
	} else if c.pins[i].Load() > 0 {
		if zero && len(src) == PageSize {
			v.dropPinnedLocked(s)
			return nil
		}
		pg = v.cowLocked(s, pg, len(src) != PageSize)
	}
	copy(pg[po:], src)
	if zero && (len(src) == PageSize || isZero(pg[:])) {
		s.Store(nil)
		v.freePage(pg)
	}
	return nil
}

// dropPinnedLocked makes slot s a hole. Its page, which a Lease may hold,
// is left to the garbage collector instead of the pool.
// REQUIRES: the page's lock held exclusively.
func (v *Volume) dropPinnedLocked(s *atomic.Pointer[page]) {
	s.Store(nil)
	v.pages.Add(-1)
}

// cowLocked replaces pg, which a Lease may hold, by a copy in slot s and
// returns the copy (not pinned, so the caller may change or free it). The
// old page is left to the garbage collector. keep copies pg's contents;
// without it the caller overwrites the whole page.
// REQUIRES: the page's lock held exclusively.
func (v *Volume) cowLocked(s *atomic.Pointer[page], pg *page, keep bool) *page {
	np := pagePool.Get().(*page)
	if keep {
		*np = *pg
	}
	s.Store(np)
	v.stats.cowPages.Add(1)
	return np
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
	c := v.chunkOf(pn, provision)
	if c == nil {
		return nil
	}
	i := int(pn & (chunkPages - 1))
	s := &c.pages[i]
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
	if c.pins[i].Load() > 0 {
		if !provision && n == PageSize {
			v.dropPinnedLocked(s)
			return nil
		}
		pg = v.cowLocked(s, pg, n != PageSize)
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
