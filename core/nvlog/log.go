package nvlog

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/shalestore/shale/backend"
)

// Log is an open NVRAM commit log. All methods are safe for concurrent use.
type Log struct {
	// Lock order: sbMu before mu. Only the writer goroutine waits on cond.

	dev    backend.Device
	opts   Options
	logger *slog.Logger
	logID  [16]byte
	uuid   [16]byte
	blk    int64 // batch alignment, from the superblock
	// session is this Open's session number, durable in the superblock
	// before the first batch carrying it is written.
	session uint64
	// maxBatch bounds a batch's header+entries; maxEntry bounds len(entry);
	// maxSingle bounds a single entry so its batch fits the region.
	maxBatch, maxEntry, maxSingle int
	bg                            context.Context // device calls of the writer and of Trim (never cancelled midway)

	// sbMu serializes superblock writes (Trim, rewind) and is held by
	// Replay so that no space is freed while it reads.
	sbMu   sync.Mutex
	sbSlot int    // guarded by sbMu: slot holding the newest durable copy
	sbGen  uint64 // guarded by sbMu: its generation
	sbBuf  []byte // guarded by sbMu: one aligned slot

	mu   sync.Mutex
	cond *sync.Cond // on mu; the writer waits for entries, copies, space
	// Guarded by mu:
	open        *batch    // the batch entries join; never nil
	spare       *batch    // the other buffer, nil while it is being written
	queue       waitQueue // committers waiting for room in a batch, FIFO
	nextSeq     uint64    // seq of the next entry to join
	placedSeq   uint64    // seq after the last batch placed in the ring
	durableSeq  uint64    // every seq ≤ durableSeq is durable
	trimSeq     uint64    // durable trim point
	tailSeq     uint64    // startSeq of the durable superblock
	tailSession uint64    // startSession of the durable superblock
	ring        ring
	locs        locQueue // live batches, oldest first; the newest may be in flight
	waiting     bool     // writer waits for space
	closed      bool
	err         error // sticky failure; wraps ErrFailed

	timer *time.Timer // MaxDelay wake-up of the writer

	acks          chan *ackList // writer → completion goroutine, in batch order
	freeAcks      chan *ackList // free list of ack lists
	writerDone    chan struct{}
	completerDone chan struct{}

	waiters sync.Pool // *waiter
	stats   counters
}

// batch is one batch buffer. Two exist; they take turns being open (taking
// entries) and being written.
type batch struct {
	buf      []byte // aligned; header at [0:64], entries from 64
	n        int    // bytes used, header included
	count    int
	firstSeq uint64
	firstAt  int64 // mono() when the first entry joined
	pending  int   // reserved entries not yet copied in; guarded by Log.mu
	sealed   bool
	acks     *ackList
}

func (b *batch) reset(acks *ackList) {
	b.n = batchHeaderBytes
	b.count = 0
	b.firstSeq = 0
	b.pending = 0
	b.sealed = false
	b.acks = acks
}

// ackRec says whom to tell about one entry.
type ackRec struct {
	seq   uint64
	w     *waiter             // Commit: send on w.done
	fn    func(uint64, error) // CommitAsync: call
	start int64               // mono() at the call, for latency
}

// ackList is the acknowledgements of one batch, handed to the completion
// goroutine after the batch's sync.
type ackList struct {
	recs []ackRec
	err  error
}

// waiter is a committer's pooled wait state.
type waiter struct {
	ready chan struct{} // cap 1: a queued committer got its reservation (or err)
	done  chan error    // cap 1: Commit's durability result
	// Set by the committer before queueing, read by the granter; both
	// under Log.mu.
	need  int
	fn    func(uint64, error)
	start int64
	// Reservation, written by the granter before signalling ready.
	b   *batch
	off int
	seq uint64
	err error
}

// Format initializes an empty log on dev: both superblock copies, with the
// identity opts.UUID, a fresh random log identity and the first seq
// opts.FirstSeq. It refuses (ErrFormatted) a device that already holds a
// valid log, whatever its identity, unless opts.Force is set. Batches of an
// earlier log left in the region are ignored by the new one: they carry
// another log identity.
func Format(ctx context.Context, dev backend.Device, opts Options) error {
	o, err := opts.withDefaults()
	if err != nil {
		return err
	}
	blk, regionLen, err := geometry(dev)
	if err != nil {
		return err
	}
	slots := backend.AlignedBuffer(2 * superSlotBytes)
	supers, _, err := readSupers(ctx, dev, slots)
	if err != nil {
		return fmt.Errorf("nvlog: format: %w", err)
	}
	var maxGen uint64
	first := 0 // write first the slot that does not hold the newest old copy
	for i, sb := range supers {
		if sb == nil {
			continue
		}
		if !o.Force {
			return fmt.Errorf("nvlog: format: superblock %d (generation %d, array %x): %w", i, sb.gen, sb.uuid, ErrFormatted)
		}
		if sb.gen > maxGen {
			maxGen, first = sb.gen, 1-i
		}
	}
	sb := superblock{
		gen:        maxGen + 1,
		uuid:       o.UUID,
		blockBytes: uint32(blk),
		regionOff:  regionOff,
		regionLen:  regionLen,
		trimSeq:    o.FirstSeq - 1,
		startPos:   regionOff,
		startSeq:   o.FirstSeq,
		lastSeq:    o.FirstSeq - 1,
	}
	if _, err := rand.Read(sb.logID[:]); err != nil {
		return fmt.Errorf("nvlog: format: log identity: %w", err)
	}
	buf := slots[:superSlotBytes]
	for k, slot := range []int{first, 1 - first} {
		encodeSuper(buf, &sb)
		if err := dev.WriteAt(ctx, buf, int64(slot)*superSlotBytes); err != nil {
			return fmt.Errorf("nvlog: format: write superblock %d: %w", slot, err)
		}
		if err := dev.Sync(ctx); err != nil {
			return fmt.Errorf("nvlog: format: sync superblock %d: %w", slot, err)
		}
		if k == 0 && o.CrashHook != nil {
			o.CrashHook(CrashFormatFirstCopy)
		}
		sb.gen++
	}
	o.Logger.Info("nvlog: formatted", "array", fmt.Sprintf("%x", o.UUID), "log", fmt.Sprintf("%x", sb.logID),
		"region_bytes", regionLen, "block_bytes", blk, "first_seq", o.FirstSeq)
	return nil
}

