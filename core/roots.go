package core

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/shalestore/shale/core/pyramid"
	"github.com/shalestore/shale/core/segment"
	"github.com/shalestore/shale/core/store"
)

// Root names in the boot region.
const (
	catalogRoot = "core.catalog"
	layoutsRoot = "core.layouts"
)

// ErrCorruptRoot classifies a root that does not decode.
var ErrCorruptRoot = errors.New("core: corrupt root")

// rootStore is the pyramid's RootStore over the boot region, and the
// engine's own roots (catalog, layouts). Every SetRoot writes a boot
// generation (store.Checkpoint) holding every root, the layouts of every
// segment known so far included, so a segment's layout is durable before
// the segment can leave the frontier set (checkpoints drop closed
// segments; a segment is recorded here when something is first appended
// to it, before it can close).
type rootStore struct {
	s *store.Store

	last atomic.Uint64 // the segment use saw last: the common case, no lock

	mu      sync.Mutex // serialises checkpoints; guards the fields below
	roots   map[string][]byte
	layouts map[segment.ID]segment.Layout
	dirty   bool // layouts changed since the last checkpoint
}

func newRootStore(s *store.Store, roots map[string][]byte) *rootStore {
	r := &rootStore{s: s, roots: maps.Clone(roots), layouts: map[segment.ID]segment.Layout{}}
	if r.roots == nil {
		r.roots = map[string][]byte{}
	}
	return r
}

// use records that something was appended to segment seg.
func (r *rootStore) use(seg segment.ID) {
	if r.last.Load() == uint64(seg) {
		return
	}
	defer r.last.Store(uint64(seg))
	r.mu.Lock()
	_, ok := r.layouts[seg]
	r.mu.Unlock()
	if ok {
		return
	}
	l, known := r.s.Layout(seg)
	if !known {
		return // cannot happen: Append just returned an address in it
	}
	r.mu.Lock()
	r.layouts[seg] = l
	r.dirty = true
	r.mu.Unlock()
}

// loadLayouts decodes the layouts root and gives the store the layouts it
// does not know yet.
func (r *rootStore) loadLayouts() error {
	ls, err := decodeLayouts(r.roots[layoutsRoot])
	if err != nil {
		return err
	}
	for _, l := range ls {
		r.layouts[l.Segment] = l
		if _, known := r.s.Layout(l.Segment); !known {
			if err := r.s.AddLayout(l); err != nil {
				return fmt.Errorf("core: layout of segment %d: %w", l.Segment, err)
			}
		}
	}
	return nil
}

// SetRoot implements pyramid.RootStore.
func (r *rootStore) SetRoot(ctx context.Context, name string, value []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.checkpointLocked(ctx, name, value)
}

// GetRoot implements pyramid.RootStore.
func (r *rootStore) GetRoot(ctx context.Context, name string) ([]byte, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.roots[name]
	return slices.Clone(v), ok, nil
}

// checkpoint writes a boot generation with the current roots (and
// drops closed segments from the frontier).
func (r *rootStore) checkpoint(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.checkpointLocked(ctx, "", nil)
}

// checkpointLocked sets root name (if not "") and writes a generation.
// REQUIRES: r.mu held.
func (r *rootStore) checkpointLocked(ctx context.Context, name string, value []byte) error {
	next := maps.Clone(r.roots)
	if name != "" {
		next[name] = slices.Clone(value)
	}
	next[layoutsRoot] = encodeLayouts(slices.Collect(maps.Values(r.layouts)))
	if err := r.s.Checkpoint(ctx, next); err != nil {
		return err
	}
	r.roots, r.dirty = next, false
	return nil
}

// encodeLayouts encodes layouts (any order) in the core.layouts format.
func encodeLayouts(ls []segment.Layout) []byte {
	slices.SortFunc(ls, func(a, b segment.Layout) int { return int64Cmp(int64(a.Segment), int64(b.Segment)) })
	out := []byte{1}
	out = binary.AppendUvarint(out, uint64(len(ls)))
	prev := segment.ID(0)
	for _, l := range ls {
		out = binary.AppendUvarint(out, uint64(l.Segment-prev))
		prev = l.Segment
		out = binary.AppendUvarint(out, uint64(len(l.Members)))
		for _, m := range l.Members {
			out = binary.AppendUvarint(out, uint64(m.Drive))
			out = binary.AppendUvarint(out, uint64(m.AU))
		}
	}
	return out
}

