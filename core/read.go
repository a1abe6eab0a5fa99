package core

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/shalestore/shale/backend"
	"github.com/shalestore/shale/core/cblock"
	"github.com/shalestore/shale/core/pyramid"
	"github.com/shalestore/shale/core/segment"
)

// cachedCblock is a cblock's logical bytes in the cache, kept in a pooled
// buffer that goes back to its pool when the last user lets go. The
// address is kept to tell a cache-key collision from a hit.
//
// INVARIANT: refs counts the users of buf: the cache holds one from Set
// until ristretto hands the entry to OnExit (evicted, rejected, replaced
// or deleted), and each reader one from acquire to release. Once refs is
// 0 buf belongs to its pool again and acquire fails for good (entries are
// never reused), so a reader that got the entry from the cache just as it
// left sees a miss, never a recycled buffer.
type cachedCblock struct {
	addr segment.Addr
	data []byte // the logical bytes, a slice of *buf
	buf  *pooledBuf
	refs atomic.Int32
}

// acquire takes a reference for a reader; false if the entry has already
// left the cache and its buffer is gone.
func (c *cachedCblock) acquire() bool {
	for {
		r := c.refs.Load()
		if r <= 0 {
			return false
		}
		if c.refs.CompareAndSwap(r, r+1) {
			return true
		}
	}
}

// release drops a reference; the last one returns the buffer.
func (c *cachedCblock) release() {
	if c.refs.Add(-1) != 0 {
		return
	}
	c.buf.put()
}

// onCacheExit is the cblock cache's OnExit: the cache's reference ends.
func onCacheExit(c *cachedCblock) {
	if c != nil {
		c.release()
	}
}

// cachePut hands buf (holding data, the logical bytes of the cblock at
// addr) to the cache, which returns it to its pool when done with it. The
// cost is the buffer's capacity, so the cache's byte bound is the memory
// it pins.
func (a *Array) cachePut(addr segment.Addr, data []byte, buf *pooledBuf) {
	c := &cachedCblock{addr: addr, data: data, buf: buf}
	c.refs.Store(1)
	if !a.cache.Set(cacheKey(addr), c, int64(cap(buf.b))) {
		c.release() // dropped: ristretto never saw it, so no OnExit
	}
}

// spanBytes is the size of the aligned buffers the read path reads
// encoded cblocks into: the whole 4 KiB blocks under a cblock of
// MaxEncoded bytes at any offset (10 blocks), which also fits the header
// block plus the blocks of any part of a cblock (1 + 9).
const spanBytes = 10 * segment.BlockSize

// pooledBuf is a buffer of the read path's pools; the pointer goes back
// to the pool, so getting and putting allocates nothing.
type pooledBuf struct {
	b    []byte
	pool *sync.Pool
}

func (p *pooledBuf) put() { p.pool.Put(p) }

// spanPool holds aligned buffers of spanBytes (drive reads land in them);
// logicalPool buffers of a cblock's largest logical size (decoding).
var spanPool, logicalPool sync.Pool

func init() {
	spanPool.New = func() any { return &pooledBuf{b: backend.AlignedBuffer(spanBytes), pool: &spanPool} }
	logicalPool.New = func() any { return &pooledBuf{b: make([]byte, cblock.MaxLogical), pool: &logicalPool} }
}

func getSpan() *pooledBuf    { return spanPool.Get().(*pooledBuf) }
func getLogical() *pooledBuf { return logicalPool.Get().(*pooledBuf) }

func cacheKey(a segment.Addr) uint64 {
	return uint64(a.Segment)<<32 ^ uint64(a.Offset)
}

// readable returns the medium and size of v.
func (v *Volume) readable() (uint64, int64, error) {
	vs := v.vs
	vs.mu.RLock()
	defer vs.mu.RUnlock()
	if vs.deleted {
		return 0, 0, fmt.Errorf("%s: %w", vs.name, ErrNotFound)
	}
	return vs.medium, vs.size, nil
}

// ReadAt fills p with the data at off.
func (v *Volume) ReadAt(ctx context.Context, p []byte, off int64) error {
	a := v.a
	if err := a.enter(); err != nil {
		return err
	}
	defer a.exit()
	m, size, err := v.readable()
	if err != nil {
		return err
	}
	if err := checkRange(off, int64(len(p)), size); err != nil {
		return err
	}
	if err := a.readMedium(ctx, m, uint64(off/SectorSize), p, 0); err != nil {
		a.stats.readErrors.Add(1)
		return fmt.Errorf("%s: read at %d: %w", v.vs.name, off, err)
	}
	a.stats.reads.Add(1)
	a.stats.readBytes.Add(int64(len(p)))
	return nil
}

