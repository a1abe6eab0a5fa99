package pyramid

import "slices"

// shape is what the hot paths need of a schema, resolved once.
type shape struct {
	k, f    int   // key fields, all fields
	isRange bool  // range relation
	lenF    int   // tuple index of the run length
	shift   []int // tuple indexes that advance with the start
}

func newShape(s *Schema) shape {
	return shape{k: len(s.Keys), f: s.Fields(), isRange: s.Range, lenF: s.Len, shift: slices.Clone(s.Shift)}
}

// compareKeys compares the key fields of two tuples (or a tuple and a
// probe of k fields).
func (sh *shape) compareKeys(a, b []uint64) int {
	return slices.Compare(a[:sh.k], b[:sh.k])
}

// samePrefix reports whether two tuples of a range relation have the same
// key fields apart from the start.
func (sh *shape) samePrefix(a, b []uint64) bool {
	return slices.Equal(a[:sh.k-1], b[:sh.k-1])
}

// start and end of a range tuple's run.
func (sh *shape) start(t []uint64) uint64 { return t[sh.k-1] }
func (sh *shape) end(t []uint64) uint64   { return t[sh.k-1] + t[sh.lenF] }

// clip writes to dst the part [from, to) of run t and returns it.
// REQUIRES: start(t) ≤ from < to ≤ end(t).
func (sh *shape) clip(dst, t []uint64, from, to uint64) []uint64 {
	dst = append(dst[:0], t[:sh.f]...)
	d := from - t[sh.k-1]
	dst[sh.k-1] = from
	dst[sh.lenF] = to - from
	for _, i := range sh.shift {
		dst[i] += d
	}
	return dst
}

// continues reports whether run b starts where run a ends and carries the
// same values, shifted: the two can be coalesced into one run.
func (sh *shape) continues(a, b []uint64) bool {
	if !sh.samePrefix(a, b) || sh.end(a) != sh.start(b) {
		return false
	}
	d := sh.start(b) - sh.start(a)
	for i := sh.k; i < sh.f; i++ {
		if i == sh.lenF {
			continue
		}
		want := a[i]
		if slices.Contains(sh.shift, i) {
			want += d
		}
		if b[i] != want {
			return false
		}
	}
	return true
}

// covers reports whether range tuple t has probe's prefix and covers its
// position (probe's last key field).
func (sh *shape) covers(t, probe []uint64) bool {
	p := probe[sh.k-1]
	return sh.samePrefix(t, probe) && sh.start(t) <= p && p < sh.end(t)
}
