package segment

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/reedsolomon"
	"github.com/shalestore/shale/backend"
)

// Crash points of the segio flush protocol, in order. A CrashHook sees
// PointUnitWritten once per write unit, from the goroutine that wrote it.
const (
	// PointSegioSealed: a segio is full (or its deadline passed) and queued
	// for flush; nothing of it is on a drive.
	PointSegioSealed = "segio.sealed"
	// PointSegioEncoded: content map, checksums and parity computed; no unit
	// written yet.
	PointSegioEncoded = "segio.encoded"
	// PointUnitWritten: one write unit written (not yet synced). The
	// previous segio may still be syncing (see MaxUnsyncedSegios).
	PointUnitWritten = "segio.unit-written"
	// PointSegioWritten: every unit written, none synced by this segio's
	// syncs yet.
	PointSegioWritten = "segio.written"
	// PointSegioSynced: every drive synced; the segio is durable but not yet
	// reported. The next segio may be being written.
	PointSegioSynced = "segio.synced"
	// PointSegioReported: OnFlush returned.
	PointSegioReported = "segio.reported"
)

// CrashPoints lists the writer's crash points in protocol order.
var CrashPoints = []string{PointSegioSealed, PointSegioEncoded, PointUnitWritten, PointSegioWritten, PointSegioSynced, PointSegioReported}

// Position is a segio position: the segment (by its layout) and the segio
// index within it.
type Position struct {
	Layout Layout
	Segio  int
}

// Flushed reports a segio that became durable. Reports arrive in write
// order, one at a time.
type Flushed struct {
	Segment ID
	Segio   int
	// SeqLo and SeqHi bound the seqs of the segio's log records (both 0 if
	// it holds none).
	SeqLo, SeqHi uint64
	// Entries is the number of items the segio holds.
	Entries int
	// Bad lists drives whose write unit could not be written; the segio is
	// durable on the others (at least k) and readable degraded.
	Bad []int
	// Last is true when this was the segment's last segio.
	Last bool
}