// readMedium fills p with sectors [lba, lba+len(p)/512) of medium m: the
// block map first, positions it does not map through the medium table.
func (a *Array) readMedium(ctx context.Context, m, lba uint64, p []byte, depth int) error {
	if depth > maxChainDepth {
		return fmt.Errorf("%w: medium chain deeper than %d at medium %d", ErrIO, maxChainDepth, m)
	}
	r := getMediumRead(a, ctx, m, lba, p, depth)
	defer putMediumRead(r)
	n := uint64(len(p) / SectorSize)
	if err := a.bm.Resolve(ctx, r.prefix[:], lba, n, pyramid.ReadOptions{}, r.onBM); err != nil {
		return metaErr(err)
	}
	if err := r.flushBatch(); err != nil {
		return err
	}
	if r.cur < lba+n {
		return a.readBelow(ctx, m, r.cur, r.sub(r.cur, lba+n), depth)
	}
	return nil
}

// mediumRead is the state of one readMedium or readBelow call, pooled with
// its callbacks bound once, so a read allocates no closures.
type mediumRead struct {
	a      *Array
	ctx    context.Context
	prefix [1]uint64 // the medium
	lba    uint64    // p's first sector
	cur    uint64    // the next sector not yet filled
	p      []byte
	depth  int
	onBM   func(t []uint64) error // r.blockMapRun
	onMT   func(t []uint64) error // r.mediumTableRun
	batch  runBatch
}

// Sequential reads: the whole cblocks one read needs that lie back to back
// in a segment (as a sequential write leaves them) are read with one
// ReadBlocks, up to these bounds.
const (
	maxBatchCblocks = 64
	maxBatchBytes   = 1 << 20 // encoded bytes
	// batchBufBytes holds the blocks under maxBatchBytes at any offset.
	batchBufBytes = maxBatchBytes + 2*segment.BlockSize
)

// runBatch is a run of whole cblocks, adjacent in one segment, waiting to
// be read together.
type runBatch struct {
	items      [maxBatchCblocks]batchItem
	n          int
	seg        segment.ID
	start, end int64 // the encoded bytes [start, end) of seg
}

type batchItem struct {
	addr segment.Addr
	dst  []byte
}

var batchBufs = sync.Pool{New: func() any { b := backend.AlignedBuffer(batchBufBytes); return &b }}

// batchRun takes a KindData tuple that reads a whole cblock that may be
// raw (its stored length is the header plus what is read): from the cache
// or the pending copy at once, else into the batch (after flushing the
// batch if the cblock does not extend it). false: not such a tuple, the
// caller reads it alone.
func (r *mediumRead) batchRun(t []uint64, dst []byte) (bool, error) {
	addr := runAddr(t)
	if t[pyramid.BMSector] != 0 || int(addr.Length) != cblock.HeaderSize+len(dst) {
		return false, nil
	}
	a := r.a
	if a.cacheRead(addr, 0, dst) {
		return true, nil
	}
	if a.partSeen.again(cacheKey(addr)) {
		// Read (in part or whole) a while ago: read it alone, which
		// caches it, so a region read over and over ends up in the cache
		// while a scan of a large volume does not churn it.
		return false, nil
	}
	if _, found, _ := a.pend.decode(addr, dst); found {
		// Not durable yet (readCblock decodes it again, into a buffer
		// that surely fits, and caches it).
		return false, nil
	}
	a.stats.cacheMisses.Add(1)
	b := &r.batch
	if b.n > 0 && (b.seg != addr.Segment || b.end != addr.Offset || b.n == maxBatchCblocks || addr.Offset+int64(addr.Length)-b.start > maxBatchBytes) {
		if err := r.flushBatch(); err != nil {
			return true, err
		}
	}
	if b.n == 0 {
		b.seg, b.start, b.end = addr.Segment, addr.Offset, addr.Offset
	}
	b.items[b.n] = batchItem{addr: addr, dst: dst}
	b.n++
	b.end += int64(addr.Length)
	return true, nil
}

