package segment

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/klauspost/reedsolomon"
	"github.com/shalestore/shale/backend"
)

// BadUnit names a write unit a read could not use: its drive, its shard
// index in the segment, and why (a device error, or ErrCorrupt when its
// header or a checksum did not verify).
type BadUnit struct {
	Drive int
	Shard int
	Segio int
	Err   error
}

func (b BadUnit) String() string {
	return fmt.Sprintf("drive %d (shard %d, segio %d): %v", b.Drive, b.Shard, b.Segio, b.Err)
}

// ReadError is returned when a read cannot be served: more than m write
// units of a stripe were bad. It wraps ErrUnrecoverable and lists them.
type ReadError struct {
	Segment ID
	Segio   int
	Bad     []BadUnit
}

func (e *ReadError) Error() string {
	parts := make([]string, len(e.Bad))
	for i, b := range e.Bad {
		parts[i] = b.String()
	}
	return fmt.Sprintf("segment %d segio %d: %d bad write units: %s", e.Segment, e.Segio, len(e.Bad), strings.Join(parts, "; "))
}

func (e *ReadError) Unwrap() error { return ErrUnrecoverable }

// ReaderOptions configure a Reader.
type ReaderOptions struct {
	// Array, if not zero, must match the array id of every unit read.
	Array [16]byte
	// ReadBusy makes reads go to drives that are busy writing instead of
	// rebuilding their data from the other drives (paper §4.4 avoids them;
	// the default).
	ReadBusy bool
	// HeaderCacheEntries bounds the cache of verified unit headers (whose
	// block checksums every read needs). Default 4096.
	HeaderCacheEntries int
}

// ReaderStats are counters of a Reader.
type ReaderStats struct {
	Reads, ReadBytes, Reconstructions, BusyAvoided, BadUnits, HeaderCacheHits atomic.Int64
}

// Reader reads byte ranges of segments, verifying every block's checksum
// and rebuilding from parity what it cannot read. Safe for concurrent use.
type Reader struct {
	d    *Drives
	opts ReaderOptions
	enc  reedsolomon.Encoder
	// Stats are live counters.
	Stats ReaderStats

	bufs sync.Pool // *[]byte of BodySize, aligned

	cmu   sync.Mutex
	cache map[unitKey]*Header
}

type unitKey struct {
	seg   ID
	segio int32
	shard int32
}

// NewReader returns a reader of segments on d.
func NewReader(d *Drives, opts ReaderOptions) (*Reader, error) {
	if opts.HeaderCacheEntries <= 0 {
		opts.HeaderCacheEntries = 4096
	}
	r := &Reader{d: d, opts: opts, cache: make(map[unitKey]*Header)}
	g := d.Geometry
	if g.Parity > 0 {
		enc, err := reedsolomon.New(g.Data, g.Parity)
		if err != nil {
			return nil, fmt.Errorf("segment: reedsolomon: %w", err)
		}
		r.enc = enc
	}
	size := int(g.BodySize())
	r.bufs.New = func() any { b := backend.AlignedBuffer(size); return &b }
	return r, nil
}

func (r *Reader) getBuf() *[]byte  { return r.bufs.Get().(*[]byte) }
func (r *Reader) putBuf(b *[]byte) { r.bufs.Put(b) }

// ReadAt fills buf with the bytes at off in the segment's logical data
// space (see Addr). It verifies checksums and rebuilds from parity what it
// cannot read directly. bad lists the write units it found bad (a drive
// error, a failed drive, or data failing its checksum), also on success, so
// the caller learns which drives to repair or retire; units skipped only
// because their drive was busy writing are not listed. If a stripe has more
// than m bad units, ReadAt returns a *ReadError (errors.Is ErrUnrecoverable)
// and buf's contents are unspecified.
//
// buf is the caller's; the reader keeps no reference to it.
func (r *Reader) ReadAt(ctx context.Context, lay Layout, buf []byte, off int64) (bad []BadUnit, err error) {
	g := r.d.Geometry
	if err := r.d.CheckLayout(lay); err != nil {
		return nil, err
	}
	if off < 0 || off+int64(len(buf)) > g.SegmentBytes() {
		return nil, fmt.Errorf("segment %d: read of %d bytes at %d beyond %d: %w", lay.Segment, len(buf), off, g.SegmentBytes(), backend.ErrOutOfRange)
	}
	r.Stats.Reads.Add(1)
	r.Stats.ReadBytes.Add(int64(len(buf)))
	body := g.BodySize()
	for len(buf) > 0 {
		segio := int(off / g.SegioBytes())
		p := off % g.SegioBytes()
		shard := int(p / body)
		in := p % body
		n := min(int64(len(buf)), body-in)
		b, err := r.readPiece(ctx, lay, segio, shard, in, buf[:n])
		bad = append(bad, b...)
		if err != nil {
			return bad, err
		}
		buf = buf[n:]
		off += n
	}
	return bad, nil
}