func int64Cmp(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// maxLayoutWidth bounds a decoded layout's width.
const maxLayoutWidth = segment.MaxShards

// decodeLayouts decodes the core.layouts root (nil or empty: none).
func decodeLayouts(b []byte) ([]segment.Layout, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if b[0] != 1 {
		return nil, fmt.Errorf("%w: layouts version %d", ErrCorruptRoot, b[0])
	}
	pos := 1
	uv := func() (uint64, error) {
		v, n := binary.Uvarint(b[pos:])
		if n <= 0 {
			return 0, fmt.Errorf("%w: layouts truncated at byte %d", ErrCorruptRoot, pos)
		}
		pos += n
		return v, nil
	}
	count, err := uv()
	if err != nil {
		return nil, err
	}
	if count > uint64(len(b)) {
		return nil, fmt.Errorf("%w: %d layouts in %d bytes", ErrCorruptRoot, count, len(b))
	}
	var out []segment.Layout
	prev := uint64(0)
	for range count {
		d, err := uv()
		if err != nil {
			return nil, err
		}
		if d == 0 || prev+d < prev || prev+d > 1<<62 {
			return nil, fmt.Errorf("%w: segment ids not increasing", ErrCorruptRoot)
		}
		prev += d
		w, err := uv()
		if err != nil {
			return nil, err
		}
		if w == 0 || w > maxLayoutWidth {
			return nil, fmt.Errorf("%w: layout width %d", ErrCorruptRoot, w)
		}
		l := segment.Layout{Segment: segment.ID(prev), Members: make([]segment.Member, w)}
		for i := range l.Members {
			dr, err := uv()
			if err != nil {
				return nil, err
			}
			au, err := uv()
			if err != nil {
				return nil, err
			}
			if dr > 1<<16 || au > 1<<48 {
				return nil, fmt.Errorf("%w: member drive %d AU %d", ErrCorruptRoot, dr, au)
			}
			l.Members[i] = segment.Member{Drive: int(dr), AU: int64(au)}
		}
		out = append(out, l)
	}
	if pos != len(b) {
		return nil, fmt.Errorf("%w: %d trailing bytes in layouts", ErrCorruptRoot, len(b)-pos)
	}
	return out, nil
}

// segmentPages is the pyramid's PageStore over the segment store: each
// page is a log record appended from the back of the open segio, tagged
// with the patch's sequence range; Finish flushes the writer. A pyramid
// Addr holds the segment id (8 bytes) then offset<<24 | length (8 bytes),
// big-endian.
type segmentPages struct {
	s     *store.Store
	roots *rootStore
}

func encodePageAddr(a segment.Addr) (pyramid.Addr, error) {
	var p pyramid.Addr
	if a.Offset < 0 || a.Offset >= 1<<40 || a.Length <= 0 || a.Length >= 1<<24 {
		return p, fmt.Errorf("core: segment address %v does not fit a page address", a)
	}
	binary.BigEndian.PutUint64(p[:8], uint64(a.Segment))
	binary.BigEndian.PutUint64(p[8:], uint64(a.Offset)<<24|uint64(a.Length))
	return p, nil
}

func decodePageAddr(p pyramid.Addr) segment.Addr {
	v := binary.BigEndian.Uint64(p[8:])
	return segment.Addr{Segment: segment.ID(binary.BigEndian.Uint64(p[:8])), Offset: int64(v >> 24), Length: int32(v & (1<<24 - 1))}
}

func (sp segmentPages) NewWriter(ctx context.Context, tag pyramid.PatchTag) (pyramid.PageWriter, error) {
	return &pageWriter{sp: sp, tag: tag}, nil
}

func (sp segmentPages) ReadPage(ctx context.Context, addr pyramid.Addr, dst []byte) ([]byte, error) {
	a := decodePageAddr(addr)
	if a.Length <= 0 {
		return nil, fmt.Errorf("core: page address %v", a)
	}
	buf := dst
	if cap(buf) < int(a.Length) {
		buf = make([]byte, a.Length)
	}
	buf = buf[:a.Length]
	if _, err := sp.s.Read(ctx, a, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

type pageWriter struct {
	sp  segmentPages
	tag pyramid.PatchTag
}

// The segment writer treats a cancelled context while it seals a segio as
// fatal (the segio's addresses were handed out), so the store is never
// given a cancellable context here.

func (w *pageWriter) Append(ctx context.Context, page []byte) (pyramid.Addr, error) {
	a, err := w.sp.s.Append(context.WithoutCancel(ctx), segment.Record, w.tag.SeqLo, w.tag.SeqHi, page)
	if err != nil {
		return pyramid.Addr{}, err
	}
	w.sp.roots.use(a.Segment)
	return encodePageAddr(a)
}

func (w *pageWriter) Finish(ctx context.Context) error {
	return w.sp.s.Flush(context.WithoutCancel(ctx))
}

func (w *pageWriter) Abort() {}
