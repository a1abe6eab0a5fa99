package sim

import (
	"math/rand/v2"
)

// undoRec is one unsynced write or discard: frags[lo:hi] of the device.
type undoRec struct {
	lo, hi int32
}

// Outcome of one unsynced write at power loss.
const (
	outcomeKeep = iota
	outcomeDrop
	outcomeTear
)

// resolved holds, for one page, the sectors whose post-crash value is
// already decided (mask) and those values.
type resolved struct {
	mask uint8
	data *page
}

// crash turns st, which holds every write (synced or not), into the image a
// drive has after losing power: each unsynced record (write or discard, in
// recs order) is kept, dropped or torn (each of its sectors kept or not) at
// random by rng, and a sector's value is that of the latest kept record
// covering it, or else its synced value.
//
// With garble, a torn record's sectors may also come out as an interrupted
// NAND program leaves them: random bytes, or random bytes that the drive
// knows are bad (returned in bad, sector numbers, to fail reads with
// ErrCorrupt). Either counts as that record deciding the sector.
//
// It walks the records newest first. Before undoing record i, st holds the
// image just after i, so i's data for a sector is st's; a sector i keeps
// and no newer kept record already decided is decided now. Undoing i
// restores the image before i. At the end st is the synced image, and the
// decided sectors are written over it.
//
// Random draws happen in a fixed order (records newest first, frags and
// sectors in order), so rng's seed alone determines the image.
func crash(st store, recs []undoRec, frags []frag, rng *rand.Rand, sector int, garble bool) (bad []int64, err error) {
	pool := st.pool()
	dec := map[int64]*resolved{}
	var firstErr error
	note := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	perPage := PageSize / sector
	for i := len(recs) - 1; i >= 0; i-- {
		r := recs[i]
		outcome := rng.IntN(3)
		for j := r.lo; j < r.hi; j++ {
			f := &frags[j]
			fmask := rangeMask(f.lo, f.hi, sector)
			var keep, junk uint8
			switch outcome {
			case outcomeKeep:
				keep = fmask
			case outcomeTear:
				for s := 0; s < perPage; s++ {
					if fmask&(1<<s) == 0 {
						continue
					}
					if !garble {
						if rng.IntN(2) == 0 {
							keep |= 1 << s
						}
						continue
					}
					switch rng.IntN(8) {
					case 0, 1, 2:
						keep |= 1 << s
					case 6:
						junk |= 1 << s
					case 7:
						junk |= 1 << s
						bad = append(bad, f.pg*int64(perPage)+int64(s))
					}
				}
			}
			if keep|junk != 0 {
				d := dec[f.pg]
				if d == nil {
					d = &resolved{data: pool.get()}
					dec[f.pg] = d
				}
				if fresh := keep &^ d.mask; fresh != 0 {
					note(st.get(f.pg, fresh, sector, d.data))
					d.mask |= fresh
				}
				if fresh := junk &^ d.mask; fresh != 0 {
					_ = maskRuns(fresh, sector, func(lo, hi int) error {
						for k := lo; k < hi; k += 8 {
							v := rng.Uint64()
							for b := 0; b < 8; b++ {
								d.data[k+b] = byte(v >> (8 * b))
							}
						}
						return nil
					})
					d.mask |= fresh
				}
			}
			note(st.restore(f))
		}
	}
	for pg, d := range dec {
		note(st.put(pg, d.mask, sector, d.data))
		pool.put(d.data)
	}
	return bad, firstErr
}
