//go:build linux

// Package fdio is the part of the file and nvme backends that is the same
// for both: positional reads and writes on an open *os.File with the
// checks of package backend, errno values mapped to backend's error
// classes, use-after-Close detection, and counters.
//
// Reads and writes go through os.File.ReadAt and WriteAt (pread and
// pwrite, retried on EINTR and continued after short transfers). The
// os.File holds a reference on its descriptor for the length of each call,
// so a call racing with Close fails with ErrClosed instead of reaching a
// recycled descriptor number.
package fdio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"

	"github.com/shalestore/shale/backend"
	"golang.org/x/sys/unix"
)

// Config describes an opened file or block device.
type Config struct {
	// Path names the device in errors.
	Path string
	// Size is the usable size in bytes, a multiple of Align.
	Size int64
	// Align is the device's Alignment().
	Align int
	// Direct says the descriptor was opened with O_DIRECT: buffer addresses
	// must then be multiples of Align.
	Direct bool
	// Kind is reported by Kind().
	Kind backend.Kind
	// SyncWrites says the descriptor was opened with O_DSYNC: every write
	// is durable when it returns, so Sync has nothing to flush unless a
	// Discard ran since the last one.
	SyncWrites bool
	// Discard frees [off, off+n) on descriptor fd; the range is already
	// validated and non-empty. It returns the raw errno.
	// ENOTSUP/EOPNOTSUPP turn discards into no-ops from then on.
	Discard func(fd uintptr, off, n int64) error
}

// Stats are a device's counters since it was opened.
type Stats struct {
	Reads, Writes, Syncs, Discards uint64
	ReadBytes, WriteBytes          uint64
	// Errors counts calls that failed in the kernel (not validation).
	Errors uint64
	// DiscardsIgnored counts discards dropped because the device or
	// filesystem does not support them.
	DiscardsIgnored uint64
	// SyncsElided counts Syncs (included in Syncs) that had nothing to
	// flush because every write was already durable (SyncWrites).
	SyncsElided uint64
}

// File is a backend.Device over an *os.File.
type File struct {
	f   *os.File
	rc  syscall.RawConn
	cfg Config

	closed           atomic.Bool
	discardsDisabled atomic.Bool
	// discarded: a Discard completed since the last Sync's flush. With
	// SyncWrites it is what Sync must still make durable.
	discarded atomic.Bool

	reads, writes, syncs, discards atomic.Uint64
	readBytes, writeBytes          atomic.Uint64
	errs, discardsIgnored          atomic.Uint64
	syncsElided                    atomic.Uint64
}

// New wraps f, which the File then owns and closes.
func New(f *os.File, cfg Config) (*File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.Path, err)
	}
	return &File{f: f, rc: rc, cfg: cfg}, nil
}

// check validates a call before any I/O.
func (d *File) check(ctx context.Context, buf []byte, off, n int64) error {
	if d.closed.Load() {
		return fmt.Errorf("%s: %w", d.cfg.Path, backend.ErrClosed)
	}
	if err := backend.CheckRange(off, n, d.cfg.Size, d.cfg.Align); err != nil {
		return fmt.Errorf("%s: %w", d.cfg.Path, err)
	}
	if d.cfg.Direct && !backend.IsAligned(buf, d.cfg.Align) {
		return fmt.Errorf("%s: buffer address not a multiple of %d (direct I/O; use backend.AlignedBuffer): %w",
			d.cfg.Path, d.cfg.Align, backend.ErrMisaligned)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", d.cfg.Path, err)
	}
	return nil
}

// ReadAt implements backend.Device.
func (d *File) ReadAt(ctx context.Context, buf []byte, off int64) error {
	if err := d.check(ctx, buf, off, int64(len(buf))); err != nil || len(buf) == 0 {
		return err
	}
	if _, err := d.f.ReadAt(buf, off); err != nil {
		return d.fail("read", len(buf), off, err)
	}
	d.reads.Add(1)
	d.readBytes.Add(uint64(len(buf)))
	return nil
}

// WriteAt implements backend.Device.
func (d *File) WriteAt(ctx context.Context, buf []byte, off int64) error {
	if err := d.check(ctx, buf, off, int64(len(buf))); err != nil || len(buf) == 0 {
		return err
	}
	if _, err := d.f.WriteAt(buf, off); err != nil {
		return d.fail("write", len(buf), off, err)
	}
	d.writes.Add(1)
	d.writeBytes.Add(uint64(len(buf)))
	return nil
}

