package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/shalestore/shale/backend"
	"github.com/shalestore/shale/core/alloc"
	"github.com/shalestore/shale/core/boot"
	"github.com/shalestore/shale/core/segment"
)

// Recovery is what Open found.
type Recovery struct {
	// Generation is the boot generation recovery started from.
	Generation uint64
	// Roots are that generation's metadata roots.
	Roots map[string][]byte
	// Segments are the frontier segments and how far each was written.
	Segments []ScannedSegment
	// Records are the log records in the frontier segments' durable
	// segios, in address order: together with the roots and NVRAM they are
	// every durable fact.
	Records []Record
	// Restart is where writing resumes; Restore takes addresses at or
	// after it.
	Restart segment.Position
	// Bad lists write units found bad during the scan.
	Bad []segment.BadUnit
	// Repaired counts units of torn segios rebuilt from parity.
	Repaired int
	// Invalidated counts segios found whole on the drives but never
	// durable (after a hole, or torn beyond repair) whose unit headers
	// recovery overwrote with zeros.
	Invalidated int
	// Phases is how long each step of Open took.
	Phases Phases
}

// Phases times the steps of Open, in order. Only Scan and Verify read
// segments; BootRead, Sync, BootWrite and Start cost the same whatever the
// array stores.
type Phases struct {
	// BootRead: labels and both boot slots of every drive.
	BootRead time.Duration
	// Scan: unit headers of the frontier segments' segios.
	Scan time.Duration
	// Verify: the last MaxUnsynced segios read whole, repairs and
	// invalidations written, content maps of the frontier segios read.
	Verify time.Duration
	// Sync: every drive synced, so what the scan counted is durable.
	Sync time.Duration
	// BootWrite: the session's boot generation written and synced on its
	// copies.
	BootWrite time.Duration
	// Start: NVRAM log opened, reader and writer started.
	Start time.Duration
}

// ScannedSegment is one frontier segment as recovery found it.
type ScannedSegment struct {
	Layout segment.Layout
	Segios int // complete segios from 0
}

// Record is a log record found by recovery.
type Record struct {
	Addr         segment.Addr
	SeqLo, SeqHi uint64
}