// flushBatch reads the batched cblocks (one or more) with one segment
// read and fills their destinations: raw ones from healthy drives checked
// by the block checksums, others (or all, when some bytes were rebuilt)
// decoded and checked against their cblock crc; one that is not what the
// tuple suggested (compressed, other size) is read alone. The batch does
// not fill the cache: a scan, or random reads, of a volume larger than the
// cache would only push out what is hot. A cblock batched twice within a
// while is read alone and cached instead (batchRun): the cache admits raw
// cblocks on their second touch.
func (r *mediumRead) flushBatch() error {
	b := &r.batch
	if b.n == 0 {
		return nil
	}
	defer func() {
		clear(b.items[:b.n])
		b.n = 0
	}()
	a := r.a
	bp := batchBufs.Get().(*[]byte)
	defer batchBufs.Put(bp)
	if b.n > 1 {
		a.stats.batchReads.Add(1)
	}
	data, bad, rebuilt, err := a.st.ReadBlocks(r.ctx, b.seg, b.start, int(b.end-b.start), *bp)
	if len(bad) > 0 {
		a.stats.degradedReads.Add(1)
	}
	if err != nil {
		return fmt.Errorf("%w: cblocks %d..%d of segment %d: %w", ErrIO, b.start, b.end, b.seg, err)
	}
	for _, it := range b.items[:b.n] {
		enc := data[it.addr.Offset-b.start:][:it.addr.Length]
		if h, err := cblock.ParseHeader(enc); err == nil && !h.Compressed && !rebuilt && h.Sectors*SectorSize == len(it.dst) {
			copy(it.dst, enc[cblock.HeaderSize:])
			continue
		}
		if n, err := cblock.Decode(it.dst, enc); err == nil && n == len(it.dst) {
			continue
		}
		if err := a.readCblock(r.ctx, it.addr, 0, it.dst); err != nil {
			return err
		}
	}
	return nil
}

var mediumReads sync.Pool

func init() {
	// Set here: the callbacks read through readMedium, which uses the pool.
	mediumReads.New = func() any {
		r := &mediumRead{}
		r.onBM, r.onMT = r.blockMapRun, r.mediumTableRun
		return r
	}
}

func getMediumRead(a *Array, ctx context.Context, m, lba uint64, p []byte, depth int) *mediumRead {
	r := mediumReads.Get().(*mediumRead)
	r.a, r.ctx, r.prefix[0], r.lba, r.cur, r.p, r.depth = a, ctx, m, lba, lba, p, depth
	return r
}

func putMediumRead(r *mediumRead) {
	// A read that failed may leave a batch behind: drop it.
	clear(r.batch.items[:r.batch.n])
	r.batch.n = 0
	r.a, r.ctx, r.p = nil, nil, nil
	mediumReads.Put(r)
}

// sub is the part of p holding sectors [from, to).
func (r *mediumRead) sub(from, to uint64) []byte {
	return r.p[(from-r.lba)*SectorSize : (to-r.lba)*SectorSize]
}

// blockMapRun fills the sectors a block-map tuple maps, and those before
// it that the block map does not map from below.
func (r *mediumRead) blockMapRun(t []uint64) error {
	start, l := t[pyramid.BMLBA], t[pyramid.BMLen]
	if start > r.cur {
		if err := r.a.readBelow(r.ctx, r.prefix[0], r.cur, r.sub(r.cur, start), r.depth); err != nil {
			return err
		}
	}
	dst := r.sub(start, start+l)
	switch t[pyramid.BMKind] {
	case pyramid.KindData, pyramid.KindDup:
		if t[pyramid.BMKind] == pyramid.KindData {
			if ok, err := r.batchRun(t, dst); ok || err != nil {
				r.cur = start + l
				return err
			}
		}
		if err := r.a.readRun(r.ctx, t, dst); err != nil {
			return err
		}
	case pyramid.KindZero, kindHole:
		clear(dst)
	default:
		return fmt.Errorf("%w: block map of medium %d at %d: kind %d", ErrIO, r.prefix[0], start, t[pyramid.BMKind])
	}
	r.cur = start + l
	return nil
}

// readBelow fills p with sectors of medium m that m's block map does not
// map: from the underlying medium the medium table names, or zeros.
func (a *Array) readBelow(ctx context.Context, m, lba uint64, p []byte, depth int) error {
	r := getMediumRead(a, ctx, m, lba, p, depth)
	defer putMediumRead(r)
	n := uint64(len(p) / SectorSize)
	if err := a.mt.Resolve(ctx, r.prefix[:], lba, n, pyramid.ReadOptions{}, r.onMT); err != nil {
		return metaErr(err)
	}
	clear(r.sub(r.cur, lba+n))
	return nil
}

