// Package store is the persistence layer below the metadata: it ties the
// data drives (segments, package segment), the boot region (package boot),
// the AU allocator and frontier set (package alloc) and the NVRAM commit log
// (package nvlog) into one array that can be created, written, read,
// checkpointed and recovered.
//
// # Recovery (paper §4.3)
//
// Open reads the newest valid boot generation, scans only the frontier
// set's AUs for segio headers, and opens the NVRAM log. It returns what it
// found: the metadata roots, the log records in the frontier segments, and
// the position where writing resumes. The engine then replays NVRAM
// (Replay), puts back at their original addresses the acknowledged items
// whose segio was lost in the crash (Restore), and calls EndRestore; after
// that appends continue. Recovery reads O(frontier) bytes, never O(data).
//
// # Durability contract with the engine
//
//   - Append returns an item's address at once; the item is durable when
//     OnFlush reports its segio (or Flush returns). Until then the engine
//     keeps it in NVRAM and trims the log only past durable segios.
//   - WAL rule: a log record is appended only after the seqs it covers are
//     durable in NVRAM (the store records seq ranges, it does not check
//     them).
//   - Checkpoint(roots) REQUIRES that the roots cover every log record in
//     every segio reported durable before the call: closed segments then
//     leave the frontier set and are not scanned again.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"

	"github.com/shalestore/shale/backend"
	"github.com/shalestore/shale/core/alloc"
	"github.com/shalestore/shale/core/boot"
	"github.com/shalestore/shale/core/nvlog"
	"github.com/shalestore/shale/core/segment"
)

// Crash points of the store's own protocol steps.
const (
	// PointRefillPlanned: new frontier segments planned in memory, not yet
	// persisted.
	PointRefillPlanned = "alloc.refill-planned"
	// PointFrontierPersisted: a boot generation holding the refilled
	// frontier is durable; nothing was handed out from it yet.
	PointFrontierPersisted = "frontier.persisted"
	// PointCheckpointed: a checkpoint's boot generation is durable.
	PointCheckpointed = "checkpoint.done"
	// PointRecoverScanned: recovery scanned the frontier, wrote nothing.
	PointRecoverScanned = "recover.scanned"
	// PointRecoverMounted: recovery wrote the new session's boot
	// generation.
	PointRecoverMounted = "recover.mounted"
)

// CrashPoints lists every crash point a store's CrashHook can see: its own,
// the segio writer's, the boot region's and the NVRAM log's.
var CrashPoints = slices.Concat(
	[]string{PointRefillPlanned, PointFrontierPersisted, PointCheckpointed, PointRecoverScanned, PointRecoverMounted},
	segment.CrashPoints, boot.CrashPoints, nvlog.CrashPoints)

// Error classes.
var (
	// ErrUnknownSegment means a read named a segment whose layout the store
	// does not know (neither written nor found this session, nor given
	// with AddLayout).
	ErrUnknownSegment = errors.New("store: unknown segment")
	// ErrDriveOrder means a drive's label names another position.
	ErrDriveOrder = errors.New("store: drives out of order")
)