// readSupers reads and decodes both superblock slots into buf (two slots
// long). A copy that does not decode, or whose slot the device reports
// unreadable (backend.ErrCorrupt, as a torn write may leave it), is nil with
// the reason in errs; only other device errors are returned.
func readSupers(ctx context.Context, dev backend.Device, buf []byte) (supers [2]*superblock, errs [2]error, err error) {
	for i := range 2 {
		b := buf[i*superSlotBytes : (i+1)*superSlotBytes]
		if err := dev.ReadAt(ctx, b, int64(i)*superSlotBytes); err != nil {
			if !errors.Is(err, backend.ErrCorrupt) {
				return supers, errs, fmt.Errorf("read superblock %d: %w", i, err)
			}
			errs[i] = err
			continue
		}
		sb, err := decodeSuper(b)
		if err != nil {
			errs[i] = err
			continue
		}
		supers[i] = &sb
	}
	return supers, errs, nil
}

// geometry checks that dev can hold a log and returns its block size and
// the length of its log region.
func geometry(dev backend.Device) (blk, regionLen int64, err error) {
	if k := dev.Kind(); k != backend.NVRAM {
		return 0, 0, fmt.Errorf("nvlog: device kind %v, want %v", k, backend.NVRAM)
	}
	blk = int64(dev.Alignment())
	if blk < 512 || blk > superSlotBytes || blk&(blk-1) != 0 {
		return 0, 0, fmt.Errorf("nvlog: device alignment %d not a power of two in [512, %d]", blk, superSlotBytes)
	}
	regionLen = (dev.Size() - regionOff) / blk * blk
	if regionLen < minRegionBlocks*blk {
		return 0, 0, fmt.Errorf("nvlog: device of %d bytes too small: need at least %d", dev.Size(), regionOff+minRegionBlocks*blk)
	}
	return blk, regionLen, nil
}

// Open recovers the log on dev and returns it ready for Replay and
// Commit. It reads both superblock copies and takes the newest valid one
// (a torn copy falls back to the other), checks the array identity, then
// walks the batches from the trim point: each must carry this log's
// identity, exactly the next expected seq, a session no lower than the
// batch before it and no higher than the superblock's, and a valid
// checksum. The first batch that does not is the end of the log: a torn or
// never-written tail, a damaged batch, or a batch from an earlier lap, an
// earlier log or an earlier session that was cut short. Recovery reads at
// most the region once, so its time is bounded by the log's size. Before
// returning, Open overwrites the header positions just past the end (so a
// torn batch there cannot be completed by later writes and come back) and
// syncs, so every batch it found is durable; then it starts its session
// with a synced superblock write, so everything past the end stays
// dropped (see Recovery in the package documentation).
//
// Open fails with ErrCorrupt if the batches found end before the highest
// seq the superblock records as durable: acknowledged entries are missing.
func Open(ctx context.Context, dev backend.Device, opts Options) (*Log, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if k := dev.Kind(); k != backend.NVRAM {
		return nil, fmt.Errorf("nvlog: device kind %v, want %v", k, backend.NVRAM)
	}
	t0 := time.Now()
	slots := backend.AlignedBuffer(2 * superSlotBytes)
	supers, errs, err := readSupers(ctx, dev, slots)
	if err != nil {
		return nil, fmt.Errorf("nvlog: open: %w", err)
	}
	var sb superblock
	slot := -1
	for i, s := range supers {
		if s != nil && (slot < 0 || s.gen > sb.gen) {
			sb, slot = *s, i
		}
	}
	if slot < 0 {
		return nil, fmt.Errorf("%w: copy 0: %v; copy 1: %v", ErrNotFormatted, errs[0], errs[1])
	}
	if sb.uuid != o.UUID {
		return nil, fmt.Errorf("nvlog: open: log of array %x, want %x: %w", sb.uuid, o.UUID, ErrIdentity)
	}
	if a := int64(dev.Alignment()); int64(sb.blockBytes)%a != 0 {
		return nil, fmt.Errorf("nvlog: open: log block size %d not a multiple of device alignment %d: %w", sb.blockBytes, a, ErrCorrupt)
	}
	if sb.regionOff+sb.regionLen > dev.Size() {
		return nil, fmt.Errorf("nvlog: open: log region ends at %d beyond device size %d: %w", sb.regionOff+sb.regionLen, dev.Size(), ErrCorrupt)
	}

	l := &Log{
		dev:    dev,
		opts:   o,
		logger: o.Logger,
		logID:  sb.logID,
		uuid:   sb.uuid,
		blk:    int64(sb.blockBytes),
		bg:     context.Background(),
		sbSlot: slot,
		sbGen:  sb.gen,
		sbBuf:  backend.AlignedBuffer(superSlotBytes),
		ring: ring{
			start: sb.regionOff, end: sb.regionOff + sb.regionLen,
			tail: sb.startPos, head: sb.startPos,
		},
		trimSeq:     sb.trimSeq,
		tailSeq:     sb.startSeq,
		tailSession: sb.startSession,
	}
	l.cond = sync.NewCond(&l.mu)
	l.maxEntry = o.MaxEntryBytes
	l.maxSingle = int(sb.regionLen - batchHeaderBytes - entryHeaderBytes)
	l.maxBatch = o.MaxBatchBytes
	if int64(l.maxBatch) > sb.regionLen {
		l.maxBatch = int(sb.regionLen)
	}
	l.waiters.New = func() any {
		return &waiter{ready: make(chan struct{}, 1), done: make(chan error, 1)}
	}

	// The newest valid copy holds the largest session of any batch, unless
	// the other copy is invalid: then it may have been a newer copy (one
	// write later, so at most one session more) that was synced and
	// damaged afterwards, with batches of its session behind it.
	maxSession := sb.session
	if supers[1-slot] == nil {
		maxSession++
	}
	if maxSession+1 >= 1<<63 {
		return nil, fmt.Errorf("nvlog: open: session %d: sessions exhausted: %w", sb.session, ErrCorrupt)
	}
	end, batches, why, err := l.recoverLocked(ctx, sb, maxSession)
	if err != nil {
		return nil, err
	}
	if err := l.clearTail(ctx); err != nil {
		return nil, err
	}
	if err := l.beginSession(ctx, sb, maxSession+1); err != nil {
		return nil, err
	}

	bufBytes := int(roundUp(int64(l.maxBatch), l.blk))
	l.acks = make(chan *ackList, ackLists)
	l.freeAcks = make(chan *ackList, ackLists)
	for range ackLists - 1 {
		l.freeAcks <- &ackList{}
	}
	l.open = &batch{buf: backend.AlignedBuffer(bufBytes)}
	l.open.reset(&ackList{})
	l.spare = &batch{buf: backend.AlignedBuffer(bufBytes)}
	l.writerDone = make(chan struct{})
	l.completerDone = make(chan struct{})
	l.timer = time.AfterFunc(time.Hour, func() {
		l.mu.Lock()
		l.cond.Signal()
		l.mu.Unlock()
	})
	l.timer.Stop()
	go l.runWriter()
	go l.runCompleter()

	l.logger.Info("nvlog: opened", "array", fmt.Sprintf("%x", l.uuid), "log", fmt.Sprintf("%x", l.logID),
		"session", l.session, "trim_seq", l.trimSeq, "durable_seq", end, "batches", batches, "bytes_in_use", l.ring.used(batches > 0),
		"region_bytes", sb.regionLen, "tail", why, "elapsed", time.Since(t0))
	return l, nil
}

