package core

import (
	"context"

	"github.com/shalestore/shale/core/pyramid"
)

// Shortcuts (paper §4.7, DESIGN.md §4 "Mediums"): a medium N made over a
// frozen medium M (a snapshot's new volume medium, a clone) need not send
// every read through M. Where M's own block map holds nothing, M would
// only pass the read on along its medium table, so N's medium table maps
// those ranges straight to where M's does. Written ranges of M map to M.
// M is frozen, so the shortcut stays true. Chains of snapshots then cost
// a read one lookup per layer that actually wrote the range, not one per
// layer.

// maxShortcutRuns bounds the medium-table runs a shortcut may give a new
// medium; beyond it the medium simply lies over M (one run). It bounds the
// facts of one snapshot and the medium-table lookups of a read.
const maxShortcutRuns = 1024

// mtRun is one medium-table run of the medium being made: sectors
// [start, start+len) map to target at off (target 0: none, zeros).
type mtRun struct{ start, len, target, off uint64 }

// planShortcut returns the runs of a medium over m covering [0, sectors):
// written (sorted, disjoint ranges of m's block map) go to m at the same
// offset, the rest take below's mapping (m's own medium-table runs,
// sorted; positions below does not cover read as zeros). Adjacent runs
// that continue each other are joined. ok is false when the plan would
// exceed maxRuns: then lie over m with one run.
func planShortcut(m, sectors uint64, written [][2]uint64, below []mtRun, maxRuns int) (runs []mtRun, ok bool) {
	add := func(r mtRun) {
		if r.len == 0 {
			return
		}
		if n := len(runs); n > 0 {
			p := &runs[n-1]
			if p.start+p.len == r.start && p.target == r.target && (r.target == 0 || p.off+p.len == r.off) {
				p.len += r.len
				return
			}
		}
		runs = append(runs, r)
	}
	// fill maps [from, to) through below.
	bi := 0
	fill := func(from, to uint64) {
		for from < to {
			for bi < len(below) && below[bi].start+below[bi].len <= from {
				bi++
			}
			if bi == len(below) || below[bi].start >= to {
				add(mtRun{start: from, len: to - from})
				return
			}
			b := below[bi]
			if b.start > from {
				add(mtRun{start: from, len: b.start - from})
				from = b.start
			}
			end := min(to, b.start+b.len)
			r := mtRun{start: from, len: end - from, target: b.target}
			if b.target != 0 {
				r.off = b.off + (from - b.start)
			}
			add(r)
			from = end
		}
	}
	cur := uint64(0)
	for _, w := range written {
		lo, hi := min(w[0], sectors), min(w[1], sectors)
		if lo >= hi {
			continue
		}
		fill(cur, lo)
		add(mtRun{start: lo, len: hi - lo, target: m, off: lo})
		cur = hi
		if len(runs) > maxRuns {
			return nil, false
		}
	}
	fill(cur, sectors)
	if len(runs) > maxRuns {
		return nil, false
	}
	return runs, true
}

// shortcutRuns plans the medium-table runs of a new medium over frozen
// medium m, of sectors sectors.
func (a *Array) shortcutRuns(ctx context.Context, m, sectors uint64) ([]mtRun, error) {
	over := []mtRun{{start: 0, len: sectors, target: m, off: 0}}
	var written [][2]uint64
	it := a.bm.NewIter(ctx, pyramid.IterOptions{Lower: []uint64{m, 0}, Upper: []uint64{m + 1}})
	for it.Next() {
		t := it.Tuple()
		s, e := t[pyramid.BMLBA], t[pyramid.BMLBA]+t[pyramid.BMLen]
		if n := len(written); n > 0 && written[n-1][1] == s {
			written[n-1][1] = e
			continue
		}
		if len(written) >= maxShortcutRuns {
			it.Close()
			return over, nil
		}
		written = append(written, [2]uint64{s, e})
	}
	it.Close()
	if err := it.Err(); err != nil {
		return nil, err
	}
	var below []mtRun
	it = a.mt.NewIter(ctx, pyramid.IterOptions{Lower: []uint64{m, 0}, Upper: []uint64{m + 1}})
	for it.Next() {
		t := it.Tuple()
		if len(below) >= maxShortcutRuns {
			it.Close()
			return over, nil
		}
		below = append(below, mtRun{start: t[pyramid.MTStart], len: t[pyramid.MTLen], target: t[pyramid.MTTarget], off: t[pyramid.MTTargetOffset]})
	}
	it.Close()
	if err := it.Err(); err != nil {
		return nil, err
	}
	runs, ok := planShortcut(m, sectors, written, below, maxShortcutRuns)
	if !ok {
		return over, nil
	}
	return runs, nil
}

// insertRuns adds the medium-table runs of medium id to b.
func (a *Array) insertRuns(b *pyramid.Batch, id uint64, runs []mtRun, status uint64) error {
	for _, r := range runs {
		if err := b.Insert(a.mt, id, r.start, r.len, r.target, r.off, status); err != nil {
			return err
		}
	}
	return nil
}

// freezeRuns adds m's medium-table runs again with status RO.
func (a *Array) freezeRuns(ctx context.Context, b *pyramid.Batch, m uint64) error {
	it := a.mt.NewIter(ctx, pyramid.IterOptions{Lower: []uint64{m, 0}, Upper: []uint64{m + 1}})
	defer it.Close()
	for it.Next() {
		t := it.Tuple()
		if err := b.Insert(a.mt, m, t[pyramid.MTStart], t[pyramid.MTLen], t[pyramid.MTTarget], t[pyramid.MTTargetOffset], pyramid.MediumRO); err != nil {
			return err
		}
	}
	return it.Err()
}
