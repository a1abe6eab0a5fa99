package segment

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/shalestore/shale/backend"
)

// Scanned is what Scan found in one segment.
type Scanned struct {
	Layout Layout
	// Segios holds, for each segio from 0 on that was found complete, one
	// of its verified unit headers. Writing resumes at len(Segios).
	Segios []*Header
	// Bad lists units found bad (unreadable, corrupt, or from a stale
	// write).
	Bad []BadUnit
	// Repaired counts write units of the last segio rewritten from parity
	// because the crash left them missing or torn.
	Repaired int
}

// Scan finds how far a segment was written, from its unit headers alone:
// segio j counts if at least k of its units carry valid headers of one
// write (the highest stamp with k; see the unit header format) and that
// stamp is not below segio j-1's. Stamps grow from session to session and a
// segment is written in segio order, so a segio whose stamp is lower than
// the one before it is a leftover: written, never made durable, by an
// earlier session that crashed while it was one of the last MaxUnsynced
// segios, before a later session rewrote the segio before it. The scan
// stops at the first segio that does not count. It does not read bodies:
// see VerifyTail for the segios a crash can tear.
//
// Cost: (k+m) header reads per segio found: bounded by the segment,
// whatever the array stores.
func (r *Reader) Scan(ctx context.Context, lay Layout) (*Scanned, error) {
	g := r.d.Geometry
	if err := r.d.CheckLayout(lay); err != nil {
		return nil, err
	}
	sc := &Scanned{Layout: lay.Clone()}
	for j := range g.SegiosPerAU() {
		hs := make([]*Header, g.Width())
		errs := make([]error, g.Width())
		var wg sync.WaitGroup
		for i, m := range lay.Members {
			if r.d.Failed(m.Drive) {
				errs[i] = fmt.Errorf("drive marked failed: %w", backend.ErrFailed)
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				h, err := ReadHeader(ctx, r.d, m, j)
				if err == nil {
					err = r.check(h, lay, j, i)
				}
				hs[i], errs[i] = h, err
				if err != nil {
					hs[i] = nil
				}
			}()
		}
		wg.Wait()
		stamp, ok := pickStamp(hs, g.Data)
		if !ok || j > 0 && stamp < sc.Segios[j-1].Stamp {
			break
		}
		valid := make([]bool, g.Width())
		var h *Header
		for i, x := range hs {
			if x != nil && x.Stamp == stamp {
				valid[i], h = true, x
			} else if errs[i] == nil {
				// A valid header of another write: a stale leftover.
				errs[i] = fmt.Errorf("stale write (stamp %d, segio has %d): %w", x.Stamp, stamp, ErrCorrupt)
			}
		}
		for i, err := range errs {
			if err != nil {
				sc.Bad = append(sc.Bad, BadUnit{Drive: lay.Members[i].Drive, Shard: i, Segio: j, Err: err})
			}
		}
		sc.Segios = append(sc.Segios, h)
	}
	return sc, nil
}

// VerifyLast reads the last segio Scan found whole and verifies every
// block of every unit. If fewer than k units verify, the segio is dropped
// from sc.Segios (it was never durable); if at least k but not all do, the
// missing units are rebuilt from parity, rewritten and synced. It is
// VerifyTail of one segio in one segment: enough only for segios written
// by a writer with MaxUnsyncedSegios 1.
func (r *Reader) VerifyLast(ctx context.Context, sc *Scanned) error {
	return r.VerifyTail(ctx, []*Scanned{sc}, 1)
}

// VerifyTail verifies every block of every unit of the last n segios found
// in scans, which are in write order (the order their segments were
// opened) and hold no segio after a hole: every scan before the last
// non-empty one is whole. A Writer leaves at most MaxUnsynced segios
// unsynced, so recovery passes n = MaxUnsynced: only those can be torn or
// missing units, and the segios before them are durable.
//
// The tail is verified oldest first. A segio with fewer than k units that
// verify was never durable: it is dropped, and with it every segio after
// it (none of them was reported durable either: reports are in order). A
// segio with at least k but not all is repaired: the missing units are
// rebuilt from parity, rewritten and synced.
func (r *Reader) VerifyTail(ctx context.Context, scans []*Scanned, n int) error {
	type pos struct{ scan, segio int }
	var tail []pos
	for si := len(scans) - 1; si >= 0 && len(tail) < n; si-- {
		for j := len(scans[si].Segios) - 1; j >= 0 && len(tail) < n; j-- {
			tail = append(tail, pos{si, j})
		}
	}
	slices.Reverse(tail)
	for _, p := range tail {
		ok, err := r.verifySegio(ctx, scans[p.scan], p.segio)
		if err != nil {
			return err
		}
		if !ok {
			scans[p.scan].Segios = scans[p.scan].Segios[:p.segio]
			for _, sc := range scans[p.scan+1:] {
				sc.Segios = sc.Segios[:0]
			}
			return nil
		}
	}
	return nil
}