// mediumTableRun fills the sectors a medium-table tuple maps (from the
// target medium, or zeros) and zeroes those before it.
func (r *mediumRead) mediumTableRun(t []uint64) error {
	start, l := t[pyramid.MTStart], t[pyramid.MTLen]
	clear(r.sub(r.cur, start))
	if target := t[pyramid.MTTarget]; target != 0 {
		if err := r.a.readMedium(r.ctx, target, t[pyramid.MTTargetOffset], r.sub(start, start+l), r.depth+1); err != nil {
			return err
		}
	} else {
		clear(r.sub(start, start+l))
	}
	r.cur = start + l
	return nil
}

func metaErr(err error) error {
	if errors.Is(err, ErrIO) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: metadata: %w", ErrIO, err)
}

// readRun copies the sectors a KindData block-map run names into dst:
// from the cache of decompressed cblocks, the pending (not yet durable)
// copy, or the store (which rebuilds from parity when drives are missing
// or corrupt).
//
// What verifies the bytes returned: a cache hit returns bytes verified
// when they entered the cache; a pending cblock and a compressed one are
// decoded whole and checked against the cblock's crc32c; a raw cblock
// read straight from its drives (whole, in a batch, or for a read of part
// of it only the blocks under that part and its header) is checked by the
// segment layer's crc32c of every 4 KiB block read; a raw cblock any of
// whose bytes were rebuilt from parity (a bad unit, or a drive busy
// writing: ReadBlocks says rebuilt) is read whole and checked against the
// cblock's crc32c.
func (a *Array) readRun(ctx context.Context, t []uint64, dst []byte) error {
	return a.readCblock(ctx, runAddr(t), int(t[pyramid.BMSector]*SectorSize), dst)
}

// runAddr is the address of the cblock a KindData or KindDup tuple names.
func runAddr(t []uint64) segment.Addr {
	return segment.Addr{Segment: segment.ID(t[pyramid.BMSegment]), Offset: int64(t[pyramid.BMOffset]), Length: int32(t[pyramid.BMCLen])}
}

// cacheRead fills dst from logical bytes [from, from+len(dst)) of the
// cblock at addr if the cache has it.
func (a *Array) cacheRead(addr segment.Addr, from int, dst []byte) bool {
	c, ok := a.cache.Get(cacheKey(addr))
	if !ok || !c.acquire() {
		return false
	}
	hit := c.addr == addr && from+len(dst) <= len(c.data)
	if hit {
		copy(dst, c.data[from:])
	}
	c.release()
	if hit {
		a.stats.cacheHits.Add(1)
	}
	return hit
}

// readCblock fills dst with logical bytes [from, from+len(dst)) of the
// cblock at addr (readRun's work).
func (a *Array) readCblock(ctx context.Context, addr segment.Addr, from int, dst []byte) error {
	to := from + len(dst)
	if a.cacheRead(addr, from, dst) {
		return nil
	}
	a.stats.cacheMisses.Add(1)
	if addr.Length <= cblock.HeaderSize || addr.Length > cblock.MaxEncoded {
		return fmt.Errorf("%w: block map names a cblock of %d bytes at %v", ErrIO, addr.Length, addr)
	}
	scratch := getLogical()
	n, found, err := a.pend.decode(addr, scratch.b)
	if found {
		if err != nil {
			scratch.put()
			return fmt.Errorf("%w: cblock %v: %w", ErrIO, addr, err)
		}
		return a.finishRun(addr, scratch.b[:n], scratch, from, dst)
	}
	scratch.put()
	if raw := int(addr.Length) - cblock.HeaderSize; raw%SectorSize == 0 && to <= raw && to-from < raw && !a.partSeen.again(cacheKey(addr)) {
		// Part of what may be a raw cblock of raw/512 sectors (or a
		// compressed one of more: the header tells), not read in part
		// lately: read only that part. The second part read of a cblock
		// within a while reads it whole and caches it, so a hot set still
		// ends up in the cache while uniform random reads of a large
		// volume, which the cache would not help, stay cheap.
		if ok := a.readRawPart(ctx, addr, from, dst); ok {
			a.stats.partReads.Add(1)
			return nil
		}
	}
	span := getSpan()
	enc, bad, rebuilt, err := a.st.ReadBlocks(ctx, addr.Segment, addr.Offset, int(addr.Length), span.b)
	if len(bad) > 0 {
		a.stats.degradedReads.Add(1)
	}
	if err != nil {
		span.put()
		return fmt.Errorf("%w: cblock %v: %w", ErrIO, addr, err)
	}
	if h, err := cblock.ParseHeader(enc); err == nil && !h.Compressed && !rebuilt && len(enc) == cblock.HeaderSize+h.Sectors*SectorSize {
		// Raw, every block verified: the span buffer itself goes to the
		// cache, no copy.
		return a.finishRun(addr, enc[cblock.HeaderSize:], span, from, dst)
	}
	scratch = getLogical()
	n, err = cblock.Decode(scratch.b, enc)
	span.put()
	if err != nil {
		scratch.put()
		return fmt.Errorf("%w: cblock %v: %w", ErrIO, addr, err)
	}
	return a.finishRun(addr, scratch.b[:n], scratch, from, dst)
}