// WriterOptions configure a Writer. Zero values take the defaults noted.
type WriterOptions struct {
	// Array is the array id written into every unit header.
	Array [16]byte
	// Stamp is written into every unit this writer writes. It must be
	// higher than the stamp of any earlier writer of the array (the store
	// uses the boot generation of the session), so that a position
	// rewritten after a crash can be told from the torn first attempt.
	Stamp uint64
	// Next returns the layout of the next segment to open, in increasing
	// segment id order. Required.
	Next func(ctx context.Context) (Layout, error)
	// Start is where the first segio goes. A zero Layout means "call Next".
	Start Position
	// OnFlush, if set, is called after each segio is durable, in order,
	// from the flusher goroutine. It must not call back into the Writer.
	OnFlush func(Flushed)
	// FlushIntervalMs is the deadline: a segio is sealed and flushed this
	// long after its first item even if it is not full. 0 means no
	// deadline (flush when full or on Flush).
	FlushIntervalMs int
	// MaxPendingSegios bounds the segios sealed but not yet durable;
	// Append blocks beyond it. Default 2.
	MaxPendingSegios int
	// MaxWritingDrives bounds how many drives of a stripe are written at
	// once (paper §4.4): write units in flight (WriteAt calls) per segio.
	// Syncs are not counted: they flush what was already written. Default
	// 2.
	MaxWritingDrives int
	// MaxUnsyncedSegios bounds how many segios are written but not yet
	// durable: 1 writes a segio only after the previous one is synced; 2
	// (the default) writes segio N+1 while segio N syncs, so the syncs'
	// latency overlaps the next writes. Reports (OnFlush, Flush) stay in
	// order: N+1 is reported only after N. Values above MaxUnsynced are
	// lowered to it: recovery verifies the last MaxUnsynced segios written
	// and relies on nothing older being torn.
	MaxUnsyncedSegios int
	// CrashHook, if set, is called at each named crash point. It may be
	// called from several goroutines at once.
	CrashHook func(point string)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// MaxUnsynced is the most segios a Writer leaves written but not yet
// synced at once, whatever its options: after a crash only the last
// MaxUnsynced segios written (in write order, across segment boundaries)
// can be torn or missing; every segio before them is durable.
const MaxUnsynced = 2

// WriterStats are counters of a Writer.
type WriterStats struct {
	Appends, AppendBytes, SegiosFlushed, UnitsWritten, UnitsFailed, SegmentsOpened atomic.Int64
}

// Writer appends cblocks and log records to segments. Append may be called
// from many goroutines. Sealed segios go through three stages, each a
// goroutine of its own: encode (content map, checksums, parity), write (the
// units, at most MaxWritingDrives at once) and sync (every drive written,
// then OnFlush). The stages overlap across segios, so segio N+1 is encoded
// and written while segio N syncs; segios are written, made durable and
// reported in address order.
//
// INVARIANT: at most MaxUnsynced segios are written but not durable; a
// segio is reported only after every segio before it.
type Writer struct {
	d    *Drives
	opts WriterOptions
	enc  reedsolomon.Encoder // nil when m == 0
	// Stats are live counters.
	Stats WriterStats

	mu       sync.Mutex
	cur      *segio // open segio, nil if none
	pos      Position
	havePos  bool // pos names the next segio to open
	sealedN  uint64
	timer    *time.Timer
	closed   bool
	err      error // sticky: a flush failed, the writer is dead
	restores []restoreItem
	appended bool
	// scratch receives AppendFunc items that cross a write unit boundary
	// before they are copied into the segio; it grows to the largest such
	// item (at most a segio). Used under mu.
	scratch []byte

	queue   chan *segio // sealed, to the encoder
	encoded chan *segio // encoded, to the write stage
	written chan *segio // written, to the sync stage
	// unsynced holds one token per segio between the start of its writes
	// and its report: at most MaxUnsyncedSegios.
	unsynced chan struct{}
	// free is a stack of segio buffers (LIFO: the most recently flushed,
	// likeliest still in cache, is reused first), at most maxFree.
	freeMu  sync.Mutex
	free    []*segio
	maxFree int
	done    chan struct{}

	fmu      sync.Mutex
	flushedN uint64
	flushErr error
	wake     chan struct{}
}

type restoreItem struct {
	a            Addr
	kind         Kind
	seqLo, seqHi uint64
	payload      []byte
}

// segio is one segio's buffers while it fills and flushes.
type segio struct {
	lay          Layout
	index        int
	shards       [][]byte // k+m aligned write units
	entries      []Entry
	front, back  uint32
	seqLo, seqHi uint64
	restored     bool
	n            uint64 // sealed order
	// bcrc holds each unit's body block checksums. Append computes a data
	// block's while it is hot, once no later item can change it:
	// payload bytes [crcLo, crcHi) are those still to do at encode.
	// INVARIANT: crcLo <= front and crcHi >= back, both multiples of
	// BlockSize; Append places items only at front and below back, so
	// blocks outside [crcLo, crcHi) are final. Restored segios (items at
	// fixed offsets) leave the whole range to encode.
	bcrc         [][]uint32
	crcLo, crcHi uint32
	encErr       error
	// Write stage results, read by the sync stage after the hand-off.
	werr error  // the write stage did not write (encoding failed, or the writer had failed)
	good []bool // per member: unit written
	bad  []int  // drives whose unit could not be written
}

// NewWriter starts a writer on d. Close it to stop its flusher.
func NewWriter(d *Drives, opts WriterOptions) (*Writer, error) {
	if opts.Next == nil {
		return nil, errors.New("segment: WriterOptions.Next is required")
	}
	if opts.MaxPendingSegios <= 0 {
		opts.MaxPendingSegios = 2
	}
	if opts.MaxWritingDrives <= 0 {
		opts.MaxWritingDrives = 2
	}
	if opts.MaxUnsyncedSegios <= 0 || opts.MaxUnsyncedSegios > MaxUnsynced {
		opts.MaxUnsyncedSegios = MaxUnsynced
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	w := &Writer{d: d, opts: opts, wake: make(chan struct{}), done: make(chan struct{}),
		queue: make(chan *segio, opts.MaxPendingSegios), encoded: make(chan *segio),
		written: make(chan *segio, opts.MaxUnsyncedSegios), unsynced: make(chan struct{}, opts.MaxUnsyncedSegios),
		maxFree: opts.MaxPendingSegios + opts.MaxUnsyncedSegios + 2}
	g := d.Geometry
	if g.Parity > 0 {
		enc, err := reedsolomon.New(g.Data, g.Parity, reedsolomon.WithAutoGoroutines(int(g.BodySize())))
		if err != nil {
			return nil, fmt.Errorf("segment: reedsolomon: %w", err)
		}
		w.enc = enc
	}
	if opts.Start.Layout.Members != nil {
		if err := d.CheckLayout(opts.Start.Layout); err != nil {
			return nil, err
		}
		w.pos, w.havePos = Position{Layout: opts.Start.Layout.Clone(), Segio: opts.Start.Segio}, true
	}
	go w.encoder()
	go w.writeStage()
	go w.syncStage()
	return w, nil
}

func (w *Writer) hook(p string) {
	if w.opts.CrashHook != nil {
		w.opts.CrashHook(p)
	}
}

func (w *Writer) getBuf() *segio {
	w.freeMu.Lock()
	if n := len(w.free); n > 0 {
		s := w.free[n-1]
		w.free = w.free[:n-1]
		w.freeMu.Unlock()
		return s
	}
	w.freeMu.Unlock()
	g := w.d.Geometry
	s := &segio{shards: make([][]byte, g.Width()), good: make([]bool, g.Width()), bcrc: make([][]uint32, g.Width())}
	for i := range s.shards {
		s.shards[i] = backend.AlignedBuffer(int(g.WriteUnit))
		s.bcrc[i] = make([]uint32, g.BodyBlocks())
	}
	return s
}

func (w *Writer) putBuf(s *segio) {
	w.freeMu.Lock()
	if len(w.free) < w.maxFree {
		w.free = append(w.free, s)
	}
	w.freeMu.Unlock()
}

// openLocked opens the segio at w.pos, or the first segio of the next
// segment. REQUIRES: w.mu held, w.cur == nil.
func (w *Writer) openLocked(ctx context.Context) error {
	g := w.d.Geometry
	if !w.havePos || w.pos.Segio >= g.SegiosPerAU() {
		lay, err := w.opts.Next(ctx)
		if err != nil {
			return fmt.Errorf("segment: opening next segment: %w", err)
		}
		if err := w.d.CheckLayout(lay); err != nil {
			return err
		}
		if w.havePos && lay.Segment <= w.pos.Layout.Segment {
			return fmt.Errorf("segment: next segment %d does not follow %d", lay.Segment, w.pos.Layout.Segment)
		}
		w.pos, w.havePos = Position{Layout: lay.Clone()}, true
		w.Stats.SegmentsOpened.Add(1)
	}
	s := w.getBuf()
	s.lay, s.index = w.pos.Layout, w.pos.Segio
	s.entries = s.entries[:0]
	s.front, s.back = 0, uint32(g.SegioBytes())
	s.crcLo, s.crcHi = 0, s.back
	s.seqLo, s.seqHi = 0, 0
	s.restored = false
	w.cur = s
	w.pos.Segio++
	return nil
}

// fits reports whether an item of n bytes of kind k fits in s.
func (s *segio) fits(k Kind, n uint32) bool {
	// Either way the item takes n bytes from the free middle, and the
	// content map one more entry.
	return uint64(s.front)+uint64(len(s.entries)+1)*entrySize+uint64(n) <= uint64(s.back)
}

// put copies p into the payload at off, across data shards as needed.
func (s *segio) put(g Geometry, off uint32, p []byte) {
	h, body := g.HeaderSize(), g.BodySize()
	o := int64(off)
	for len(p) > 0 {
		sh, in := o/body, o%body
		n := copy(s.shards[sh][h+in:g.WriteUnit], p)
		p = p[n:]
		o += int64(n)
	}
}

func (s *segio) zero(g Geometry, from, to uint32) {
	h, body := g.HeaderSize(), g.BodySize()
	o, end := int64(from), int64(to)
	for o < end {
		sh, in := o/body, o%body
		n := min(end-o, body-in)
		clear(s.shards[sh][h+in : h+in+n])
		o += n
	}
}

// crcBlocks computes the checksums of the payload blocks in [from, to)
// (multiples of BlockSize).
func (s *segio) crcBlocks(g Geometry, from, to uint32) {
	h, body := g.HeaderSize(), g.BodySize()
	for o := int64(from); o < int64(to); o += BlockSize {
		sh, in := o/body, o%body
		s.bcrc[sh][in/BlockSize] = crc(s.shards[sh][h+in : h+in+BlockSize])
	}
}

// crcHot checksums the blocks the last Append completed: below front,
// or at and above back. REQUIRES: s was filled by Append only.
func (s *segio) crcHot(g Geometry) {
	if lo := s.front / BlockSize * BlockSize; lo > s.crcLo {
		s.crcBlocks(g, s.crcLo, lo)
		s.crcLo = lo
	}
	if hi := (s.back + BlockSize - 1) / BlockSize * BlockSize; hi < s.crcHi {
		s.crcBlocks(g, hi, s.crcHi)
		s.crcHi = hi
	}
}

// place puts an appended item at the front (cblock) or back (record),
// checksumming the blocks it completes. The item's bytes are p, or, when
// fill is set, what fill writes: into the segio buffer itself when the item
// lies within one data unit, else into scratch and then copied (an item
// crossing a unit boundary is not contiguous in the buffer). It returns the
// entry and scratch, grown if it had to be.
// REQUIRES: s.fits(kind, n); len(p) == n when fill is nil.
func (s *segio) place(g Geometry, kind Kind, seqLo, seqHi uint64, n uint32, p []byte, fill func([]byte), scratch []byte) (Entry, []byte) {
	e := Entry{Kind: kind, Length: n, SeqLo: seqLo, SeqHi: seqHi}
	if kind == Cblock {
		e.Offset = s.front
	} else {
		e.Offset = s.back - n
	}
	switch {
	case fill == nil:
		s.put(g, e.Offset, p)
	case s.contiguous(g, e.Offset, n):
		fill(s.slice(g, e.Offset, n))
	default:
		if cap(scratch) < int(n) {
			scratch = make([]byte, n)
		}
		fill(scratch[:n])
		s.put(g, e.Offset, scratch[:n])
	}
	s.record(e)
	s.crcHot(g)
	return e, scratch
}

// contiguous reports whether payload bytes [off, off+n) lie in one data
// unit's body. REQUIRES: n > 0.
func (s *segio) contiguous(g Geometry, off, n uint32) bool {
	body := g.BodySize()
	return int64(off)/body == (int64(off)+int64(n)-1)/body
}

// slice returns the buffer bytes of payload [off, off+n).
// REQUIRES: s.contiguous(g, off, n).
func (s *segio) slice(g Geometry, off, n uint32) []byte {
	h, body := g.HeaderSize(), g.BodySize()
	sh, in := int64(off)/body, int64(off)%body
	return s.shards[sh][h+in : h+in+int64(n) : h+in+int64(n)]
}

func (s *segio) add(g Geometry, e Entry, p []byte) {
	s.put(g, e.Offset, p)
	s.record(e)
}

// record enters e, whose bytes are in place, in the content map and moves
// front or back past it.
func (s *segio) record(e Entry) {
	s.entries = append(s.entries, e)
	if e.Kind == Cblock {
		s.front = max(s.front, e.Offset+e.Length)
	} else {
		s.back = min(s.back, e.Offset)
		if e.SeqLo != 0 || e.SeqHi != 0 {
			if s.seqLo == 0 && s.seqHi == 0 {
				s.seqLo, s.seqHi = e.SeqLo, e.SeqHi
			} else {
				s.seqLo, s.seqHi = min(s.seqLo, e.SeqLo), max(s.seqHi, e.SeqHi)
			}
		}
	}
}

// Append adds an item to the open segio and returns its address at once;
// the item is durable when its segio is (see OnFlush and Flush). Cblocks go
// at the front, records at the back. seqLo..seqHi is recorded in the
// content map and, for records, in the segio header's seq range; the store
// does not interpret it.
//
// WAL rule (the caller's to keep): a record is appended only after the
// seqs it covers are durable in NVRAM.
//
// payload is copied before Append returns; the caller may reuse it.
func (w *Writer) Append(ctx context.Context, kind Kind, seqLo, seqHi uint64, payload []byte) (Addr, error) {
	return w.append(ctx, kind, seqLo, seqHi, len(payload), payload, nil)
}

// AppendFunc is Append for a caller that produces the item's bytes itself
// (a compressor, say): instead of copying a payload it calls fill once
// with dst, len(dst) == size, and the item is what fill leaves there. dst
// is the segio's own buffer when the item lies within one write unit (all
// but a few items per segio), so the bytes are written once, and the
// checksums of the blocks the item completes are computed right after
// fill, while they are in cache. An item crossing a unit boundary is
// filled into a scratch buffer and copied.
//
// fill runs with the writer's lock held, so it must be quick and must not
// call into the Writer (or anything waiting on it). It must write every
// byte of dst (dst holds stale bytes of an earlier segio, which would
// otherwise reach the drives) and must not keep dst after it returns.
// size and everything else are as for Append.
func (w *Writer) AppendFunc(ctx context.Context, kind Kind, seqLo, seqHi uint64, size int, fill func(dst []byte)) (Addr, error) {
	if fill == nil {
		return Addr{}, errors.New("segment: AppendFunc with a nil fill")
	}
	return w.append(ctx, kind, seqLo, seqHi, size, nil, fill)
}

// append is Append (fill nil, the item is payload) and AppendFunc.
func (w *Writer) append(ctx context.Context, kind Kind, seqLo, seqHi uint64, size int, payload []byte, fill func([]byte)) (Addr, error) {
	g := w.d.Geometry
	if kind != Cblock && kind != Record {
		return Addr{}, fmt.Errorf("segment: append of unknown kind %d", kind)
	}
	if seqLo > seqHi {
		return Addr{}, fmt.Errorf("segment: seq range %d..%d", seqLo, seqHi)
	}
	if size <= 0 || uint64(size)+entrySize > uint64(g.SegioBytes()) || uint64(size) > 1<<31-1 {
		return Addr{}, fmt.Errorf("segment: append of %d bytes (segio holds %d): %w", size, g.SegioBytes(), ErrTooLarge)
	}
	n := uint32(size)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usableLocked(); err != nil {
		return Addr{}, err
	}
	if len(w.restores) > 0 {
		return Addr{}, errors.New("segment: Append during restore; call EndRestore first")
	}
	w.appended = true
	for {
		if w.cur == nil {
			if err := w.openLocked(ctx); err != nil {
				return Addr{}, err
			}
		}
		if w.cur.fits(kind, n) {
			break
		}
		if err := w.sealLocked(ctx); err != nil {
			return Addr{}, err
		}
	}
	s := w.cur
	var e Entry
	e, w.scratch = s.place(g, kind, seqLo, seqHi, n, payload, fill, w.scratch)
	if len(s.entries) == 1 {
		w.armLocked()
	}
	w.Stats.Appends.Add(1)
	w.Stats.AppendBytes.Add(int64(n))
	return Addr{Segment: s.lay.Segment, Offset: int64(s.index)*g.SegioBytes() + int64(e.Offset), Length: int32(n)}, nil
}

func (w *Writer) usableLocked() error {
	if w.closed {
		return ErrClosed
	}
	if w.err != nil {
		return w.err
	}
	// Lock order: w.mu, then w.fmu.
	w.fmu.Lock()
	err := w.flushErr
	w.fmu.Unlock()
	return err
}

func (w *Writer) armLocked() {
	if w.opts.FlushIntervalMs <= 0 {
		return
	}
	s := w.cur
	d := time.Duration(w.opts.FlushIntervalMs) * time.Millisecond
	w.timer = time.AfterFunc(d, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.cur == s && w.usableLocked() == nil {
			// Errors are sticky in w.err and surface at the next call.
			_ = w.sealLocked(context.Background())
		}
	})
}

// sealLocked queues the open segio for flushing. It blocks while
// MaxPendingSegios are queued. REQUIRES: w.mu held, w.cur != nil.
func (w *Writer) sealLocked(ctx context.Context) error {
	s := w.cur
	w.cur = nil
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
	w.sealedN++
	s.n = w.sealedN
	w.hook(PointSegioSealed)
	select {
	case w.queue <- s:
		return nil
	case <-ctx.Done():
		// The segio is lost; its addresses were handed out, so the writer
		// cannot go on.
		w.err = fmt.Errorf("segment: sealing segio %d of segment %d: %w", s.index, s.lay.Segment, ctx.Err())
		return w.err
	}
}

// Flush seals the open segio, if it holds anything, and waits until every
// sealed segio is durable.
func (w *Writer) Flush(ctx context.Context) error {
	w.mu.Lock()
	if err := w.usableLocked(); err != nil {
		w.mu.Unlock()
		return err
	}
	if w.cur != nil && len(w.cur.entries) > 0 {
		if err := w.sealLocked(ctx); err != nil {
			w.mu.Unlock()
			return err
		}
	}
	target := w.sealedN
	w.mu.Unlock()
	return w.wait(ctx, target)
}

func (w *Writer) wait(ctx context.Context, target uint64) error {
	for {
		w.fmu.Lock()
		if w.flushErr != nil {
			err := w.flushErr
			w.fmu.Unlock()
			return err
		}
		if w.flushedN >= target {
			w.fmu.Unlock()
			return nil
		}
		ch := w.wake
		w.fmu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close flushes what is open, waits for it, and stops the flusher. The
// segment stays open on the drives: a later writer continues it from the
// position the store recovers.
func (w *Writer) Close(ctx context.Context) error {
	err := w.Flush(ctx)
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		if w.timer != nil {
			w.timer.Stop()
		}
		close(w.queue)
	}
	w.mu.Unlock()
	<-w.done
	if errors.Is(err, ErrClosed) {
		err = nil
	}
	return err
}

// Durable returns how many segios this writer has made durable.
func (w *Writer) Durable() uint64 {
	w.fmu.Lock()
	defer w.fmu.Unlock()
	return w.flushedN
}

// encoder seals segios in order (content map, checksums, parity) and
// hands them to the flusher, so the next segio's encoding overlaps the
// previous one's I/O.
func (w *Writer) encoder() {
	defer close(w.encoded)
	for s := range w.queue {
		s.encErr = w.encode(s)
		w.encoded <- s
	}
}

// writeStage writes sealed, encoded segios one after another and hands
// each to the sync stage. It starts writing a segio once fewer than
// MaxUnsyncedSegios are unsynced, so segio N+1 is written while N syncs.
func (w *Writer) writeStage() {
	defer close(w.written)
	for s := range w.encoded {
		w.unsynced <- struct{}{}
		w.fmu.Lock()
		failed := w.flushErr
		w.fmu.Unlock()
		s.werr = s.encErr
		if s.werr == nil && failed != nil {
			s.werr = failed
		}
		if s.werr == nil {
			w.write(s)
		}
		w.written <- s
	}
}

// syncStage syncs written segios in order and reports each once durable.
func (w *Writer) syncStage() {
	defer close(w.done)
	for s := range w.written {
		w.fmu.Lock()
		failed := w.flushErr != nil
		w.fmu.Unlock()
		err := s.werr
		if !failed && err == nil {
			err = w.syncAndReport(s)
		}
		w.fmu.Lock()
		if err != nil && w.flushErr == nil {
			w.flushErr = err
			w.opts.Logger.Error("segio flush failed; writer stopped", "segment", s.lay.Segment, "segio", s.index, "err", err)
		}
		if err == nil && !failed {
			w.flushedN = s.n
		}
		close(w.wake)
		w.wake = make(chan struct{})
		w.fmu.Unlock()
		// The error reaches callers through flushErr (usableLocked reads
		// it). Taking w.mu here could deadlock: a caller sealing a segio
		// holds w.mu while it waits for room in the queue, and the queue
		// drains only through this stage.
		<-w.unsynced
		w.putBuf(s)
	}
}

// encode fills in the content map, the unit headers and parity of s.
func (w *Writer) encode(s *segio) error {
	g := w.d.Geometry
	h, wu := g.HeaderSize(), g.WriteUnit
	// Content map right after the cblocks; zero the free middle so no old
	// buffer contents reach the drives.
	mapLen := uint32(len(s.entries) * entrySize)
	var ebuf [entrySize]byte
	mc := uint32(0)
	for i, e := range s.entries {
		encodeEntry(ebuf[:], e)
		s.put(g, s.front+uint32(i*entrySize), ebuf[:])
		mc = crc32Update(mc, ebuf[:])
	}
	s.zero(g, s.front+mapLen, s.back)
	if w.enc != nil {
		bodies := make([][]byte, g.Width())
		for i := range bodies {
			bodies[i] = s.shards[i][h:wu]
		}
		if err := w.enc.Encode(bodies); err != nil {
			return fmt.Errorf("segment: parity: %w", err)
		}
	}
	hd := Header{Data: g.Data, Parity: g.Parity, Size: h, WriteUnit: wu, AUSize: g.AUSize, Array: w.opts.Array,
		Segment: s.lay.Segment, Segio: s.index, Stamp: w.opts.Stamp, SeqLo: s.seqLo, SeqHi: s.seqHi,
		Front: s.front, Back: s.back, MapOffset: s.front, MapCount: uint32(len(s.entries)), MapCRC: mc,
		Members: s.lay.Members}
	if s.restored {
		hd.Flags |= flagRestored
	}
	// Data blocks Append did not checksum (the content map, the free
	// middle, what a restore placed), then every parity block.
	s.crcBlocks(g, s.crcLo, s.crcHi)
	for i := g.Data; i < g.Width(); i++ {
		body := s.shards[i][h:wu]
		for b := range s.bcrc[i] {
			s.bcrc[i][b] = crc(body[b*BlockSize : (b+1)*BlockSize])
		}
	}
	for i := range s.shards {
		hd.Shard = i
		hd.BlockCRCs = s.bcrc[i]
		encodeHeader(s.shards[i][:h], &hd)
	}
	return nil
}

func crc32Update(c uint32, b []byte) uint32 {
	return crc32Castagnoli(c, b)
}

// write writes s's units to its drives, at most MaxWritingDrives at
// once, recording in s which were written and which drives failed.
func (w *Writer) write(s *segio) {
	ctx := context.Background()
	w.hook(PointSegioEncoded)
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		sem = make(chan struct{}, w.opts.MaxWritingDrives)
	)
	s.bad = s.bad[:0]
	clear(s.good)
	for i, m := range s.lay.Members {
		if w.d.Failed(m.Drive) {
			// Under mu: write goroutines started earlier in this loop
			// may be appending too.
			mu.Lock()
			s.bad = append(s.bad, m.Drive)
			mu.Unlock()
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			w.d.busy[m.Drive].Add(1)
			err := w.d.Devs[m.Drive].WriteAt(ctx, s.shards[i], w.d.UnitOffset(m, s.index))
			w.d.busy[m.Drive].Add(-1)
			if err != nil {
				w.Stats.UnitsFailed.Add(1)
				w.opts.Logger.Warn("write unit failed", "segment", s.lay.Segment, "segio", s.index, "drive", m.Drive, "err", err)
				mu.Lock()
				s.bad = append(s.bad, m.Drive)
				mu.Unlock()
				return
			}
			w.Stats.UnitsWritten.Add(1)
			s.good[i] = true
			w.hook(PointUnitWritten)
		}()
	}
	wg.Wait()
	w.hook(PointSegioWritten)
}

// syncAndReport syncs the drives s was written to and reports s durable.
// REQUIRES: every segio before s is reported (the sync stage runs them in
// order).
func (w *Writer) syncAndReport(s *segio) error {
	ctx := context.Background()
	g := w.d.Geometry
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		serr error
	)
	bad := s.bad
	for i, m := range s.lay.Members {
		if !s.good[i] {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.d.Devs[m.Drive].Sync(ctx); err != nil {
				mu.Lock()
				bad = append(bad, m.Drive)
				serr = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(bad) > g.Parity {
		return fmt.Errorf("segment %d segio %d: %d of %d write units failed (last sync error: %v): %w",
			s.lay.Segment, s.index, len(bad), g.Width(), serr, backend.ErrFailed)
	}
	w.hook(PointSegioSynced)
	w.Stats.SegiosFlushed.Add(1)
	if w.opts.OnFlush != nil {
		// A copy: s.bad is reused with s's buffers.
		bad = slices.Clone(bad)
		slices.Sort(bad)
		w.opts.OnFlush(Flushed{Segment: s.lay.Segment, Segio: s.index, SeqLo: s.seqLo, SeqHi: s.seqHi,
			Entries: len(s.entries), Bad: bad, Last: s.index == g.SegiosPerAU()-1})
	}
	w.hook(PointSegioReported)
	return nil
}

// Restore queues an item to be put back at exactly the address it had
// before a crash. It is for recovery only: call it before the first Append,
// for addresses at or after the writer's Start position (everything before
// it is already durable, and the store filters those out), then call
// EndRestore. The engine restores what it holds in NVRAM (acknowledged
// cblocks, and records if it wishes) so that addresses handed out before the
// crash stay valid. payload is copied.
func (w *Writer) Restore(a Addr, kind Kind, seqLo, seqHi uint64, payload []byte) error {
	g := w.d.Geometry
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usableLocked(); err != nil {
		return err
	}
	if w.appended || w.cur != nil {
		return errors.New("segment: Restore after Append")
	}
	if int64(len(payload)) != int64(a.Length) || a.Length <= 0 || a.Offset < 0 || a.Offset+int64(a.Length) > g.SegmentBytes() ||
		a.Offset/g.SegioBytes() != (a.Offset+int64(a.Length)-1)/g.SegioBytes() || (kind != Cblock && kind != Record) || seqLo > seqHi {
		return fmt.Errorf("segment: restore of %v (%v, %d bytes) is not a valid item address", a, kind, len(payload))
	}
	if w.havePos && (a.Segment < w.pos.Layout.Segment || a.Segment == w.pos.Layout.Segment && int(a.Offset/g.SegioBytes()) < w.pos.Segio) {
		return fmt.Errorf("segment: restore of %v before the restart position (segment %d segio %d)", a, w.pos.Layout.Segment, w.pos.Segio)
	}
	w.restores = append(w.restores, restoreItem{a: a, kind: kind, seqLo: seqLo, seqHi: seqHi, payload: slices.Clone(payload)})
	return nil
}

// EndRestore writes the restored items at their addresses, segio by segio
// in address order, writing empty segios over any positions in between so
// that the segment stays a contiguous run of segios, and waits until they
// are durable. Appends continue after the last restored segio.
func (w *Writer) EndRestore(ctx context.Context) error {
	g := w.d.Geometry
	w.mu.Lock()
	items := w.restores
	w.restores = nil
	if err := w.usableLocked(); err != nil {
		w.mu.Unlock()
		return err
	}
	slices.SortFunc(items, func(a, b restoreItem) int {
		return cmp.Or(cmp.Compare(a.a.Segment, b.a.Segment), cmp.Compare(a.a.Offset, b.a.Offset))
	})
	for _, it := range items {
		segio := int(it.a.Offset / g.SegioBytes())
		// Seek: seal positions before the item's segio (empty or not).
		for w.cur == nil || w.cur.lay.Segment != it.a.Segment || w.cur.index != segio {
			if w.cur != nil {
				if err := w.sealLocked(ctx); err != nil {
					w.mu.Unlock()
					return err
				}
			}
			if err := w.openLocked(ctx); err != nil {
				w.mu.Unlock()
				return err
			}
			w.cur.restored = true
			if w.cur.lay.Segment > it.a.Segment || w.cur.lay.Segment == it.a.Segment && w.cur.index > segio {
				w.mu.Unlock()
				return fmt.Errorf("segment: restore of %v: segment %d is not among the segments to be written", it.a, it.a.Segment)
			}
		}
		s := w.cur
		e := Entry{Kind: it.kind, Offset: uint32(it.a.Offset % g.SegioBytes()), Length: uint32(it.a.Length), SeqLo: it.seqLo, SeqHi: it.seqHi}
		if err := s.canPlace(e); err != nil {
			w.mu.Unlock()
			return fmt.Errorf("segment: restore of %v: %w", it.a, err)
		}
		s.add(g, e, it.payload)
	}
	if w.cur != nil {
		if err := w.sealLocked(ctx); err != nil {
			w.mu.Unlock()
			return err
		}
	}
	target := w.sealedN
	w.mu.Unlock()
	return w.wait(ctx, target)
}

// canPlace checks that e can go at its fixed offset in s without
// overlapping another item, the content map, or the other area.
func (s *segio) canPlace(e Entry) error {
	front, back := s.front, s.back
	end := e.Offset + e.Length
	if e.Kind == Cblock {
		front = max(front, end)
	} else {
		back = min(back, e.Offset)
	}
	if uint64(front)+uint64(len(s.entries)+1)*entrySize > uint64(back) {
		return fmt.Errorf("cblocks, content map and records would overlap")
	}
	for _, o := range s.entries {
		if e.Offset < o.Offset+o.Length && o.Offset < end {
			return fmt.Errorf("overlaps the item at %d+%d", o.Offset, o.Length)
		}
	}
	return nil
}