// Sync implements backend.Device with fdatasync, which on a block device
// also flushes the drive's volatile write cache.
func (d *File) Sync(ctx context.Context) error {
	if err := d.check(ctx, nil, 0, 0); err != nil {
		return err
	}
	// A Discard that returned before this call set discarded before it
	// returned, so the swap sees it; writes under O_DSYNC are durable.
	if d.cfg.SyncWrites && !d.discarded.Swap(false) {
		d.syncs.Add(1)
		d.syncsElided.Add(1)
		return nil
	}
	var serr error
	if err := d.rc.Control(func(fd uintptr) {
		for {
			if serr = unix.Fdatasync(int(fd)); serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return d.controlFailed("sync", err)
	}
	if serr != nil {
		if d.cfg.SyncWrites {
			d.discarded.Store(true) // still to flush
		}
		return d.fail("sync", 0, 0, serr)
	}
	d.syncs.Add(1)
	return nil
}

// Discard implements backend.Device. Where the device or filesystem
// cannot discard, it does nothing (the contract allows that: discarded data
// is unspecified, not necessarily gone) and counts DiscardsIgnored.
func (d *File) Discard(ctx context.Context, off, n int64) error {
	if err := d.check(ctx, nil, off, n); err != nil || n == 0 {
		return err
	}
	if d.discardsDisabled.Load() || d.cfg.Discard == nil {
		d.discardsIgnored.Add(1)
		return nil
	}
	var derr error
	if err := d.rc.Control(func(fd uintptr) {
		for {
			if derr = d.cfg.Discard(fd, off, n); derr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return d.controlFailed("discard", err)
	}
	if errors.Is(derr, unix.EOPNOTSUPP) || errors.Is(derr, unix.ENOTSUP) {
		d.discardsDisabled.Store(true)
		d.discardsIgnored.Add(1)
		return nil
	}
	if derr != nil {
		return d.fail("discard", int(min(n, 1<<62)), off, derr)
	}
	d.discarded.Store(true)
	d.discards.Add(1)
	return nil
}

// Size implements backend.Device.
func (d *File) Size() int64 { return d.cfg.Size }

// Alignment implements backend.Device.
func (d *File) Alignment() int { return d.cfg.Align }

// Kind implements backend.Device.
func (d *File) Kind() backend.Kind { return d.cfg.Kind }

// Path returns the path the device was opened with.
func (d *File) Path() string { return d.cfg.Path }

// Direct reports whether the device does direct I/O (O_DIRECT).
func (d *File) Direct() bool { return d.cfg.Direct }

// Close implements backend.Device. Closing the descriptor also drops any
// lock held on it. A second Close returns ErrClosed.
func (d *File) Close() error {
	if !d.closed.CompareAndSwap(false, true) {
		return fmt.Errorf("%s: %w", d.cfg.Path, backend.ErrClosed)
	}
	if err := d.f.Close(); err != nil {
		return fmt.Errorf("%s: close: %w", d.cfg.Path, err)
	}
	return nil
}

// Stats returns a snapshot of the counters.
func (d *File) Stats() Stats {
	return Stats{
		Reads: d.reads.Load(), Writes: d.writes.Load(), Syncs: d.syncs.Load(), Discards: d.discards.Load(),
		ReadBytes: d.readBytes.Load(), WriteBytes: d.writeBytes.Load(),
		Errors: d.errs.Load(), DiscardsIgnored: d.discardsIgnored.Load(), SyncsElided: d.syncsElided.Load(),
	}
}

// fail wraps a kernel error with the call's context and its class.
func (d *File) fail(op string, n int, off int64, err error) error {
	d.errs.Add(1)
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err // the path is in our own message
	}
	return fmt.Errorf("%s: %s %d bytes at %d: %w", d.cfg.Path, op, n, off, Classify(op, err))
}

// controlFailed handles a failure to reach the descriptor, which happens
// only when the file was closed under a running call.
func (d *File) controlFailed(op string, err error) error {
	if d.closed.Load() {
		return fmt.Errorf("%s: %s: %w", d.cfg.Path, op, backend.ErrClosed)
	}
	d.errs.Add(1)
	return fmt.Errorf("%s: %s: %w: %w", d.cfg.Path, op, backend.ErrFailed, err)
}

// Classify returns err wrapped with the backend error class it belongs to:
// ErrClosed for a closed file, ErrCorrupt for a medium error on read
// (ENODATA is what the block layer reports for one, EBADMSG and EILSEQ what
// checksumming filesystems and some drivers report), ErrFailed for
// everything else (EIO, ENOSPC, a file that shrank under us, ...).
func Classify(op string, err error) error {
	switch {
	case errors.Is(err, os.ErrClosed):
		return fmt.Errorf("%w: %w", backend.ErrClosed, err)
	case err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: short %s: the file is shorter than the device size (truncated by someone else?)", backend.ErrFailed, op)
	case op == "read" && (errors.Is(err, unix.ENODATA) || errors.Is(err, unix.EBADMSG) || errors.Is(err, unix.EILSEQ)):
		return fmt.Errorf("%w: %w", backend.ErrCorrupt, err)
	}
	return fmt.Errorf("%w: %w", backend.ErrFailed, err)
}