// recoverLocked walks the chain of batches from the superblock's start
// position and fills l.locs, the ring head and the seqs. It returns the last
// durable seq, the number of batches and why the walk stopped. No batch may
// carry a session above maxSession.
// REQUIRES: l is not shared yet.
func (l *Log) recoverLocked(ctx context.Context, sb superblock, maxSession uint64) (uint64, int, string, error) {
	r := &l.ring
	size := r.size()
	pos, seq := sb.startPos, sb.startSeq
	// Sessions never decrease along the chain and never exceed maxSession:
	// see the Recovery section of the package documentation.
	minSession := sb.startSession
	var consumed int64
	hdr := backend.AlignedBuffer(int(l.blk))
	var scratch []byte
	why := "end of region"
	for consumed < size {
		loc, n, reason, err := l.readBatch(ctx, pos, seq, minSession, maxSession, size-consumed, hdr, &scratch, 0)
		if err != nil {
			return 0, 0, "", err
		}
		if n == 0 && pos != r.start {
			// A batch that did not fit before the end went to the start.
			waste := r.end - pos
			loc, n, _, err = l.readBatch(ctx, r.start, seq, minSession, maxSession, size-consumed-waste, hdr, &scratch, waste)
			if err != nil {
				return 0, 0, "", err
			}
			if n > 0 {
				consumed += waste
			}
		}
		if n == 0 {
			why = reason
			break
		}
		l.locs.push(loc)
		consumed += n
		pos = loc.pos + n
		seq = loc.firstSeq + uint64(loc.count)
		minSession = loc.session
	}
	if l.locs.len() > 0 {
		r.head = pos
	}
	durable := seq - 1
	if durable < sb.lastSeq {
		return 0, 0, "", fmt.Errorf("nvlog: open: batches end at seq %d (%s) but seq %d was durable: %w", durable, why, sb.lastSeq, ErrCorrupt)
	}
	l.nextSeq, l.placedSeq, l.durableSeq = seq, seq, durable
	return durable, l.locs.len(), why, nil
}

// readBatch reads and checks the batch that should start at pos with seq
// firstSeq and a session in [minSession, maxSession], within limit bytes
// of the ring. It returns n == 0 and a reason when there is no valid such
// batch. wrapGap > 0 means pos is the region start after a wrap from a
// position wrapGap bytes before the end: the batch must then be larger than
// wrapGap, or the writer would have put it there instead. An error is
// returned only for a device failure.
func (l *Log) readBatch(ctx context.Context, pos int64, firstSeq, minSession, maxSession uint64, limit int64, hdr []byte, scratch *[]byte, wrapGap int64) (batchLoc, int64, string, error) {
	r := &l.ring
	if pos+l.blk > r.end || l.blk > limit {
		return batchLoc{}, 0, "no room for a header", nil
	}
	if err := l.dev.ReadAt(ctx, hdr, pos); err != nil {
		if errors.Is(err, backend.ErrCorrupt) {
			return batchLoc{}, 0, fmt.Sprintf("unreadable header at %d: %v", pos, err), nil
		}
		return batchLoc{}, 0, "", fmt.Errorf("nvlog: open: read batch at %d: %w", pos, err)
	}
	room := min(limit, r.end-pos)
	h, err := decodeBatchHeader(hdr, room-batchHeaderBytes)
	if err != nil {
		return batchLoc{}, 0, fmt.Sprintf("at %d: %v", pos, err), nil
	}
	if h.logID != l.logID {
		return batchLoc{}, 0, fmt.Sprintf("batch at %d of another log", pos), nil
	}
	if h.firstSeq != firstSeq {
		return batchLoc{}, 0, fmt.Sprintf("batch at %d has seq %d, want %d (earlier lap)", pos, h.firstSeq, firstSeq), nil
	}
	if h.session < minSession || h.session > maxSession {
		return batchLoc{}, 0, fmt.Sprintf("batch at %d of session %d, want %d..%d (stale: written before a later session cut the log here)",
			pos, h.session, minSession, maxSession), nil
	}
	n := batchBytes(int64(h.bodyLen), l.blk)
	if n > room {
		return batchLoc{}, 0, fmt.Sprintf("batch at %d of %d bytes exceeds the %d bytes left", pos, n, room), nil
	}
	if wrapGap > 0 && n <= wrapGap {
		return batchLoc{}, 0, fmt.Sprintf("batch at region start of %d bytes would have fit before the end", n), nil
	}
	b := hdr
	if n > l.blk {
		if int64(cap(*scratch)) < n {
			*scratch = backend.AlignedBuffer(int(n))
		}
		b = (*scratch)[:n]
		copy(b, hdr)
		if err := l.dev.ReadAt(ctx, b[l.blk:], pos+l.blk); err != nil {
			if errors.Is(err, backend.ErrCorrupt) {
				return batchLoc{}, 0, fmt.Sprintf("unreadable batch at %d: %v", pos, err), nil
			}
			return batchLoc{}, 0, "", fmt.Errorf("nvlog: open: read batch at %d: %w", pos, err)
		}
	}
	if err := checkBatch(b, &h); err != nil {
		return batchLoc{}, 0, fmt.Sprintf("torn or corrupt batch at %d: %v", pos, err), nil
	}
	return batchLoc{pos: pos, firstSeq: h.firstSeq, session: h.session, count: h.count, n: uint32(n)}, n, "", nil
}