// Options configure Create and Open.
type Options struct {
	// Geometry is used by Create (zero: segment.DefaultGeometry()); Open
	// takes it from the boot region.
	Geometry segment.Geometry
	// BootCopies is how many drives get each boot generation (default 3,
	// or every drive if fewer).
	BootCopies int
	// MaxRootsBytes bounds the metadata roots' total size, for sizing the
	// boot region at Create (default 64 KiB).
	MaxRootsBytes int
	// Alloc bounds the frontier set.
	Alloc alloc.Options
	// FlushIntervalMs, MaxPendingSegios and MaxWritingDrives configure the
	// segio writer (see segment.WriterOptions).
	FlushIntervalMs  int
	MaxPendingSegios int
	MaxWritingDrives int
	// NVLog configures the NVRAM log; its UUID is set to the array id.
	NVLog nvlog.Options
	// OnFlush is told of every segio that became durable, in order.
	OnFlush func(segment.Flushed)
	// CrashHook, if set, is called at each named crash point (see
	// CrashPoints), from several goroutines possibly.
	CrashHook func(point string)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (o *Options) fill() {
	if o.BootCopies <= 0 {
		o.BootCopies = 3
	}
	if o.MaxRootsBytes <= 0 {
		o.MaxRootsBytes = 64 << 10
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.NVLog.Logger == nil {
		o.NVLog.Logger = o.Logger
	}
}

// Store is an open array.
type Store struct {
	opts   Options
	d      *segment.Drives
	log    *nvlog.Log
	reader *segment.Reader
	writer *segment.Writer
	bw     *boot.Writer

	mu      sync.Mutex
	state   *boot.State // the last generation written
	alloc   *alloc.Allocator
	layouts map[segment.ID]segment.Layout
	restart segment.Position
}

func (s *Store) hook(p string) {
	if s.opts.CrashHook != nil {
		s.opts.CrashHook(p)
	}
}

// slotSize is the boot slot size for an array of these drives.
func slotSize(g segment.Geometry, aus []int64, o Options) int64 {
	a := o.Alloc
	maxFrontier := a.MaxFrontier
	if maxFrontier <= 0 {
		maxFrontier = 64
	}
	n := int64(32 + 100 + len(aus)*28 + 4 + maxFrontier*(8+8*g.Width()) + 4 + o.MaxRootsBytes + boot.MaxRoots*6 + 4 + alloc.EncodedSize(aus))
	return (n + 4095) / 4096 * 4096
}

// Create formats drives and nvram as a new, empty array and opens it.
// Everything on them is lost.
func Create(ctx context.Context, drives []backend.Device, nvram backend.Device, opts Options) (*Store, error) {
	opts.fill()
	g := opts.Geometry
	if g == (segment.Geometry{}) {
		g = segment.DefaultGeometry()
	}
	if err := g.Validate(); err != nil {
		return nil, err
	}
	// Size the boot region from the AU counts it must describe (an upper
	// bound: computed as if there were no boot region).
	var aus []int64
	for _, d := range drives {
		aus = append(aus, d.Size()/g.AUSize)
	}
	slot := slotSize(g, aus, opts)
	base := boot.Base(slot)
	d, err := segment.NewDrives(g, base, drives)
	if err != nil {
		return nil, err
	}
	aus = aus[:0]
	for i := range drives {
		aus = append(aus, d.AUs(i))
	}
	array := boot.NewID()
	st := &boot.State{Array: array, Geometry: g, Base: base, Roots: map[string][]byte{}}
	for i, dev := range drives {
		l := boot.Label{Array: array, Drive: boot.NewID(), Index: i, Drives: len(drives), SlotSize: slot, Base: base}
		if err := boot.WriteLabel(ctx, dev, l); err != nil {
			return nil, fmt.Errorf("store: drive %d: %w", i, err)
		}
		st.Drives = append(st.Drives, boot.Drive{ID: l.Drive, Size: dev.Size()})
	}
	al := alloc.New(g, aus, opts.Alloc)
	if err := al.Refill(); err != nil {
		return nil, fmt.Errorf("store: planning the first segments: %w", err)
	}
	nopts := opts.NVLog
	nopts.UUID = array
	nopts.CrashHook = opts.CrashHook
	nopts.Force = true
	if err := nvlog.Format(ctx, nvram, nopts); err != nil {
		return nil, fmt.Errorf("store: nvram: %w", err)
	}
	s := &Store{opts: opts, d: d, state: st, alloc: al, layouts: map[segment.ID]segment.Layout{},
		bw: &boot.Writer{SlotSize: slot, CrashHook: opts.CrashHook, Logger: opts.Logger}}
	if err := s.writeBootLocked(ctx); err != nil {
		return nil, err
	}
	al.Persisted()
	if err := s.start(ctx, nvram, segment.Position{}); err != nil {
		return nil, err
	}
	opts.Logger.Info("store: created array", "geometry", g.String(), "drives", len(drives), "boot_slot_bytes", slot)
	return s, nil
}

// start opens the NVRAM log and the reader and writer.
func (s *Store) start(ctx context.Context, nvram backend.Device, at segment.Position) error {
	nopts := s.opts.NVLog
	nopts.UUID = s.state.Array
	nopts.CrashHook = s.opts.CrashHook
	nopts.Force = false
	lg, err := nvlog.Open(ctx, nvram, nopts)
	if err != nil {
		return fmt.Errorf("store: nvram: %w", err)
	}
	s.log = lg
	s.reader, err = segment.NewReader(s.d, segment.ReaderOptions{Array: s.state.Array})
	if err != nil {
		return err
	}
	s.writer, err = segment.NewWriter(s.d, segment.WriterOptions{
		Array: s.state.Array, Stamp: s.state.Generation, Next: s.next, Start: at,
		OnFlush: s.onFlush, FlushIntervalMs: s.opts.FlushIntervalMs, MaxPendingSegios: s.opts.MaxPendingSegios,
		MaxWritingDrives: s.opts.MaxWritingDrives, CrashHook: s.opts.CrashHook, Logger: s.opts.Logger,
	})
	return err
}

// writeBootLocked writes the next boot generation from the allocator's
// state and the current roots. REQUIRES: s.mu held (or exclusive access).
func (s *Store) writeBootLocked(ctx context.Context) error {
	next := s.state.Clone()
	next.Generation = s.state.Generation + 1
	next.Frontier = s.alloc.Frontier()
	next.NextSegment = s.alloc.NextID()
	next.Alloc = s.alloc.Encode()
	for i := range next.Drives {
		next.Drives[i].Failed = s.d.Failed(i)
	}
	var copies []backend.Device
	for i, dev := range s.d.Devs {
		if len(copies) < s.opts.BootCopies && !s.d.Failed(i) {
			copies = append(copies, dev)
		}
	}
	if err := s.bw.Write(ctx, copies, next); err != nil {
		return fmt.Errorf("store: boot generation %d: %w", next.Generation, err)
	}
	s.state = next
	return nil
}

// next is the writer's source of segments: the next planned segment of the
// persisted frontier, refilling (and persisting) the frontier ahead of need.
func (s *Store) next(ctx context.Context) (segment.Layout, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.alloc.NeedRefill() {
		if err := s.refillLocked(ctx); err != nil {
			s.opts.Logger.Warn("store: frontier refill failed", "err", err)
		}
	}
	lay, ok := s.alloc.Take()
	if !ok {
		return segment.Layout{}, fmt.Errorf("store: no segment left in the frontier set: %w", alloc.ErrNoSpace)
	}
	s.layouts[lay.Segment] = lay
	return lay, nil
}

// refillLocked plans more frontier segments and persists them.
// REQUIRES: s.mu held.
func (s *Store) refillLocked(ctx context.Context) error {
	if err := s.alloc.Refill(); err != nil {
		return err
	}
	s.hook(PointRefillPlanned)
	if err := s.writeBootLocked(ctx); err != nil {
		return err
	}
	s.alloc.Persisted()
	s.hook(PointFrontierPersisted)
	return nil
}

func (s *Store) onFlush(f segment.Flushed) {
	s.mu.Lock()
	if f.Last {
		s.alloc.Closed(f.Segment)
	}
	// A drive that failed a write is treated as failed (fail-stop): no
	// more I/O goes to it and planned segments are re-planned without it.
	// The boot region records it at its next write.
	for _, dr := range f.Bad {
		if !s.alloc.Failed(dr) {
			s.opts.Logger.Error("store: drive failed a write; marking it failed", "drive", dr, "segment", f.Segment, "segio", f.Segio)
			s.d.SetFailed(dr, true)
			s.alloc.SetFailed(dr, true)
		}
	}
	s.mu.Unlock()
	if s.opts.OnFlush != nil {
		s.opts.OnFlush(f)
	}
}

// Append adds a cblock or log record to the open segio and returns its
// address at once (see segment.Writer.Append for the contract).
func (s *Store) Append(ctx context.Context, kind segment.Kind, seqLo, seqHi uint64, payload []byte) (segment.Addr, error) {
	return s.writer.Append(ctx, kind, seqLo, seqHi, payload)
}

// AppendFunc is Append for a caller that writes the item itself into the
// segio buffer (a compressor, say): fill gets dst of size bytes and must
// write all of it (see segment.Writer.AppendFunc for the contract).
func (s *Store) AppendFunc(ctx context.Context, kind segment.Kind, seqLo, seqHi uint64, size int, fill func(dst []byte)) (segment.Addr, error) {
	return s.writer.AppendFunc(ctx, kind, seqLo, seqHi, size, fill)
}

// Flush makes everything appended so far durable.
func (s *Store) Flush(ctx context.Context) error { return s.writer.Flush(ctx) }

// Read fills buf (len(buf) == a.Length) with the item at a, rebuilding
// from parity if need be; bad lists the write units found bad.
func (s *Store) Read(ctx context.Context, a segment.Addr, buf []byte) ([]segment.BadUnit, error) {
	if len(buf) != int(a.Length) {
		return nil, fmt.Errorf("store: read of %v into %d bytes", a, len(buf))
	}
	return s.ReadAt(ctx, a.Segment, buf, a.Offset)
}

// ReadAt reads any byte range of a segment's data space.
func (s *Store) ReadAt(ctx context.Context, seg segment.ID, buf []byte, off int64) ([]segment.BadUnit, error) {
	s.mu.Lock()
	lay, ok := s.layouts[seg]
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("store: segment %d: %w", seg, ErrUnknownSegment)
	}
	return s.reader.ReadAt(ctx, lay, buf, off)
}

// ReadBlocks is segment.Reader.ReadBlocks on a known segment: the n bytes
// at off, read into buf (aligned, SpanBytes(off, n) long) without a bounce
// copy; the result is a slice of buf. rebuilt says some bytes were
// reconstructed from parity and not checked against a checksum of their
// own.
func (s *Store) ReadBlocks(ctx context.Context, seg segment.ID, off int64, n int, buf []byte) (data []byte, bad []segment.BadUnit, rebuilt bool, err error) {
	s.mu.Lock()
	lay, ok := s.layouts[seg]
	s.mu.Unlock()
	if !ok {
		return nil, nil, false, fmt.Errorf("store: segment %d: %w", seg, ErrUnknownSegment)
	}
	return s.reader.ReadBlocks(ctx, lay, off, n, buf)
}

// Layout returns a known segment's layout, to persist in the engine's
// segment table.
func (s *Store) Layout(seg segment.ID) (segment.Layout, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.layouts[seg]
	return l.Clone(), ok
}

// AddLayout tells the store where an older segment lives (from the
// engine's segment table) so it can be read.
func (s *Store) AddLayout(l segment.Layout) error {
	if err := s.d.CheckLayout(l); err != nil {
		return err
	}
	s.mu.Lock()
	s.layouts[l.Segment] = l.Clone()
	s.mu.Unlock()
	return nil
}

// Space returns, per drive, the AUs not in use (0 for a failed drive) and
// the AUs the drive holds. AUs of planned frontier segments count as in
// use. It walks the allocator's bitmaps: O(AUs), call it now and then, not
// per I/O.
func (s *Store) Space() (free, total []int64) {
	s.mu.Lock()
	free = s.alloc.FreeAUs()
	s.mu.Unlock()
	total = make([]int64, len(free))
	for i := range free {
		total[i] = s.d.AUs(i)
		if s.d.Failed(i) {
			free[i] = 0
		}
	}
	return free, total
}

// Log is the NVRAM commit log (commit, trim).
func (s *Store) Log() *nvlog.Log { return s.log }

// Drives exposes the drive state (busy and failed drives).
func (s *Store) Drives() *segment.Drives { return s.d }

// Writer and Reader expose the segment writer and reader (for their
// stats).
func (s *Store) Writer() *segment.Writer { return s.writer }

// Reader returns the segment reader.
func (s *Store) Reader() *segment.Reader { return s.reader }

// Geometry returns the array's geometry.
func (s *Store) Geometry() segment.Geometry { return s.d.Geometry }

// Array returns the array id.
func (s *Store) Array() [16]byte { return s.state.Array }

// Generation returns the last boot generation written.
func (s *Store) Generation() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.Generation
}