// SpanBytes is the length of the whole 4 KiB blocks that cover n bytes at
// off: the buffer ReadBlocks needs.
func SpanBytes(off int64, n int) int {
	return int((off+int64(n)+BlockSize-1)/BlockSize*BlockSize - off/BlockSize*BlockSize)
}

// ReadBlocks is ReadAt without the copy: it reads the whole blocks that
// cover the n bytes at off straight into buf, verifies their checksums (or
// rebuilds them from parity), and returns the n bytes, a slice of buf.
// buf must hold SpanBytes(off, n) bytes and start at an address the
// drives accept for direct I/O (backend.AlignedBuffer, or a subslice of
// one starting at a multiple of 4096).
//
// Every byte returned was read and checked against the block checksum of
// the write unit it was read from, unless rebuilt is true: then some were
// reconstructed from parity (a bad unit, or a drive busy writing), from
// blocks that were checked, but not checked against a checksum of their
// own, and a caller that promises verified data checks them another way
// (the cblock's crc).
func (r *Reader) ReadBlocks(ctx context.Context, lay Layout, off int64, n int, buf []byte) (data []byte, bad []BadUnit, rebuilt bool, err error) {
	g := r.d.Geometry
	if err := r.d.CheckLayout(lay); err != nil {
		return nil, nil, false, err
	}
	if off < 0 || n < 0 || off+int64(n) > g.SegmentBytes() {
		return nil, nil, false, fmt.Errorf("segment %d: read of %d bytes at %d beyond %d: %w", lay.Segment, n, off, g.SegmentBytes(), backend.ErrOutOfRange)
	}
	if span := SpanBytes(off, n); len(buf) < span {
		return nil, nil, false, fmt.Errorf("segment %d: read of %d bytes at %d into a buffer of %d, want %d", lay.Segment, n, off, len(buf), span)
	}
	r.Stats.Reads.Add(1)
	r.Stats.ReadBytes.Add(int64(n))
	// Bodies are whole blocks, so the blocks of consecutive write units
	// follow each other in buf: each piece lands where it belongs.
	body := g.BodySize()
	pos := int64(0)
	for o, left := off, int64(n); left > 0; {
		segio := int(o / g.SegioBytes())
		p := o % g.SegioBytes()
		shard := int(p / body)
		in := p % body
		m := min(left, body-in)
		b0 := in / BlockSize
		b1 := (in + m + BlockSize - 1) / BlockSize
		more, rb, err := r.readBlocks(ctx, lay, segio, shard, b0, b1, buf[pos:pos+(b1-b0)*BlockSize])
		bad = append(bad, more...)
		rebuilt = rebuilt || rb
		if err != nil {
			return nil, bad, rebuilt, err
		}
		pos += (b1 - b0) * BlockSize
		o += m
		left -= m
	}
	return buf[off%BlockSize:][:n], bad, rebuilt, nil
}

// readPiece fills out with body bytes [in, in+len(out)) of data shard
// shard of segio.
func (r *Reader) readPiece(ctx context.Context, lay Layout, segio, shard int, in int64, out []byte) ([]BadUnit, error) {
	b0 := in / BlockSize
	b1 := (in + int64(len(out)) + BlockSize - 1) / BlockSize
	bp := r.getBuf()
	defer r.putBuf(bp)
	span := (*bp)[:(b1-b0)*BlockSize]
	bad, _, err := r.readBlocks(ctx, lay, segio, shard, b0, b1, span)
	if err == nil {
		copy(out, span[in-b0*BlockSize:])
	}
	return bad, err
}

// readBlocks fills span with body blocks [b0,b1) of data shard shard of
// segio: read from its drive and checked against their block checksums,
// or (rebuilt true) rebuilt from the others when the drive is failed, busy
// writing or its data is bad.
func (r *Reader) readBlocks(ctx context.Context, lay Layout, segio, shard int, b0, b1 int64, span []byte) (bad []BadUnit, rebuilt bool, err error) {
	m := lay.Members[shard]
	skip := r.d.Failed(m.Drive)
	busy := !skip && !r.opts.ReadBusy && r.d.Busy(m.Drive) && r.enc != nil
	if skip {
		bad = append(bad, BadUnit{Drive: m.Drive, Shard: shard, Segio: segio, Err: fmt.Errorf("drive marked failed: %w", backend.ErrFailed)})
	}
	if !skip && !busy {
		_, _, err := r.readUnit(ctx, lay, segio, shard, b0, b1, span)
		if err == nil {
			return nil, false, nil
		}
		bad = append(bad, BadUnit{Drive: m.Drive, Shard: shard, Segio: segio, Err: err})
	}
	if busy {
		r.Stats.BusyAvoided.Add(1)
	}
	more, err := r.rebuild(ctx, lay, segio, shard, b0, b1, span, bad)
	bad = append(bad, more...)
	if err != nil && busy {
		// Rebuilding failed; the busy drive is still worth a try.
		_, _, err2 := r.readUnit(ctx, lay, segio, shard, b0, b1, span)
		if err2 == nil {
			return bad, false, nil
		}
		bad = append(bad, BadUnit{Drive: m.Drive, Shard: shard, Segio: segio, Err: err2})
		return bad, false, &ReadError{Segment: lay.Segment, Segio: segio, Bad: bad}
	}
	r.Stats.BadUnits.Add(int64(len(bad)))
	return bad, err == nil, err
}