// clearTail zeroes the header positions where a batch after the recovered
// end could have started (head, and the region start if the next batch
// could have wrapped there), when they are free, then syncs. A torn batch
// there was never acknowledged; clearing its header makes sure that later
// writes of the same seqs can never complete it into a valid-looking batch.
// REQUIRES: l is not shared yet.
func (l *Log) clearTail(ctx context.Context) error {
	r := &l.ring
	live := l.locs.len() > 0
	zero := backend.AlignedBuffer(int(l.blk))
	var at [2]int64
	k := 0
	if r.head+l.blk <= r.end && !(live && r.head == r.tail) {
		at[k] = r.head
		k++
	}
	if r.start != r.head && (!live || (r.head > r.tail && r.start < r.tail)) {
		at[k] = r.start
		k++
	}
	for _, off := range at[:k] {
		if err := l.dev.WriteAt(ctx, zero, off); err != nil {
			return fmt.Errorf("nvlog: open: clear tail at %d: %w", off, err)
		}
	}
	l.hook(CrashOpenTailCleared)
	if err := l.dev.Sync(ctx); err != nil {
		return fmt.Errorf("nvlog: open: sync: %w", err)
	}
	l.stats.syncs.Add(1)
	return nil
}

// beginSession makes this Open's session durable before any batch carries
// it: it writes a superblock with the given session, above every session
// a batch on the device may carry, into the slot not holding sb (the
// newest valid copy) and syncs. The copy also records the recovered
// chain as durable (lastSeq) and, when no batch is live, that the first
// batch at the start must be of the new session. A torn write leaves sb in
// charge, and no batch of the new session exists then.
// REQUIRES: l is not shared yet; clearTail has synced.
func (l *Log) beginSession(ctx context.Context, sb superblock, session uint64) error {
	sb.gen = l.sbGen + 1
	sb.session = session
	sb.lastSeq = l.durableSeq
	sb.startSession = sb.session
	if l.locs.len() > 0 {
		sb.startSession = l.locs.front().session
	}
	slot := 1 - l.sbSlot
	encodeSuper(l.sbBuf, &sb)
	if err := l.dev.WriteAt(ctx, l.sbBuf, int64(slot)*superSlotBytes); err != nil {
		return fmt.Errorf("nvlog: open: write superblock %d: %w", slot, err)
	}
	l.hook(CrashOpenSessionWritten)
	if err := l.dev.Sync(ctx); err != nil {
		return fmt.Errorf("nvlog: open: sync superblock %d: %w", slot, err)
	}
	l.stats.syncs.Add(1)
	l.sbSlot, l.sbGen = slot, sb.gen
	l.session, l.tailSession = sb.session, sb.startSession
	return nil
}

func (l *Log) hook(point string) {
	if l.opts.CrashHook != nil {
		l.opts.CrashHook(point)
	}
}

// entryBytes returns the bytes an entry of n bytes takes in a batch, or
// ErrEntryTooLarge.
func (l *Log) entryBytes(n int) (int, error) {
	if n > l.maxEntry {
		return 0, fmt.Errorf("nvlog: entry of %d bytes exceeds MaxEntryBytes %d: %w", n, l.maxEntry, ErrEntryTooLarge)
	}
	if n > l.maxSingle {
		return 0, fmt.Errorf("nvlog: entry of %d bytes can never fit in a log region of %d bytes: %w", n, l.ring.size(), ErrEntryTooLarge)
	}
	return entryHeaderBytes + n, nil
}

// refuseLocked returns why new entries are refused, or nil.
// REQUIRES: l.mu held.
func (l *Log) refuseLocked() error {
	if l.err != nil {
		return l.err
	}
	if l.closed {
		return ErrClosed
	}
	return nil
}

// reserveLocked reserves need bytes and a seq in the open batch, if it has
// room. A batch always takes its first entry, however large.
// REQUIRES: l.mu held.
func (l *Log) reserveLocked(need int) (*batch, int, uint64, bool) {
	b := l.open
	if b.count > 0 && b.n+need > l.maxBatch {
		return nil, 0, 0, false
	}
	if b.count == 0 {
		if size := roundUp(int64(b.n+need), l.blk); size > int64(cap(b.buf)) {
			// A single entry larger than MaxBatchBytes: this buffer grows
			// once and stays grown.
			b.buf = backend.AlignedBuffer(int(size))
		}
		b.firstSeq = l.nextSeq
		b.firstAt = mono()
		l.cond.Signal()
	}
	off := b.n
	b.n += need
	seq := l.nextSeq
	l.nextSeq++
	b.count++
	b.pending++
	return b, off, seq, true
}

