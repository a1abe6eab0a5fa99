package nvlog

// ring is the space accounting of the circular log region, without I/O.
//
// Live batches occupy the circular range [tail, head): tail is the durable
// start position (the superblock's startPos), head is where the next batch
// goes. A batch never straddles the end of the region: one that does not fit
// before the end is placed at the region start and the bytes [head, end)
// are wasted for that lap (recovery knows to look there, see the package
// documentation).
//
// INVARIANT: start ≤ tail, head ≤ end; all are multiples of the block size.
// When no batch is live, head == tail.
type ring struct {
	start, end int64
	tail, head int64
}

// size is the length of the region.
func (r *ring) size() int64 { return r.end - r.start }

// used returns the bytes between tail and head, including wasted bytes at
// the end of a lap. live says whether any batch is live (a live ring with
// head == tail is full).
func (r *ring) used(live bool) int64 {
	switch {
	case !live:
		return 0
	case r.head > r.tail:
		return r.head - r.tail
	default:
		return r.size() - (r.tail - r.head)
	}
}

// placement is what place decides.
type placement int

const (
	placeOK     placement = iota // write the batch at pos
	placeWait                    // not enough free space: wait for a trim
	placeRewind                  // log empty but the batch fits nowhere from head: move tail and head to start first
)

// place decides where a batch of n bytes goes. live says whether any batch
// is live (see used). It does not change r; the caller advances head to
// pos+n after placeOK.
func (r *ring) place(n int64, live bool) (pos int64, p placement) {
	if n > r.size() {
		return 0, placeWait // caller refuses such batches before they exist
	}
	if !live {
		// Nothing live: everything is free, but recovery starts at tail
		// (== head) and tries head, then start.
		switch {
		case r.head+n <= r.end:
			return r.head, placeOK
		case r.start+n <= r.head:
			return r.start, placeOK
		default:
			return 0, placeRewind
		}
	}
	if r.head > r.tail {
		// Free space is [head, end) and [start, tail).
		if r.head+n <= r.end {
			return r.head, placeOK
		}
		if r.start+n <= r.tail {
			return r.start, placeOK
		}
		return 0, placeWait
	}
	if r.head < r.tail && r.head+n <= r.tail {
		return r.head, placeOK
	}
	return 0, placeWait // head == tail with live batches: full
}
