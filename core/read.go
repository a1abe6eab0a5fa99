package core

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/shalestore/shale/core/cblock"
	"github.com/shalestore/shale/core/pyramid"
	"github.com/shalestore/shale/core/segment"
)

// cachedCblock is a decompressed cblock in the cache. The address is kept
// to tell a cache-key collision from a hit.
type cachedCblock struct {
	addr segment.Addr
	data []byte
}

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
	n := uint64(len(p) / SectorSize)
	cur := lba
	sub := func(from, to uint64) []byte { return p[(from-lba)*SectorSize : (to-lba)*SectorSize] }
	err := a.bm.Resolve(ctx, []uint64{m}, lba, n, pyramid.ReadOptions{}, func(t []uint64) error {
		start, l := t[pyramid.BMLBA], t[pyramid.BMLen]
		if start > cur {
			if err := a.readBelow(ctx, m, cur, sub(cur, start), depth); err != nil {
				return err
			}
		}
		dst := sub(start, start+l)
		switch t[pyramid.BMKind] {
		case pyramid.KindData, pyramid.KindDup:
			if err := a.readRun(ctx, t, dst); err != nil {
				return err
			}
		case pyramid.KindZero, kindHole:
			clear(dst)
		default:
			return fmt.Errorf("%w: block map of medium %d at %d: kind %d", ErrIO, m, start, t[pyramid.BMKind])
		}
		cur = start + l
		return nil
	})
	if err != nil {
		return metaErr(err)
	}
	if cur < lba+n {
		return a.readBelow(ctx, m, cur, sub(cur, lba+n), depth)
	}
	return nil
}

// readBelow fills p with sectors of medium m that m's block map does not
// map: from the underlying medium the medium table names, or zeros.
func (a *Array) readBelow(ctx context.Context, m, lba uint64, p []byte, depth int) error {
	n := uint64(len(p) / SectorSize)
	cur := lba
	sub := func(from, to uint64) []byte { return p[(from-lba)*SectorSize : (to-lba)*SectorSize] }
	err := a.mt.Resolve(ctx, []uint64{m}, lba, n, pyramid.ReadOptions{}, func(t []uint64) error {
		start, l := t[pyramid.MTStart], t[pyramid.MTLen]
		clear(sub(cur, start))
		if target := t[pyramid.MTTarget]; target != 0 {
			if err := a.readMedium(ctx, target, t[pyramid.MTTargetOffset], sub(start, start+l), depth+1); err != nil {
				return err
			}
		} else {
			clear(sub(start, start+l))
		}
		cur = start + l
		return nil
	})
	if err != nil {
		return metaErr(err)
	}
	clear(sub(cur, lba+n))
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
func (a *Array) readRun(ctx context.Context, t []uint64, dst []byte) error {
	addr := segment.Addr{Segment: segment.ID(t[pyramid.BMSegment]), Offset: int64(t[pyramid.BMOffset]), Length: int32(t[pyramid.BMCLen])}
	from := t[pyramid.BMSector] * SectorSize
	to := from + uint64(len(dst))
	key := cacheKey(addr)
	if c, ok := a.cache.Get(key); ok && c.addr == addr && to <= uint64(len(c.data)) {
		a.stats.cacheHits.Add(1)
		copy(dst, c.data[from:to])
		return nil
	}
	a.stats.cacheMisses.Add(1)
	if addr.Length <= 0 || addr.Length > cblock.MaxEncoded {
		return fmt.Errorf("%w: block map names a cblock of %d bytes at %v", ErrIO, addr.Length, addr)
	}
	scratch := getBuf(cblock.MaxLogical)
	defer putBuf(scratch)
	n, found, err := a.pend.decode(addr, scratch)
	if !found {
		enc := getBuf(int(addr.Length))
		var bad []segment.BadUnit
		bad, err = a.st.Read(ctx, addr, enc)
		if len(bad) > 0 {
			a.stats.degradedReads.Add(1)
		}
		if err == nil {
			n, err = cblock.Decode(scratch, enc)
		}
		putBuf(enc)
	}
	if err != nil {
		return fmt.Errorf("%w: cblock %v: %w", ErrIO, addr, err)
	}
	if to > uint64(n) {
		return fmt.Errorf("%w: block map reads sectors %d..%d of a cblock of %d bytes at %v", ErrIO, from/SectorSize, to/SectorSize, n, addr)
	}
	copy(dst, scratch[from:to])
	// The cache keeps its own copy, exactly the cblock's size, so its
	// byte bound is the memory it holds.
	a.cache.Set(key, &cachedCblock{addr: addr, data: slices.Clone(scratch[:n])}, int64(n))
	return nil
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