// grantLocked hands the open batch's room to queued committers, oldest
// first, or fails them all if the log no longer takes entries.
// REQUIRES: l.mu held.
func (l *Log) grantLocked() {
	refuse := l.refuseLocked()
	for l.queue.len() > 0 {
		w := l.queue.front()
		if refuse != nil {
			w.err = refuse
		} else {
			b, off, seq, ok := l.reserveLocked(w.need)
			if !ok {
				return
			}
			w.b, w.off, w.seq, w.err = b, off, seq, nil
			l.addAckLocked(b, seq, w, w.start)
		}
		l.queue.pop()
		w.ready <- struct{}{}
	}
}

// addAckLocked records whom to tell when b is durable: w.fn if set (a
// CommitAsync), else w itself. REQUIRES: l.mu held.
func (l *Log) addAckLocked(b *batch, seq uint64, w *waiter, start int64) {
	if w.fn != nil {
		b.acks.recs = append(b.acks.recs, ackRec{seq: seq, fn: w.fn, start: start})
	} else {
		b.acks.recs = append(b.acks.recs, ackRec{seq: seq, w: w, start: start})
	}
}

// join reserves room for an entry of need bytes, queueing w behind earlier
// committers when the open batch is full. On success the entry's ack is
// registered (w.fn or w). If ctx ends while w is queued and not yet
// granted, join returns ctx's error and nothing was reserved.
func (l *Log) join(ctx context.Context, w *waiter, need int) (*batch, int, uint64, error) {
	l.mu.Lock()
	if err := l.refuseLocked(); err != nil {
		l.mu.Unlock()
		return nil, 0, 0, err
	}
	if l.queue.len() == 0 {
		if b, off, seq, ok := l.reserveLocked(need); ok {
			l.addAckLocked(b, seq, w, w.start)
			l.mu.Unlock()
			return b, off, seq, nil
		}
	}
	w.need = need
	l.queue.push(w)
	l.stats.joinWaits.Add(1)
	l.cond.Signal() // a writer holding the batch back for MaxDelay: it is full now
	l.mu.Unlock()
	select {
	case <-w.ready:
	case <-ctx.Done():
		l.mu.Lock()
		if l.queue.remove(w) {
			l.mu.Unlock()
			return nil, 0, 0, ctx.Err()
		}
		l.mu.Unlock()
		<-w.ready // granted meanwhile: go on, the room is ours
	}
	if w.err != nil {
		return nil, 0, 0, w.err
	}
	return w.b, w.off, w.seq, nil
}

// fill copies an entry into its reserved room and releases the
// reservation.
func (l *Log) fill(b *batch, off int, seq uint64, entry []byte) {
	putEntry(b.buf[off:], seq, len(entry))
	copy(b.buf[off+entryHeaderBytes:], entry)
	l.mu.Lock()
	b.pending--
	if b.pending == 0 && b.sealed {
		l.cond.Signal()
	}
	l.mu.Unlock()
}

func (l *Log) getWaiter() *waiter { return l.waiters.Get().(*waiter) }

func (l *Log) putWaiter(w *waiter) {
	w.fn, w.b, w.err = nil, nil, nil
	l.waiters.Put(w)
}

// Commit appends entry to the log and returns its seq once it is durable.
// Entries from concurrent callers share batches (group commit): one device
// write and one sync per batch. Seqs are strictly increasing, also across
// Close and Open, and a later Commit's seq is larger than an earlier one
// that returned.
//
// entry is copied before Commit returns; the caller may reuse it. Commit
// fails at once with ErrEntryTooLarge if the entry can never be written,
// and with ErrFailed or ErrClosed if the log no longer takes entries. If
// the device write or sync of the batch fails, Commit returns that error
// (wrapping ErrFailed) and the entry may or may not be durable. When the
// log is full Commit waits for Trim. If ctx ends first, Commit returns
// ctx's error; if the entry had already joined a batch (seq ≠ 0) it may
// still become durable.
func (l *Log) Commit(ctx context.Context, entry []byte) (seq uint64, err error) {
	need, err := l.entryBytes(len(entry))
	if err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	w := l.getWaiter()
	w.fn, w.start = nil, mono()
	b, off, seq, err := l.join(ctx, w, need)
	if err != nil {
		l.putWaiter(w)
		return 0, err
	}
	l.fill(b, off, seq, entry)
	select {
	case err := <-w.done:
		l.putWaiter(w)
		return seq, err
	case <-ctx.Done():
		// w stays registered with the batch and is dropped, not pooled.
		return seq, ctx.Err()
	}
}

// CommitAsync is Commit without waiting for durability: it returns once
// entry has been copied into a batch, and done(seq, err) is called when the
// batch is durable (err nil) or has failed. done is called on the log's
// completion goroutine, once per entry, in seq order; it must not block
// for long (it delays every later acknowledgement) and must not call Close.
// If the entry is refused at once (too large, log failed or closed), done
// is called with seq 0 before CommitAsync returns, on the caller's
// goroutine.
//
// CommitAsync blocks only while the open batch is full (both batch buffers
// busy, or the log full and waiting for Trim): that is the log pushing back
// on the pipeline. So it must not be called from the goroutine that is
// responsible for calling Trim.
func (l *Log) CommitAsync(entry []byte, done func(seq uint64, err error)) {
	need, err := l.entryBytes(len(entry))
	if err != nil {
		done(0, err)
		return
	}
	w := l.getWaiter()
	w.fn, w.start = done, mono()
	b, off, seq, err := l.join(context.Background(), w, need)
	l.putWaiter(w)
	if err != nil {
		done(0, err)
		return
	}
	l.fill(b, off, seq, entry)
}