// finishRun copies dst from the logical bytes of the cblock at addr and
// hands their buffer to the cache.
func (a *Array) finishRun(addr segment.Addr, logical []byte, buf *pooledBuf, from int, dst []byte) error {
	if to := from + len(dst); to > len(logical) {
		buf.put()
		return fmt.Errorf("%w: block map reads sectors %d..%d of a cblock of %d bytes at %v", ErrIO, from/SectorSize, to/SectorSize, len(logical), addr)
	}
	copy(dst, logical[from:])
	a.cachePut(addr, logical, buf)
	return nil
}

// seenSet is a table of recently seen cache keys, lossy by design: 4-way
// set-associative (a key's bucket is 4 slots in one cache line), a key is
// forgotten when 4 other keys of its bucket come after it, so "seen again"
// means seen again within about len(slots) other keys. Four ways, not one,
// so that two keys sharing a bucket and read in turn (a scan of a region)
// do not keep knocking each other out.
type seenSet struct {
	slots []atomic.Uint64
	shift uint
}

const seenWays = 4

// init sizes s to the power of two at or above n slots (at least 1024):
// about as many as the cache holds cblocks.
func (s *seenSet) init(n int64) {
	bits := uint(10)
	for int64(1)<<bits < n && bits < 24 {
		bits++
	}
	s.slots = make([]atomic.Uint64, 1<<bits)
	s.shift = 64 - (bits - 2) // bucket index: bits-2 bits
}

// again reports whether key is in s, and records it if not; a key found
// is dropped (it goes to the cache now). Racing callers may both record
// a key or both see it: harmless, it only decides what is cached.
func (s *seenSet) again(key uint64) bool {
	v := key | 1<<63 // never 0, the empty slot
	h := key * 0x9e3779b97f4a7c15
	b := s.slots[(h>>s.shift)*seenWays:][:seenWays]
	free := -1
	for i := range b {
		switch b[i].Load() {
		case v:
			b[i].Store(0)
			return true
		case 0:
			if free < 0 {
				free = i
			}
		}
	}
	if free < 0 {
		free = int(h>>8) % seenWays // a full bucket: evict a way the key picks
	}
	b[free].Store(v)
	return false
}

// rawPartNearBlocks: when the blocks of the part read start at most this
// many blocks after the cblock's header block, one read covers both;
// farther, the header block is read on its own.
const rawPartNearBlocks = 1