// rebuild reconstructs blocks [b0,b1) of shard want from other units into
// span. known lists units already found bad (for the error).
func (r *Reader) rebuild(ctx context.Context, lay Layout, segio, want int, b0, b1 int64, span []byte, known []BadUnit) ([]BadUnit, error) {
	g := r.d.Geometry
	if r.enc == nil {
		return nil, &ReadError{Segment: lay.Segment, Segio: segio, Bad: known}
	}
	r.Stats.Reconstructions.Add(1)
	type result struct {
		buf   *[]byte
		data  []byte
		stamp uint64
		err   error
	}
	res := make([]result, g.Width())
	var bad []BadUnit
	// Idle drives first; busy ones only if the idle ones are not enough.
	var idle, busy []int
	for i, m := range lay.Members {
		switch {
		case i == want:
		case r.d.Failed(m.Drive):
			bad = append(bad, BadUnit{Drive: m.Drive, Shard: i, Segio: segio, Err: fmt.Errorf("drive marked failed: %w", backend.ErrFailed)})
		case !r.opts.ReadBusy && r.d.Busy(m.Drive):
			busy = append(busy, i)
		default:
			idle = append(idle, i)
		}
	}
	defer func() {
		for _, x := range res {
			if x.buf != nil {
				r.putBuf(x.buf)
			}
		}
	}()
	good := 0
	for _, set := range [][]int{idle, busy} {
		if good >= g.Data || len(set) == 0 {
			continue
		}
		var wg sync.WaitGroup
		for _, i := range set {
			wg.Add(1)
			go func() {
				defer wg.Done()
				bp := r.getBuf()
				data, h, err := r.readUnit(ctx, lay, segio, i, b0, b1, *bp)
				res[i] = result{buf: bp, data: data, err: err}
				if h != nil {
					res[i].stamp = h.Stamp
				}
			}()
		}
		wg.Wait()
		for _, i := range set {
			if res[i].err != nil {
				bad = append(bad, BadUnit{Drive: lay.Members[i].Drive, Shard: i, Segio: segio, Err: res[i].err})
			} else {
				good++
			}
		}
	}
	// Units of one write share a stamp; use the newest write with ≥ k units
	// and count units of other writes as bad (stale leftovers of a torn
	// write that was later redone).
	counts := map[uint64]int{}
	for i := range res {
		if res[i].data != nil && res[i].err == nil {
			counts[res[i].stamp]++
		}
	}
	var stamp uint64
	found := false
	for s, c := range counts {
		if c >= g.Data && (!found || s > stamp) {
			stamp, found = s, true
		}
	}
	if !found {
		all := append(slices.Clone(known), bad...)
		return bad, &ReadError{Segment: lay.Segment, Segio: segio, Bad: all}
	}
	shards := make([][]byte, g.Width())
	for i := range res {
		if res[i].data == nil || res[i].err != nil {
			continue
		}
		if res[i].stamp != stamp {
			bad = append(bad, BadUnit{Drive: lay.Members[i].Drive, Shard: i, Segio: segio, Err: fmt.Errorf("stale write (stamp %d, stripe has %d): %w", res[i].stamp, stamp, ErrCorrupt)})
			continue
		}
		shards[i] = res[i].data
	}
	n := int((b1 - b0) * BlockSize)
	tmp := r.getBuf()
	defer r.putBuf(tmp)
	shards[want] = (*tmp)[:0:n]
	required := make([]bool, g.Width())
	required[want] = true
	if want < g.Data {
		required = required[:g.Data]
	}
	if err := r.enc.ReconstructSome(shards, required); err != nil {
		all := append(slices.Clone(known), bad...)
		return bad, fmt.Errorf("%w (%v)", &ReadError{Segment: lay.Segment, Segio: segio, Bad: all}, err)
	}
	copy(span, shards[want])
	return bad, nil
}