// runWriter is the single writer goroutine: it seals the open batch when
// the previous batch is durable, places it in the ring (waiting for Trim
// when the log is full), writes it, syncs, and hands its acknowledgements
// to the completion goroutine.
//
// INVARIANT: at most one batch is written but not yet synced, and it is the
// newest one; so after a crash only the last batch of the chain can be torn.
func (l *Log) runWriter() {
	defer close(l.writerDone)
	defer close(l.acks)
	for {
		next := <-l.freeAcks
		l.mu.Lock()
		b := l.sealLocked(next)
		if b == nil {
			l.mu.Unlock()
			l.freeAcks <- next
			return
		}
		for b.pending > 0 {
			l.cond.Wait()
		}
		l.mu.Unlock()
		l.writeBatch(b)
	}
}

// sealLocked waits for the open batch to have entries (and, with MaxDelay,
// to be old or full enough), closes it to new entries, installs the spare
// buffer as the open batch with acks as its list, and returns the sealed
// batch. It returns nil when the log is closed or failed and no entry
// remains. REQUIRES: l.mu held.
func (l *Log) sealLocked(acks *ackList) *batch {
	for {
		b := l.open
		if b.count > 0 {
			if d := l.opts.MaxDelay; d > 0 && l.err == nil && !l.closed && l.queue.len() == 0 && b.n+entryHeaderBytes < l.maxBatch {
				if wait := b.firstAt + int64(d) - mono(); wait > 0 {
					l.timer.Reset(time.Duration(wait))
					l.cond.Wait()
					continue
				}
			}
			break
		}
		if l.err != nil || l.closed {
			return nil
		}
		l.cond.Wait()
	}
	b := l.open
	b.sealed = true
	nb := l.spare
	l.spare = nil
	nb.reset(acks)
	l.open = nb
	l.grantLocked()
	return b
}

// writeBatch places, writes and syncs a sealed batch whose entries are all
// copied in, then queues its acknowledgements.
func (l *Log) writeBatch(b *batch) {
	n := int64(sealBatch(b.buf, b.n, &l.logID, l.session, b.firstSeq, b.count, l.blk))
	last := b.firstSeq + uint64(b.count) - 1
	l.hook(CrashBatchSealed)

	var err error
	var pos int64
	l.mu.Lock()
	for {
		if err = l.err; err != nil {
			break
		}
		var p placement
		pos, p = l.ring.place(n, l.locs.len() > 0)
		if p == placeOK {
			break
		}
		if l.closed {
			err = fmt.Errorf("nvlog: closed while the log was full: %w", ErrClosed)
			break
		}
		if p == placeRewind {
			l.mu.Unlock()
			err = l.rewind()
			l.mu.Lock()
			if err != nil {
				break
			}
			continue
		}
		if !l.waiting {
			l.stats.fullWaits.Add(1)
		}
		l.waiting = true
		l.cond.Wait()
	}
	l.waiting = false
	if err == nil {
		l.locs.push(batchLoc{pos: pos, firstSeq: b.firstSeq, session: l.session, count: uint32(b.count), n: uint32(n)})
		l.ring.head = pos + n
		l.placedSeq = last + 1
	}
	l.mu.Unlock()

	if err == nil {
		if err = l.dev.WriteAt(l.bg, b.buf[:n], pos); err == nil {
			l.hook(CrashBatchWritten)
			if err = l.dev.Sync(l.bg); err == nil {
				l.stats.syncs.Add(1)
				l.hook(CrashBatchSynced)
			} else {
				err = fmt.Errorf("sync after batch %d..%d at %d: %w", b.firstSeq, last, pos, err)
			}
		} else {
			err = fmt.Errorf("write batch %d..%d at %d: %w", b.firstSeq, last, pos, err)
		}
		if err != nil {
			err = l.fail(err)
		}
	}

	l.mu.Lock()
	if err == nil {
		l.durableSeq = last
	}
	acks := b.acks
	acks.err = err
	b.acks = nil
	l.spare = b
	l.mu.Unlock()
	if err == nil {
		l.stats.batches.Add(1)
		l.stats.deviceBytes.Add(uint64(n))
		l.stats.entryBytes.Add(uint64(b.n - batchHeaderBytes - b.count*entryHeaderBytes))
	}
	l.acks <- acks
}

// fail makes the log refuse everything from now on and returns the sticky
// error (the first cause wins). REQUIRES: l.mu not held.
func (l *Log) fail(cause error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = fmt.Errorf("%w: %w", ErrFailed, cause)
		l.logger.Error("nvlog: log failed; reopen to recover", "err", cause)
		l.grantLocked()
		l.cond.Broadcast()
	}
	return l.err
}

// runCompleter delivers acknowledgements, batch by batch in seq order.
func (l *Log) runCompleter() {
	defer close(l.completerDone)
	for a := range l.acks {
		now := mono()
		for i := range a.recs {
			r := &a.recs[i]
			if a.err == nil {
				l.stats.lat.record(now - r.start)
			}
			if r.w != nil {
				r.w.done <- a.err
			} else {
				r.fn(r.seq, a.err)
			}
			r.w, r.fn = nil, nil
		}
		if a.err == nil && len(a.recs) > 0 {
			l.stats.commits.Add(uint64(len(a.recs)))
			l.hook(CrashBatchAcked)
		}
		a.recs = a.recs[:0]
		a.err = nil
		l.freeAcks <- a
	}
}