// readRawPart serves a read of logical bytes [from, from+len(dst)) of the
// durable cblock at addr if it is raw: it reads the header (unless the
// length alone says raw) and only the blocks under those bytes, whose
// block checksums the segment reader verifies. The cache is not filled
// (it holds whole cblocks only). It
// returns false, dst's contents unspecified, when the cblock is not raw
// after all, or a unit needed a rebuild from parity (so the caller reads
// the whole cblock and checks its crc too), or anything failed (the
// caller's whole read reports it).
func (a *Array) readRawPart(ctx context.Context, addr segment.Addr, from int, dst []byte) bool {
	sp := getSpan()
	defer sp.put()
	span := sp.b
	hdrOff := addr.Offset
	dataOff := addr.Offset + cblock.HeaderSize + int64(from)
	near := dataOff/segment.BlockSize-hdrOff/segment.BlockSize <= rawPartNearBlocks
	if addr.Length == cblock.MaxEncoded && !near {
		// Only a raw cblock of MaxSectors is MaxEncoded bytes long (a
		// zstd payload is kept only when shorter than the raw one), so
		// the header block need not be read.
		d, _, rebuilt, err := a.st.ReadBlocks(ctx, addr.Segment, dataOff, len(dst), span)
		if err != nil || rebuilt {
			return false
		}
		copy(dst, d)
		return true
	}
	var hdr, data []byte
	if near {
		b, _, rebuilt, err := a.st.ReadBlocks(ctx, addr.Segment, hdrOff, int(dataOff-hdrOff)+len(dst), span)
		if err != nil || rebuilt {
			return false
		}
		hdr, data = b[:cblock.HeaderSize+1], b[dataOff-hdrOff:]
	} else {
		h, _, rebuilt, err := a.st.ReadBlocks(ctx, addr.Segment, hdrOff, cblock.HeaderSize+1, span[:segment.BlockSize])
		if err != nil || rebuilt {
			return false
		}
		d, _, rebuilt, err := a.st.ReadBlocks(ctx, addr.Segment, dataOff, len(dst), span[segment.BlockSize:])
		if err != nil || rebuilt {
			return false
		}
		hdr, data = h, d
	}
	h, err := cblock.ParseHeader(hdr)
	if err != nil || h.Compressed || cblock.HeaderSize+h.Sectors*SectorSize != int(addr.Length) {
		return false
	}
	copy(dst, data)
	return true
}

// Extents appends to dst the status of a prefix of [off, off+length)
// starting at off, at least one extent, adjacent extents differing. The
// prefix is at most maxExtentsBytes long.
func (v *Volume) Extents(ctx context.Context, off, length int64, dst []Extent) ([]Extent, error) {
	a := v.a
	if err := a.enter(); err != nil {
		return dst, err
	}
	defer a.exit()
	m, size, err := v.readable()
	if err != nil {
		return dst, err
	}
	if err := checkRange(off, length, size); err != nil {
		return dst, err
	}
	if length == 0 {
		return dst, fmt.Errorf("%w: empty range", ErrInvalid)
	}
	length = min(length, maxExtentsBytes)
	first := len(dst)
	emit := func(n uint64, hole, zero bool) {
		l := int64(n) * SectorSize
		if k := len(dst); k > first && dst[k-1].Hole == hole && dst[k-1].Zero == zero {
			dst[k-1].Length += l
			return
		}
		dst = append(dst, Extent{Length: l, Hole: hole, Zero: zero})
	}
	if err := a.extents(ctx, m, uint64(off/SectorSize), uint64(length/SectorSize), emit, 0); err != nil {
		return dst[:first], fmt.Errorf("%s: extents at %d: %w", v.vs.name, off, err)
	}
	return dst, nil
}

// maxExtentsBytes bounds the range one Extents call resolves.
const maxExtentsBytes = 1 << 30

// extents reports the status of sectors [lba, lba+n) of medium m in order.
func (a *Array) extents(ctx context.Context, m, lba, n uint64, emit func(n uint64, hole, zero bool), depth int) error {
	if depth > maxChainDepth {
		return fmt.Errorf("%w: medium chain deeper than %d at medium %d", ErrIO, maxChainDepth, m)
	}
	cur := lba
	below := func(from, to uint64) error {
		c := from
		err := a.mt.Resolve(ctx, []uint64{m}, from, to-from, pyramid.ReadOptions{}, func(t []uint64) error {
			start, l := t[pyramid.MTStart], t[pyramid.MTLen]
			if start > c {
				emit(start-c, true, true)
			}
			if target := t[pyramid.MTTarget]; target != 0 {
				if err := a.extents(ctx, target, t[pyramid.MTTargetOffset], l, emit, depth+1); err != nil {
					return err
				}
			} else {
				emit(l, true, true)
			}
			c = start + l
			return nil
		})
		if err != nil {
			return metaErr(err)
		}
		if c < to {
			emit(to-c, true, true)
		}
		return nil
	}
	err := a.bm.Resolve(ctx, []uint64{m}, lba, n, pyramid.ReadOptions{}, func(t []uint64) error {
		start, l := t[pyramid.BMLBA], t[pyramid.BMLen]
		if start > cur {
			if err := below(cur, start); err != nil {
				return err
			}
		}
		switch t[pyramid.BMKind] {
		case pyramid.KindZero:
			emit(l, false, true)
		case kindHole:
			emit(l, true, true)
		default:
			emit(l, false, false)
		}
		cur = start + l
		return nil
	})
	if err != nil {
		return metaErr(err)
	}
	if cur < lba+n {
		return below(cur, lba+n)
	}
	return nil
}