// Open recovers an array from its drives (in the order they were given to
// Create) and NVRAM: newest valid boot generation, then a scan of only the
// frontier set's AUs, then the NVRAM log is opened for Replay. Before it
// returns, a new boot generation is written for this session (its number
// stamps every segio the session writes). The engine then calls Replay,
// Restore for lost items, and EndRestore before appending.
func Open(ctx context.Context, drives []backend.Device, nvram backend.Device, opts Options) (*Store, *Recovery, error) {
	opts.fill()
	t0 := time.Now()
	var ph Phases
	found, err := boot.ReadNewest(ctx, drives)
	if err != nil {
		return nil, nil, fmt.Errorf("store: %w", err)
	}
	st := found.State
	if len(st.Drives) != len(drives) {
		return nil, nil, fmt.Errorf("store: array has %d drives, %d given: %w", len(st.Drives), len(drives), ErrDriveOrder)
	}
	var slot int64
	for i, l := range found.Labels {
		if l == nil {
			continue
		}
		if l.Index != i || l.Drive != st.Drives[i].ID {
			return nil, nil, fmt.Errorf("store: drive %d carries the label of drive %d: %w", i, l.Index, ErrDriveOrder)
		}
		slot = l.SlotSize
	}
	d, err := segment.NewDrives(st.Geometry, st.Base, drives)
	if err != nil {
		return nil, nil, err
	}
	for i, l := range found.Labels {
		if l == nil || st.Drives[i].Failed {
			d.SetFailed(i, true)
		}
	}
	al, err := alloc.Decode(st.Geometry, st.Alloc, st.Frontier, st.NextSegment, opts.Alloc)
	if err != nil {
		return nil, nil, fmt.Errorf("store: boot generation %d: %w", st.Generation, err)
	}
	for i := range drives {
		if d.Failed(i) {
			al.SetFailed(i, true)
		}
	}
	s := &Store{opts: opts, d: d, state: st, alloc: al, layouts: map[segment.ID]segment.Layout{},
		bw: &boot.Writer{SlotSize: slot, CrashHook: opts.CrashHook, Logger: opts.Logger}}
	rd, err := segment.NewReader(d, segment.ReaderOptions{Array: st.Array})
	if err != nil {
		return nil, nil, err
	}
	rec := &Recovery{Generation: st.Generation, Roots: st.Clone().Roots}

	ph.BootRead = time.Since(t0)
	t0 = time.Now()
	// Scan the frontier, every segment at once.
	scans := make([]*segment.Scanned, len(st.Frontier))
	errs := make([]error, len(st.Frontier))
	var wg sync.WaitGroup
	for i, l := range st.Frontier {
		wg.Add(1)
		go func() {
			defer wg.Done()
			scans[i], errs[i] = rd.Scan(ctx, l)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, nil, fmt.Errorf("store: scanning the frontier: %w", err)
	}
	g := st.Geometry
	// Segments are written in frontier order: what counts is the run of
	// segios up to the first hole. The writer overlaps segio N+1's writes
	// with segio N's syncs, so a crash can leave N+1 whole and N not, and
	// N+1 may be the first segio of the next segment.
	whole := make([]int, len(scans))
	for i, sc := range scans {
		whole[i] = len(sc.Segios)
	}
	cutAtHole(scans, g.SegiosPerAU())
	ph.Scan = time.Since(t0)
	t0 = time.Now()
	// Only the last segment.MaxUnsynced segios written can be torn.
	if err := rd.VerifyTail(ctx, scans, segment.MaxUnsynced); err != nil {
		return nil, nil, fmt.Errorf("store: verifying the last segios: %w", err)
	}
	// Segios found whole but not kept were never durable. Invalidate their
	// units' headers, so that no later scan counts them: once this session
	// rewrote the segio before one of them and a checkpoint dropped that
	// segio's segment from the frontier, nothing would tell it from a
	// durable segio. At most MaxUnsynced-1 segios after a crash.
	for i, sc := range scans {
		for j := len(sc.Segios); j < whole[i]; j++ {
			rec.Invalidated++
			for _, m := range sc.Layout.Members {
				if d.Failed(m.Drive) {
					continue
				}
				if err := d.Devs[m.Drive].WriteAt(ctx, backend.AlignedBuffer(segment.BlockSize), d.UnitOffset(m, j)); err != nil {
					return nil, nil, fmt.Errorf("store: invalidating segment %d segio %d on drive %d: %w", sc.Layout.Segment, j, m.Drive, err)
				}
			}
		}
	}
	if rec.Invalidated > 0 {
		opts.Logger.Info("store: invalidated segios found after a hole or torn (never durable)", "segios", rec.Invalidated)
	}
	for _, sc := range scans {
		s.layouts[sc.Layout.Segment] = sc.Layout
		rec.Segments = append(rec.Segments, ScannedSegment{Layout: sc.Layout, Segios: len(sc.Segios)})
		rec.Bad = append(rec.Bad, sc.Bad...)
		rec.Repaired += sc.Repaired
		for _, h := range sc.Segios {
			if h.Back == uint32(g.SegioBytes()) {
				continue // no log records
			}
			es, bad, err := rd.ReadMap(ctx, sc.Layout, h)
			rec.Bad = append(rec.Bad, bad...)
			if err != nil {
				return nil, nil, fmt.Errorf("store: content map of segment %d segio %d: %w", sc.Layout.Segment, h.Segio, err)
			}
			for _, e := range es {
				if e.Kind == segment.Record {
					rec.Records = append(rec.Records, Record{
						Addr:  segment.Addr{Segment: sc.Layout.Segment, Offset: int64(h.Segio)*g.SegioBytes() + int64(e.Offset), Length: int32(e.Length)},
						SeqLo: e.SeqLo, SeqHi: e.SeqHi})
				}
			}
		}
	}
	// Resume in the first segment not full (the hole), else after the
	// frontier.
	resume := len(scans)
	for i, sc := range scans {
		if len(sc.Segios) < g.SegiosPerAU() {
			resume = i
			rec.Restart = segment.Position{Layout: sc.Layout, Segio: len(sc.Segios)}
			break
		}
	}
	if rec.Restart.Layout.Members != nil {
		al.Resume(resume + 1)
		al.Unclose(rec.Restart.Layout.Segment)
	} else {
		al.Resume(resume)
	}
	ph.Verify = time.Since(t0)
	t0 = time.Now()
	// What the scan counted as written must be durable before the engine
	// trims NVRAM on its strength.
	for i, dev := range drives {
		if !d.Failed(i) {
			if err := dev.Sync(ctx); err != nil {
				opts.Logger.Warn("store: sync after scan failed", "drive", i, "err", err)
			}
		}
	}
	ph.Sync = time.Since(t0)
	t0 = time.Now()
	s.hook(PointRecoverScanned)
	// A new generation for this session: its number stamps this session's
	// segios, above every earlier session's.
	if err := s.writeBootLocked(ctx); err != nil {
		return nil, nil, err
	}
	ph.BootWrite = time.Since(t0)
	t0 = time.Now()
	s.hook(PointRecoverMounted)
	s.restart = rec.Restart
	if err := s.start(ctx, nvram, rec.Restart); err != nil {
		return nil, nil, err
	}
	ph.Start = time.Since(t0)
	rec.Phases = ph
	opts.Logger.Info("store: recovered", "generation", st.Generation, "frontier_segments", len(st.Frontier),
		"records", len(rec.Records), "restart_segment", rec.Restart.Layout.Segment, "restart_segio", rec.Restart.Segio,
		"bad_units", len(rec.Bad), "repaired", rec.Repaired)
	return s, rec, nil
}

// Replay hands every NVRAM entry above the trim point to fn, in seq order
// (see nvlog.Log.Replay).
func (s *Store) Replay(ctx context.Context, fn func(seq uint64, entry []byte) error) error {
	return s.log.Replay(ctx, fn)
}

// Restore puts an acknowledged item back at the address it was given
// before a crash. Items at addresses already durable (before the restart
// position) are skipped: they were found on the drives. Call it after Open
// and before the first Append, then call EndRestore.
func (s *Store) Restore(a segment.Addr, kind segment.Kind, seqLo, seqHi uint64, payload []byte) error {
	g := s.d.Geometry
	r := s.restart
	if r.Layout.Members != nil {
		if a.Segment < r.Layout.Segment || a.Segment == r.Layout.Segment && a.Offset/g.SegioBytes() < int64(r.Segio) {
			return nil
		}
	} else if _, known := s.Layout(a.Segment); known {
		// No restart position: every frontier segment scanned is full and
		// durable.
		return nil
	}
	return s.writer.Restore(a, kind, seqLo, seqHi, payload)
}

// EndRestore writes the restored items and waits until they are durable.
func (s *Store) EndRestore(ctx context.Context) error { return s.writer.EndRestore(ctx) }

// cutAtHole keeps, of scans (the frontier segments in the order they were
// opened), only the segios before the first hole: a segment not written to
// its end, or a segio whose stamp is lower than the one before it in write
// order (a leftover of an earlier session; see segment.Reader.Scan). Every
// later segio is dropped from its scan; it returns how many were.
func cutAtHole(scans []*segment.Scanned, segiosPerAU int) int {
	dropped := 0
	var stamp uint64
	hole := false
	for _, sc := range scans {
		if hole {
			dropped += len(sc.Segios)
			sc.Segios = sc.Segios[:0]
			continue
		}
		for j, h := range sc.Segios {
			if h.Stamp < stamp {
				dropped += len(sc.Segios) - j
				sc.Segios = sc.Segios[:j]
				break
			}
			stamp = h.Stamp
		}
		hole = len(sc.Segios) < segiosPerAU
	}
	return dropped
}
