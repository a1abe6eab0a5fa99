package core

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/shalestore/shale/core/cblock"
	"github.com/shalestore/shale/core/pyramid"
	"github.com/shalestore/shale/core/segment"
)

// Attachment format: see the package documentation.
const (
	attachVersion    = 1
	attachItemHeader = 20
)

// maxEntryData bounds the logical bytes of one NVRAM entry (its cblocks
// are at most this plus headers); smaller on a small NVRAM (see start).
const maxEntryData = 4 << 20

// writeCtx is one write's scratch: the batch and the attachment it
// builds. Pooled, so a write allocates nothing in steady state.
type writeCtx struct {
	b      pyramid.Batch
	attach []byte
	dd     dedupState
}

var writePool = sync.Pool{New: func() any { return &writeCtx{attach: make([]byte, 0, 64<<10)} }}

var zeroSector [SectorSize]byte

func isZeroSector(s []byte) bool { return bytes.Equal(s, zeroSector[:]) }

// eachAttached calls fn for every cblock of an attachment.
func eachAttached(att []byte, fn func(addr segment.Addr, payload []byte) error) error {
	if len(att) == 0 {
		return nil
	}
	if att[0] != attachVersion {
		return fmt.Errorf("%w: attachment version %d", ErrCorruptRoot, att[0])
	}
	for p := att[1:]; len(p) > 0; {
		if len(p) < attachItemHeader {
			return fmt.Errorf("%w: attachment truncated", ErrCorruptRoot)
		}
		seg, off, n := binary.LittleEndian.Uint64(p), binary.LittleEndian.Uint64(p[8:]), binary.LittleEndian.Uint32(p[16:])
		p = p[attachItemHeader:]
		if uint64(n) > uint64(len(p)) || n == 0 || n > cblock.MaxEncoded || off > 1<<48 {
			return fmt.Errorf("%w: attachment item of %d bytes", ErrCorruptRoot, n)
		}
		if err := fn(segment.Addr{Segment: segment.ID(seg), Offset: int64(off), Length: int32(n)}, p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// checkRange validates an I/O range against the volume's size.
func checkRange(off, length, size int64) error {
	if off < 0 || length < 0 || off%SectorSize != 0 || length%SectorSize != 0 {
		return fmt.Errorf("%w: range %d+%d is not sector-aligned", ErrInvalid, off, length)
	}
	if off > size || length > size-off {
		return fmt.Errorf("%w: range %d+%d beyond the end (%d)", ErrInvalid, off, length, size)
	}
	return nil
}

// writable admits a write to v and returns its medium with vs.mu held
// shared; the caller calls vs.mu.RUnlock.
func (v *Volume) writable(off, length int64) (uint64, error) {
	vs := v.vs
	if vs.readOnly {
		return 0, fmt.Errorf("%s: %w", vs.name, ErrReadOnly)
	}
	vs.mu.RLock()
	if vs.deleted {
		vs.mu.RUnlock()
		return 0, fmt.Errorf("%s: %w", vs.name, ErrNotFound)
	}
	if err := checkRange(off, length, vs.size); err != nil {
		vs.mu.RUnlock()
		return 0, err
	}
	return vs.medium, nil
}

// WriteAt stores p at off, durably, before returning.
func (v *Volume) WriteAt(ctx context.Context, p []byte, off int64) error {
	a := v.a
	if err := a.enter(); err != nil {
		return err
	}
	defer a.exit()
	m, err := v.writable(off, int64(len(p)))
	if err != nil {
		return err
	}
	defer v.vs.mu.RUnlock()
	if len(p) == 0 {
		return nil
	}
	w := writePool.Get().(*writeCtx)
	defer func() {
		w.b.Reset()
		w.attach = w.attach[:0]
		w.dd.record = w.dd.record[:0]
		writePool.Put(w)
	}()
	if a.dedup != nil {
		// From the first dedup lookup until the facts are durable (see
		// refGate).
		a.refs.enter()
		defer a.refs.exit()
	}
	// One NVRAM entry per maxEntryData bytes: a large write need not fit
	// the log whole (a block device promises no atomicity beyond a
	// sector; each chunk is atomic).
	for done := 0; done < len(p); done += a.entryData {
		chunk := p[done:min(len(p), done+a.entryData)]
		w.b.Reset()
		if err := a.buildWrite(ctx, w, m, uint64((off+int64(done))/SectorSize), chunk); err != nil {
			return err
		}
		a.hook(CrashWriteAppended)
		if _, err := a.db.Persist(ctx, &w.b); err != nil {
			a.stats.writeErrors.Add(1)
			return fmt.Errorf("%s: write at %d: %w: %w", v.vs.name, off+int64(done), ErrIO, err)
		}
		if a.dedup != nil {
			a.publishDedup(w)
		}
	}
	a.stats.writes.Add(1)
	a.stats.writeBytes.Add(int64(len(p)))
	return nil
}

// buildWrite cuts p (at sector lba of medium m) into duplicate runs (with
// dedup on), zero runs and cblocks, appends the cblocks to the segment
// writer and keeps them pending, and fills w's batch and attachment.
func (a *Array) buildWrite(ctx context.Context, w *writeCtx, m, lba uint64, p []byte) error {
	w.attach = append(w.attach[:0], attachVersion)
	if a.dedup == nil {
		if err := a.buildNew(ctx, w, m, lba, p, 0, len(p)/SectorSize); err != nil {
			return err
		}
	} else {
		for _, r := range a.dedupPlan(ctx, w, p) {
			var err error
			if r.Dup {
				err = a.insertDup(w, m, lba, r)
			} else {
				err = a.buildNew(ctx, w, m, lba, p, r.Start, r.End)
			}
			if err != nil {
				return err
			}
		}
	}
	if len(w.attach) > 1 {
		w.b.Attach(w.attach)
	}
	return nil
}

// buildNew stores sectors [from, to) of p (the write at sector lba of
// medium m) as zero runs and new cblocks.
func (a *Array) buildNew(ctx context.Context, w *writeCtx, m, lba uint64, p []byte, from, to int) error {
	nsec := to
	sec := func(i int) []byte { return p[i*SectorSize : (i+1)*SectorSize] }
	for i := from; i < nsec; {
		j := i + 1
		if isZeroSector(sec(i)) {
			for j < nsec && isZeroSector(sec(j)) {
				j++
			}
			if err := w.b.Insert(a.bm, m, lba+uint64(i), uint64(j-i), pyramid.KindZero, 0, 0, 0, 0); err != nil {
				return err
			}
			a.stats.zeroSectors.Add(int64(j - i))
			i = j
			continue
		}
		for j < nsec && j-i < cblock.MaxSectors && !isZeroSector(sec(j)) {
			j++
		}
		if a.noSpace.Load() {
			return a.noSpaceErr(nil)
		}
		at := len(w.attach)
		w.attach = append(w.attach, make([]byte, attachItemHeader)...)
		var err error
		if w.attach, err = cblock.Encode(w.attach, p[i*SectorSize:j*SectorSize]); err != nil {
			return err
		}
		payload := w.attach[at+attachItemHeader:]
		// Never a cancellable context: the segment writer treats a
		// cancellation while sealing a segio as fatal.
		addr, err := a.st.Append(context.WithoutCancel(ctx), segment.Cblock, 0, 0, payload)
		if err != nil {
			if isNoSpace(err) {
				a.noSpace.Store(true)
				return a.noSpaceErr(err)
			}
			return fmt.Errorf("%w: appending a cblock: %w", ErrIO, err)
		}
		binary.LittleEndian.PutUint64(w.attach[at:], uint64(addr.Segment))
		binary.LittleEndian.PutUint64(w.attach[at+8:], uint64(addr.Offset))
		binary.LittleEndian.PutUint32(w.attach[at+16:], uint32(addr.Length))
		a.roots.use(addr.Segment)
		segioPos := pos(addr.Segment, int(addr.Offset/a.geo.SegioBytes()))
		a.pend.add(addr, segioPos, payload)
		a.noteAppend(addr)
		if err := w.b.Insert(a.bm, m, lba+uint64(i), uint64(j-i), pyramid.KindData,
			uint64(addr.Segment), uint64(addr.Offset), uint64(addr.Length), 0); err != nil {
			return err
		}
		if a.dedup != nil {
			a.recordCblock(w, lba, i, j, addr)
		}
		a.stats.cblocks.Add(1)
		a.stats.cblockLogical.Add(int64((j - i) * SectorSize))
		a.stats.cblockStored.Add(int64(addr.Length))
		i = j
	}
	return nil
}

// Flush returns once every write that completed before it is durable.
// Every write is durable when it returns, so there is nothing to wait for.
func (v *Volume) Flush(ctx context.Context) error {
	if err := v.a.enter(); err != nil {
		return err
	}
	v.a.exit()
	return nil
}

// Trim unmaps [off, off+length): it reads as zeros afterwards and its
// space is freed by GC. It is one block-map fact (kindHole).
func (v *Volume) Trim(ctx context.Context, off, length int64) error {
	return v.metaWrite(ctx, off, length, kindHole)
}

// WriteZeroes makes [off, off+length) read as zeros, as metadata only
// (one KindZero block-map fact).
func (v *Volume) WriteZeroes(ctx context.Context, off, length int64) error {
	return v.metaWrite(ctx, off, length, pyramid.KindZero)
}

// kindHole is a block-map kind beside pyramid's: the run is unmapped
// (trimmed, or beyond the end of a volume that was resized). It reads as
// zeros, hides every underlying medium, and is reported as a hole.
const kindHole = 3

func (v *Volume) metaWrite(ctx context.Context, off, length int64, kind uint64) error {
	a := v.a
	if err := a.enter(); err != nil {
		return err
	}
	defer a.exit()
	m, err := v.writable(off, length)
	if err != nil {
		return err
	}
	defer v.vs.mu.RUnlock()
	if length == 0 {
		return nil
	}
	var b pyramid.Batch
	if err := b.Insert(a.bm, m, uint64(off/SectorSize), uint64(length/SectorSize), kind, 0, 0, 0, 0); err != nil {
		return err
	}
	if _, err := a.db.Persist(ctx, &b); err != nil {
		return fmt.Errorf("%s: %w: %w", v.vs.name, ErrIO, err)
	}
	if kind == kindHole {
		a.stats.trimOps.Add(1)
	} else {
		a.stats.zeroWrites.Add(1)
	}
	return nil
}