// verifySegio verifies (and repairs) segio j of sc; see VerifyTail.
func (r *Reader) verifySegio(ctx context.Context, sc *Scanned, j int) (bool, error) {
	g := r.d.Geometry
	lay := sc.Layout
	h := sc.Segios[j]
	candidates := make([]bool, g.Width())
	for i, m := range lay.Members {
		candidates[i] = !r.d.Failed(m.Drive)
	}
	ok, repaired, bad, err := r.verifyAndRepair(ctx, lay, j, h.Stamp, candidates)
	sc.Bad = append(sc.Bad, bad...)
	sc.Repaired += repaired
	r.cmu.Lock()
	for i := range g.Width() {
		delete(r.cache, unitKey{seg: lay.Segment, segio: int32(j), shard: int32(i)})
	}
	r.cmu.Unlock()
	return ok, err
}

func pickStamp(hs []*Header, k int) (uint64, bool) {
	counts := map[uint64]int{}
	for _, h := range hs {
		if h != nil {
			counts[h.Stamp]++
		}
	}
	var best uint64
	found := false
	for s, c := range counts {
		if c >= k && (!found || s > best) {
			best, found = s, true
		}
	}
	return best, found
}

// verifyAndRepair reads segio j whole, keeps the units of the given stamp
// whose every block verifies, and rewrites the others from parity. It
// reports whether at least k units verified.
func (r *Reader) verifyAndRepair(ctx context.Context, lay Layout, j int, stamp uint64, candidates []bool) (bool, int, []BadUnit, error) {
	g := r.d.Geometry
	units := make([][]byte, g.Width())
	hdrs := make([]*Header, g.Width())
	var bad []BadUnit
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, m := range lay.Members {
		if !candidates[i] {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := backend.AlignedBuffer(int(g.WriteUnit))
			err := r.d.Devs[m.Drive].ReadAt(ctx, buf, r.d.UnitOffset(m, j))
			var h *Header
			if err == nil {
				h, err = DecodeHeader(buf)
			}
			if err == nil {
				err = r.check(h, lay, j, i)
			}
			if err == nil && h.Stamp != stamp {
				err = fmt.Errorf("stamp %d, want %d: %w", h.Stamp, stamp, ErrCorrupt)
			}
			if err == nil {
				body := buf[g.HeaderSize():]
				for b := range g.BodyBlocks() {
					if crc(body[b*BlockSize:(b+1)*BlockSize]) != h.BlockCRCs[b] {
						err = fmt.Errorf("block %d checksum: %w", b, ErrCorrupt)
						break
					}
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				bad = append(bad, BadUnit{Drive: m.Drive, Shard: i, Segio: j, Err: err})
				return
			}
			units[i], hdrs[i] = buf, h
		}()
	}
	wg.Wait()
	good := 0
	var ref *Header
	for i := range units {
		if units[i] != nil {
			good++
			ref = hdrs[i]
		}
	}
	if good < g.Data {
		return false, 0, bad, nil
	}
	if good == g.Width() {
		return true, 0, bad, nil
	}
	bodies := make([][]byte, g.Width())
	for i := range units {
		if units[i] != nil {
			bodies[i] = units[i][g.HeaderSize():]
		}
	}
	if err := r.enc.Reconstruct(bodies); err != nil {
		return true, 0, bad, fmt.Errorf("segment %d segio %d: rebuilding torn units: %w", lay.Segment, j, err)
	}
	repaired := 0
	for i, m := range lay.Members {
		if units[i] != nil || r.d.Failed(m.Drive) {
			continue
		}
		buf := backend.AlignedBuffer(int(g.WriteUnit))
		copy(buf[g.HeaderSize():], bodies[i])
		h := *ref
		h.Shard = i
		h.BlockCRCs = make([]uint32, g.BodyBlocks())
		for b := range h.BlockCRCs {
			h.BlockCRCs[b] = crc(buf[g.HeaderSize()+int64(b)*BlockSize : g.HeaderSize()+int64(b+1)*BlockSize])
		}
		encodeHeader(buf[:g.HeaderSize()], &h)
		dev := r.d.Devs[m.Drive]
		if err := dev.WriteAt(ctx, buf, r.d.UnitOffset(m, j)); err != nil {
			bad = append(bad, BadUnit{Drive: m.Drive, Shard: i, Segio: j, Err: fmt.Errorf("repair write: %w", err)})
			continue
		}
		if err := dev.Sync(ctx); err != nil {
			bad = append(bad, BadUnit{Drive: m.Drive, Shard: i, Segio: j, Err: fmt.Errorf("repair sync: %w", err)})
			continue
		}
		repaired++
	}
	return true, repaired, bad, nil
}