// readUnit reads and verifies blocks [b0,b1) of the body of shard i of
// segio into buf, returning the verified bytes (a prefix of buf) and the
// unit's header.
func (r *Reader) readUnit(ctx context.Context, lay Layout, segio, i int, b0, b1 int64, buf []byte) ([]byte, *Header, error) {
	g := r.d.Geometry
	m := lay.Members[i]
	h, err := r.header(ctx, lay, segio, i)
	if err != nil {
		return nil, nil, err
	}
	data := buf[:(b1-b0)*BlockSize]
	off := r.d.UnitOffset(m, segio) + g.HeaderSize() + b0*BlockSize
	if err := r.d.Devs[m.Drive].ReadAt(ctx, data, off); err != nil {
		return nil, h, fmt.Errorf("drive %d read at %d: %w", m.Drive, off, err)
	}
	for b := b0; b < b1; b++ {
		blk := data[(b-b0)*BlockSize : (b-b0+1)*BlockSize]
		if got := crc(blk); got != h.BlockCRCs[b] {
			return nil, h, fmt.Errorf("drive %d block %d of segment %d segio %d shard %d: checksum %08x, want %08x: %w",
				m.Drive, b, lay.Segment, segio, i, got, h.BlockCRCs[b], ErrCorrupt)
		}
	}
	return data, h, nil
}

// header returns the verified header of shard i of segio, from the cache
// or the drive.
func (r *Reader) header(ctx context.Context, lay Layout, segio, i int) (*Header, error) {
	k := unitKey{seg: lay.Segment, segio: int32(segio), shard: int32(i)}
	r.cmu.Lock()
	h := r.cache[k]
	r.cmu.Unlock()
	if h != nil {
		r.Stats.HeaderCacheHits.Add(1)
		return h, nil
	}
	h, err := ReadHeader(ctx, r.d, lay.Members[i], segio)
	if err != nil {
		return nil, err
	}
	if err := r.check(h, lay, segio, i); err != nil {
		return nil, err
	}
	r.cmu.Lock()
	if len(r.cache) >= r.opts.HeaderCacheEntries {
		for k := range r.cache { // evict an arbitrary entry
			delete(r.cache, k)
			break
		}
	}
	r.cache[k] = h
	r.cmu.Unlock()
	return h, nil
}

func (r *Reader) check(h *Header, lay Layout, segio, i int) error {
	g := r.d.Geometry
	switch {
	case h.Geometry() != g:
		return fmt.Errorf("unit header geometry %v, array has %v: %w", h.Geometry(), g, ErrCorrupt)
	case r.opts.Array != [16]byte{} && h.Array != r.opts.Array:
		return fmt.Errorf("unit header of another array: %w", ErrCorrupt)
	case h.Segment != lay.Segment || h.Segio != segio || h.Shard != i:
		return fmt.Errorf("unit header names segment %d segio %d shard %d, want %d/%d/%d: %w", h.Segment, h.Segio, h.Shard, lay.Segment, segio, i, ErrCorrupt)
	case !slices.Equal(h.Members, lay.Members):
		return fmt.Errorf("unit header of segment %d lists other members: %w", h.Segment, ErrCorrupt)
	}
	return nil
}

// Forget drops cached headers of a segment, for when its AUs are freed.
func (r *Reader) Forget(seg ID) {
	r.cmu.Lock()
	defer r.cmu.Unlock()
	for k := range r.cache {
		if k.seg == seg {
			delete(r.cache, k)
		}
	}
}

// ReadHeader reads and decodes the unit header of member m's write unit of
// segio. It checks the header's own consistency and checksum, not that it
// belongs to any particular segment.
func ReadHeader(ctx context.Context, d *Drives, m Member, segio int) (*Header, error) {
	g := d.Geometry
	buf := backend.AlignedBuffer(int(g.HeaderSize()))
	if err := d.Devs[m.Drive].ReadAt(ctx, buf, d.UnitOffset(m, segio)); err != nil {
		return nil, fmt.Errorf("drive %d unit header at AU %d segio %d: %w", m.Drive, m.AU, segio, err)
	}
	h, err := DecodeHeader(buf)
	if err != nil {
		return nil, fmt.Errorf("drive %d AU %d segio %d: %w", m.Drive, m.AU, segio, err)
	}
	return h, nil
}

// ReadMap reads the content map of a segio, given any verified header of
// it, through ReadAt (so it is rebuilt from parity if need be).
func (r *Reader) ReadMap(ctx context.Context, lay Layout, h *Header) ([]Entry, []BadUnit, error) {
	g := r.d.Geometry
	if h.MapCount == 0 {
		return nil, nil, nil
	}
	buf := make([]byte, int(h.MapCount)*entrySize)
	bad, err := r.ReadAt(ctx, lay, buf, int64(h.Segio)*g.SegioBytes()+int64(h.MapOffset))
	if err != nil {
		return nil, bad, err
	}
	es, err := DecodeMap(h, buf)
	return es, bad, err
}
