package sim

import (
	"math/rand/v2"
	"sync/atomic"
)

// undoLog is the record of every write and discard since the last Sync,
// with the old contents they replaced (see store.go and crash.go).
//
// It keeps at most limit bytes of old contents: past that, the oldest
// records are destaged, i.e. treated as durable as if the drive had
// flushed them on its own, so a workload that never syncs cannot grow
// without bound. REQUIRES: the device's content lock, held exclusively.
type undoLog struct {
	recs     []undoRec
	frags    []frag
	recHead  int          // recs[:recHead] are destaged (released)
	retained int64        // bytes of old contents held by live frags
	limit    int64        // ≤ 0: no limit
	destaged atomic.Int64 // records destaged over the device's life (read by Stats without the lock)
}

// DefaultMaxUnsyncedBytes is the default Options.MaxUnsyncedBytes.
const DefaultMaxUnsyncedBytes = 256 << 20

// mark returns the position new frags will be appended at.
func (u *undoLog) mark() int { return len(u.frags) }

// commit closes the record of the frags appended since lo.
func (u *undoLog) commit(lo int, st store) {
	for i := lo; i < len(u.frags); i++ {
		if u.frags[i].old != nil {
			u.retained += PageSize
		}
	}
	u.recs = append(u.recs, undoRec{int32(lo), int32(len(u.frags))})
	for u.limit > 0 && u.retained > u.limit && u.recHead < len(u.recs)-1 {
		r := u.recs[u.recHead]
		u.releaseFrags(int(r.lo), int(r.hi), st)
		u.recHead++
		u.destaged.Add(1)
	}
	// Compact once the destaged prefix dominates.
	if u.recHead >= 1024 && u.recHead*2 >= len(u.recs) {
		base := u.recs[u.recHead].lo
		n := copy(u.frags, u.frags[base:])
		clear(u.frags[n:])
		u.frags = u.frags[:n]
		m := copy(u.recs, u.recs[u.recHead:])
		u.recs = u.recs[:m]
		for i := range u.recs {
			u.recs[i].lo -= base
			u.recs[i].hi -= base
		}
		u.recHead = 0
	}
}

func (u *undoLog) releaseFrags(lo, hi int, st store) {
	for i := lo; i < hi; i++ {
		if u.frags[i].old != nil {
			u.retained -= PageSize
		}
		st.release(&u.frags[i])
	}
}

// pending is the number of unsynced records.
func (u *undoLog) pending() int { return len(u.recs) - u.recHead }

// drop makes everything durable (Sync, Close).
func (u *undoLog) drop(st store) {
	if u.recHead < len(u.recs) {
		u.releaseFrags(int(u.recs[u.recHead].lo), len(u.frags), st)
	}
	clear(u.frags)
	u.frags, u.recs, u.recHead, u.retained = u.frags[:0], u.recs[:0], 0, 0
	if cap(u.frags) > 1<<16 { // don't hoard after a burst
		u.frags, u.recs = nil, nil
	}
}

// crash applies power loss to st (see crash) and empties the log.
func (u *undoLog) crash(st store, rng *rand.Rand, sector int, garble bool) ([]int64, error) {
	bad, err := crash(st, u.recs[u.recHead:], u.frags, rng, sector, garble)
	clear(u.frags)
	u.frags, u.recs, u.recHead, u.retained = nil, nil, 0, 0
	return bad, err
}