// writeSuper makes sb the durable superblock: it writes the slot that does
// not hold the newest durable copy, with the next generation, and syncs.
// A torn write leaves the other copy in charge. REQUIRES: l.sbMu held.
func (l *Log) writeSuper(sb *superblock) error {
	sb.gen = l.sbGen + 1
	slot := 1 - l.sbSlot
	encodeSuper(l.sbBuf, sb)
	if err := l.dev.WriteAt(l.bg, l.sbBuf, int64(slot)*superSlotBytes); err != nil {
		return l.fail(fmt.Errorf("write superblock %d: %w", slot, err))
	}
	l.hook(CrashSuperblockWritten)
	if err := l.dev.Sync(l.bg); err != nil {
		return l.fail(fmt.Errorf("sync superblock %d: %w", slot, err))
	}
	l.stats.syncs.Add(1)
	l.hook(CrashSuperblockSynced)
	l.sbSlot, l.sbGen = slot, sb.gen
	return nil
}

// superLocked returns the superblock describing the current durable state.
// REQUIRES: l.mu held.
func (l *Log) superLocked() superblock {
	return superblock{
		uuid:       l.uuid,
		logID:      l.logID,
		blockBytes: uint32(l.blk),
		regionOff:  l.ring.start,
		regionLen:  l.ring.size(),
		trimSeq:    l.trimSeq,
		startPos:   l.ring.tail,
		startSeq:   l.tailSeq,
		lastSeq:    l.durableSeq,
		session:    l.session,
		// Callers that move the start set startSession with it.
		startSession: l.tailSession,
	}
}

// rewind moves the start of an empty log to the region start, so that a
// batch too large for the space left before the end (and for the space
// before head) can go there. Called by the writer only, with nothing live.
func (l *Log) rewind() error {
	l.sbMu.Lock()
	defer l.sbMu.Unlock()
	l.mu.Lock()
	if l.locs.len() > 0 || l.ring.head == l.ring.start {
		l.mu.Unlock()
		return nil
	}
	sb := l.superLocked()
	// The next batch, the first at the new start, is this session's.
	sb.startPos, sb.startSeq, sb.startSession = l.ring.start, l.placedSeq, l.session
	l.mu.Unlock()
	if err := l.writeSuper(&sb); err != nil {
		return err
	}
	l.mu.Lock()
	l.ring.head, l.ring.tail, l.tailSeq, l.tailSession = sb.startPos, sb.startPos, sb.startSeq, sb.startSession
	l.mu.Unlock()
	return nil
}

// Trim declares that every entry with seq ≤ upTo is safe elsewhere (in
// segments) and may be dropped. When Trim returns nil the new trim point is
// durable: Replay after any crash starts above it. Space is handed to the
// writer only then. Trimming to at or below the current trim point does
// nothing; trimming above the durable seq fails with ErrTrimRange. Trims
// are serialized; Trim waits while Replay runs. ctx is checked on entry
// only: a superblock write, once started, is finished.
func (l *Log) Trim(ctx context.Context, upTo uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l.sbMu.Lock()
	defer l.sbMu.Unlock()
	l.mu.Lock()
	if err := l.refuseLocked(); err != nil {
		l.mu.Unlock()
		return err
	}
	// A trim at or below the trim point does nothing, unless whole batches
	// lie at or below it (a superblock written by another implementation,
	// or damaged in a way that still checks): then they are released.
	upTo = max(upTo, l.trimSeq)
	if upTo == l.trimSeq && (l.locs.len() == 0 || l.locs.front().last() > upTo) {
		l.mu.Unlock()
		return nil
	}
	if upTo > l.durableSeq {
		d := l.durableSeq
		l.mu.Unlock()
		return fmt.Errorf("nvlog: trim to %d: %w (durable up to %d)", upTo, ErrTrimRange, d)
	}
	sb := l.superLocked()
	sb.trimSeq = upTo
	// With no batch left the next one goes at head (or the region start)
	// and is this session's; otherwise the first one left sets the floor.
	sb.startPos, sb.startSeq, sb.startSession = l.ring.head, l.placedSeq, l.session
	for i := range l.locs.len() {
		if loc := l.locs.at(i); loc.last() > upTo {
			sb.startPos, sb.startSeq, sb.startSession = loc.pos, loc.firstSeq, loc.session
			break
		}
	}
	l.mu.Unlock()

	if err := l.writeSuper(&sb); err != nil {
		return err
	}

	l.mu.Lock()
	for l.locs.len() > 0 && l.locs.front().last() <= upTo {
		l.locs.pop()
	}
	l.ring.tail, l.tailSeq, l.tailSession, l.trimSeq = sb.startPos, sb.startSeq, sb.startSession, upTo
	l.cond.Signal()
	l.mu.Unlock()
	l.stats.trims.Add(1)
	l.hook(CrashTrimApplied)
	return nil
}

// Replay calls fn for every durable entry with seq above the trim point, in
// seq order, reading each batch from the device again and checking it. The
// entry slice is valid only during fn. If fn returns an error, Replay stops
// and returns it. Replay may run while Commit is called (it visits the
// entries durable when it starts); it holds off Trim until it returns, so
// fn must not call Trim. It fails with ErrCorrupt if a batch that was valid
// no longer is.
func (l *Log) Replay(ctx context.Context, fn func(seq uint64, entry []byte) error) error {
	l.sbMu.Lock()
	defer l.sbMu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	trim := l.trimSeq
	var locs []batchLoc
	for i := range l.locs.len() {
		if loc := l.locs.at(i); loc.last() <= l.durableSeq {
			locs = append(locs, loc)
		}
	}
	l.mu.Unlock()

	var buf []byte
	for _, loc := range locs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if cap(buf) < int(loc.n) {
			buf = backend.AlignedBuffer(int(loc.n))
		}
		b := buf[:loc.n]
		if err := l.dev.ReadAt(ctx, b, loc.pos); err != nil {
			return fmt.Errorf("nvlog: replay: read batch %d at %d: %w", loc.firstSeq, loc.pos, err)
		}
		h, err := decodeBatchHeader(b, int64(loc.n)-batchHeaderBytes)
		if err == nil && (h.logID != l.logID || h.firstSeq != loc.firstSeq || h.count != loc.count || h.session != loc.session) {
			err = fmt.Errorf("header says seq %d count %d session %d, want %d count %d session %d",
				h.firstSeq, h.count, h.session, loc.firstSeq, loc.count, loc.session)
		}
		if err == nil {
			err = checkBatch(b, &h)
		}
		if err != nil {
			return fmt.Errorf("nvlog: replay: batch %d at %d: %v: %w", loc.firstSeq, loc.pos, err, ErrCorrupt)
		}
		body := b[batchHeaderBytes : batchHeaderBytes+int(h.bodyLen)]
		for range h.count {
			seq, entry, rest, _ := nextEntry(body) // checked by checkBatch
			body = rest
			if seq <= trim {
				continue
			}
			if err := fn(seq, entry); err != nil {
				return err
			}
		}
	}
	return nil
}