// Roots returns a copy of the roots of the last boot generation.
func (s *Store) Roots() map[string][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.Clone().Roots
}

// Checkpoint writes a boot generation holding roots (nil keeps the current
// ones) and drops closed segments from the frontier set. REQUIRES: roots
// cover every log record of every segio reported durable before the call
// (see the package comment). When it returns nil the generation is durable.
func (s *Store) Checkpoint(ctx context.Context, roots map[string][]byte) error {
	total := 0
	for k, v := range roots {
		total += len(k) + len(v)
		if len(k) > boot.MaxRootName {
			return fmt.Errorf("store: root name %q longer than %d", k, boot.MaxRootName)
		}
	}
	if total > s.opts.MaxRootsBytes || len(roots) > boot.MaxRoots {
		return fmt.Errorf("store: %d roots of %d bytes exceed the limit of %d bytes", len(roots), total, s.opts.MaxRootsBytes)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if roots != nil {
		s.state.Roots = maps.Clone(roots)
	}
	s.alloc.DropClosed()
	if err := s.writeBootLocked(ctx); err != nil {
		return err
	}
	s.alloc.Persisted()
	s.hook(PointCheckpointed)
	return nil
}

// SetFailed marks drive i failed: no more I/O goes to it, planned segments
// are re-planned without it, and the boot region records it.
//
// A failed drive that comes back stays failed: there is no call to
// un-fail it, and Open keeps every drive the boot region marks failed
// failed even when its label reads fine, so its AUs are neither read nor
// allocated. Segments written while it was failed stay degraded (one unit
// short; reads rebuild from parity). A caller that un-fails it at the
// segment level (Drives().SetFailed(i, false)) gets no wrong data: units
// the drive missed carry another segment's or an older write's header, the
// reader counts them bad and rebuilds, but the allocator still skips the
// drive. Rebuild (rewriting the missing units, then un-failing) is not
// built.
func (s *Store) SetFailed(ctx context.Context, i int) error {
	if i < 0 || i >= len(s.d.Devs) {
		return fmt.Errorf("store: no drive %d", i)
	}
	s.d.SetFailed(i, true)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.alloc.SetFailed(i, true)
	return s.refillLocked(ctx)
}

// Close flushes what was appended and closes the writer and the NVRAM log.
// The devices stay open (the caller owns them).
func (s *Store) Close(ctx context.Context) error {
	var errs []error
	if s.writer != nil {
		errs = append(errs, s.writer.Close(ctx))
	}
	if s.log != nil {
		if err := s.log.Close(); err != nil && !errors.Is(err, nvlog.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