// Close stops the log. Entries that already joined a batch are written
// (unless the log is full, then they fail with ErrClosed); committers
// waiting for room fail with ErrClosed, and so does every later call.
// Close waits for the writer, for every acknowledgement to be delivered and
// for a Trim or Replay under way, so the caller may close the device when
// it returns (Close does not). It must not be called from a Replay
// callback or a CommitAsync done function. It returns the error that
// stopped the log, if one did.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.grantLocked()
	l.cond.Broadcast()
	l.mu.Unlock()
	<-l.writerDone
	<-l.completerDone
	l.timer.Stop()
	// Wait for a Trim or Replay under way: the caller may close the device
	// once Close returns. Later ones see closed and do nothing.
	l.sbMu.Lock()
	l.sbMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Stats returns a snapshot of the log's counters.
func (l *Log) Stats() Stats {
	s := Stats{
		Commits:     l.stats.commits.Load(),
		Batches:     l.stats.batches.Load(),
		EntryBytes:  l.stats.entryBytes.Load(),
		DeviceBytes: l.stats.deviceBytes.Load(),
		Syncs:       l.stats.syncs.Load(),
		Trims:       l.stats.trims.Load(),
		FullWaits:   l.stats.fullWaits.Load(),
		JoinWaits:   l.stats.joinWaits.Load(),
	}
	if s.Batches > 0 {
		s.MeanBatchEntries = float64(s.Commits) / float64(s.Batches)
		s.MeanBatchBytes = float64(s.DeviceBytes) / float64(s.Batches)
	}
	var q [3]time.Duration
	l.stats.lat.quantiles([]float64{0.5, 0.99, 0.999}, q[:])
	s.LatencyP50, s.LatencyP99, s.LatencyP999 = q[0], q[1], q[2]
	s.LatencyMax = time.Duration(l.stats.lat.max.Load())
	l.mu.Lock()
	s.RegionBytes = l.ring.size()
	s.BytesInUse = l.ring.used(l.locs.len() > 0)
	s.WaitingForTrim = l.waiting
	s.NextSeq, s.DurableSeq, s.TrimSeq = l.nextSeq, l.durableSeq, l.trimSeq
	s.Failed = l.err
	l.mu.Unlock()
	return s
}

// DurableSeq returns the highest seq such that it and every seq below it
// are durable.
func (l *Log) DurableSeq() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.durableSeq
}

// TrimSeq returns the durable trim point.
func (l *Log) TrimSeq() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.trimSeq
}

// UUID returns the array identity the log was formatted with.
func (l *Log) UUID() [16]byte { return l.uuid }

// batchLoc is where a live batch is.
type batchLoc struct {
	pos      int64
	firstSeq uint64
	session  uint64 // the session that wrote it
	count    uint32
	n        uint32 // padded length on the device
}

func (b batchLoc) last() uint64 { return b.firstSeq + uint64(b.count) - 1 }

// locQueue is a FIFO of batchLocs in a growable circular buffer; once it
// has grown to the largest number of live batches it stops allocating.
type locQueue struct {
	buf        []batchLoc
	head, size int
}

func (q *locQueue) len() int { return q.size }

func (q *locQueue) push(b batchLoc) {
	if q.size == len(q.buf) {
		nb := make([]batchLoc, max(16, 2*len(q.buf)))
		for i := range q.size {
			nb[i] = q.at(i)
		}
		q.buf, q.head = nb, 0
	}
	q.buf[(q.head+q.size)%len(q.buf)] = b
	q.size++
}

func (q *locQueue) at(i int) batchLoc { return q.buf[(q.head+i)%len(q.buf)] }

func (q *locQueue) front() batchLoc { return q.buf[q.head] }

func (q *locQueue) pop() {
	q.head = (q.head + 1) % len(q.buf)
	q.size--
}

// waitQueue is a FIFO of waiters that reuses its backing array.
type waitQueue struct {
	q    []*waiter
	head int
}

func (q *waitQueue) len() int { return len(q.q) - q.head }

func (q *waitQueue) push(w *waiter) {
	if len(q.q) == cap(q.q) && q.head > 0 {
		n := copy(q.q, q.q[q.head:])
		clear(q.q[n:])
		q.q, q.head = q.q[:n], 0
	}
	q.q = append(q.q, w)
}

func (q *waitQueue) front() *waiter { return q.q[q.head] }

func (q *waitQueue) pop() {
	q.q[q.head] = nil
	q.head++
	if q.head == len(q.q) {
		q.q, q.head = q.q[:0], 0
	}
}

// remove takes w out of the queue if it is there.
func (q *waitQueue) remove(w *waiter) bool {
	for i := q.head; i < len(q.q); i++ {
		if q.q[i] == w {
			copy(q.q[i:], q.q[i+1:])
			q.q[len(q.q)-1] = nil
			q.q = q.q[:len(q.q)-1]
			if q.head == len(q.q) {
				q.q, q.head = q.q[:0], 0
			}
			return true
		}
	}
	return false
}
