// Package alloc decides which AUs segments use. It keeps which AUs of each
// drive are in use and the frontier set (paper §4.3, Figure 5): the
// segments, with their AUs, that are open or may be opened next. A segment
// is handed out only from the frontier set as last persisted in the boot
// region, so recovery need scan only the frontier set's AUs to find every
// segio written since the boot region was last written. The frontier is
// refilled ahead of need, a few segments at a time, so boot-region writes
// stay rare.
//
// The package does no I/O: the store persists Encode's bytes and the
// frontier in the boot region and calls Persisted when that is durable.
//
// # Frontier entries, in segment-id order
//
//	[ closed ... | open | planned (persisted) ... | planned (not yet persisted) ... ]
//
// Closed segments stay in the frontier until a checkpoint persists metadata
// roots that cover their log records (DropClosed).
//
// # Encoded state (little-endian), after the boot region's own fields
//
//	4    drive count D
//	D ×  (8 AU count n, 8 cursor, 8 AUs allocated so far (wear),
//	      ceil(n/8) bitmap bytes, bit i of byte j = AU 8j+i in use)
package alloc

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/shalestore/shale/core/segment"
)

// Error classes.
var (
	// ErrNoSpace means fewer than k+m usable drives have a free AU.
	ErrNoSpace = errors.New("alloc: no space for a segment")
	// ErrFrontierFull means the frontier holds MaxFrontier segments: the
	// engine must checkpoint (so closed segments can leave it) first.
	ErrFrontierFull = errors.New("alloc: frontier set full; checkpoint needed")
	// ErrCorrupt means the encoded state did not verify.
	ErrCorrupt = errors.New("alloc: corrupt state")
)

// Options bound the frontier.
type Options struct {
	// Ahead is how many planned segments a refill leaves in the frontier.
	// Default 4.
	Ahead int
	// LowWater: NeedRefill reports true when fewer persisted planned
	// segments than this remain. Default Ahead/2 (at least 1).
	LowWater int
	// MaxFrontier bounds the frontier (closed + open + planned). It bounds
	// recovery's scan. Default 64.
	MaxFrontier int
}

type drive struct {
	aus    int64
	used   []byte
	cursor int64 // next-fit: AUs are taken in a rotating order to spread wear
	wear   int64 // AUs ever allocated
	failed bool
}

func (d *drive) isUsed(au int64) bool { return d.used[au/8]&(1<<(au%8)) != 0 }
func (d *drive) set(au int64, v bool) {
	if v {
		d.used[au/8] |= 1 << (au % 8)
	} else {
		d.used[au/8] &^= 1 << (au % 8)
	}
}

func (d *drive) free() int64 {
	n := int64(0)
	for au := range d.aus {
		if !d.isUsed(au) {
			n++
		}
	}
	return n
}

type entry struct {
	lay    segment.Layout
	taken  bool
	closed bool
}

// Allocator is the allocation state. It is not safe for concurrent use;
// the store serialises calls.
type Allocator struct {
	g         segment.Geometry
	opts      Options
	drives    []drive
	frontier  []entry
	persisted int // frontier[:persisted] is in the last durable boot region
	nextID    segment.ID
}

func (o *Options) fill() {
	if o.Ahead <= 0 {
		o.Ahead = 4
	}
	if o.LowWater <= 0 {
		o.LowWater = max(1, o.Ahead/2)
	}
	if o.MaxFrontier <= 0 {
		o.MaxFrontier = 64
	}
	o.MaxFrontier = max(o.MaxFrontier, o.Ahead+2)
}

// New returns the allocator of a fresh array whose drives hold the given
// numbers of AUs. Segment ids start at 1.
func New(g segment.Geometry, aus []int64, opts Options) *Allocator {
	opts.fill()
	a := &Allocator{g: g, opts: opts, nextID: 1}
	for _, n := range aus {
		a.drives = append(a.drives, drive{aus: n, used: make([]byte, (n+7)/8)})
	}
	return a
}

// Decode rebuilds an allocator from its encoded state and the frontier and
// next segment id stored beside it. Every frontier segment counts as
// persisted and not yet taken; the store calls Resume after recovery.
func Decode(g segment.Geometry, b []byte, frontier []segment.Layout, next segment.ID, opts Options) (*Allocator, error) {
	opts.fill()
	le := binary.LittleEndian
	a := &Allocator{g: g, opts: opts, nextID: next}
	if len(b) < 4 {
		return nil, fmt.Errorf("alloc: state of %d bytes: %w", len(b), ErrCorrupt)
	}
	n := int(le.Uint32(b))
	b = b[4:]
	for i := range n {
		if len(b) < 24 {
			return nil, fmt.Errorf("alloc: drive %d truncated: %w", i, ErrCorrupt)
		}
		d := drive{aus: int64(le.Uint64(b)), cursor: int64(le.Uint64(b[8:])), wear: int64(le.Uint64(b[16:]))}
		b = b[24:]
		if d.aus < 0 || d.aus > int64(len(b))*8 || d.cursor < 0 || d.cursor > d.aus {
			return nil, fmt.Errorf("alloc: drive %d: %d AUs, cursor %d: %w", i, d.aus, d.cursor, ErrCorrupt)
		}
		nb := (d.aus + 7) / 8
		d.used = slices.Clone(b[:nb])
		b = b[nb:]
		a.drives = append(a.drives, d)
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("alloc: %d trailing bytes: %w", len(b), ErrCorrupt)
	}
	for _, l := range frontier {
		if len(l.Members) != g.Width() || l.Segment >= next {
			return nil, fmt.Errorf("alloc: frontier segment %d does not fit: %w", l.Segment, ErrCorrupt)
		}
		for _, m := range l.Members {
			if m.Drive < 0 || m.Drive >= len(a.drives) || m.AU < 0 || m.AU >= a.drives[m.Drive].aus || !a.drives[m.Drive].isUsed(m.AU) {
				return nil, fmt.Errorf("alloc: frontier segment %d member %+v not an allocated AU: %w", l.Segment, m, ErrCorrupt)
			}
		}
		a.frontier = append(a.frontier, entry{lay: l.Clone()})
	}
	a.persisted = len(a.frontier)
	return a, nil
}

// Encode returns the allocator state to persist (the frontier and next id
// are persisted beside it; see Frontier and NextID).
func (a *Allocator) Encode() []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, uint32(len(a.drives)))
	for _, d := range a.drives {
		b = le.AppendUint64(b, uint64(d.aus))
		b = le.AppendUint64(b, uint64(d.cursor))
		b = le.AppendUint64(b, uint64(d.wear))
		b = append(b, d.used...)
	}
	return b
}

// EncodedSize is the size of Encode's result for drives of these AU
// counts, for sizing the boot region.
func EncodedSize(aus []int64) int {
	n := 4
	for _, c := range aus {
		n += 24 + int((c+7)/8)
	}
	return n
}

// Frontier returns the frontier set to persist (all entries, including
// planned ones not yet persisted).
func (a *Allocator) Frontier() []segment.Layout {
	out := make([]segment.Layout, len(a.frontier))
	for i, e := range a.frontier {
		out[i] = e.lay.Clone()
	}
	return out
}

// NextID is the id the next planned segment will get.
func (a *Allocator) NextID() segment.ID { return a.nextID }

// Persisted records that the boot region now holds the current frontier.
func (a *Allocator) Persisted() { a.persisted = len(a.frontier) }

func (a *Allocator) plannedPersisted() int {
	n := 0
	for _, e := range a.frontier[:a.persisted] {
		if !e.taken {
			n++
		}
	}
	return n
}

// NeedRefill reports whether fewer than LowWater persisted segments remain
// to be handed out.
func (a *Allocator) NeedRefill() bool { return a.plannedPersisted() < a.opts.LowWater }

// Refill plans segments until Ahead are planned. The new entries are not
// persisted until the caller writes the boot region and calls Persisted.
// It returns ErrFrontierFull or ErrNoSpace if it could plan none.
func (a *Allocator) Refill() error {
	planned := 0
	for _, e := range a.frontier {
		if !e.taken {
			planned++
		}
	}
	added := 0
	for planned < a.opts.Ahead {
		if len(a.frontier) >= a.opts.MaxFrontier {
			if added == 0 && planned == 0 {
				return ErrFrontierFull
			}
			break
		}
		lay, err := a.plan()
		if err != nil {
			if added == 0 && planned == 0 {
				return err
			}
			break
		}
		a.frontier = append(a.frontier, entry{lay: lay})
		planned++
		added++
	}
	return nil
}

// plan picks the next segment's AUs: k+m distinct healthy drives with a
// free AU, most free AUs first (ties broken by a rotation with the segment
// id, so equal drives take turns), and on each drive the next free AU at
// or after its cursor.
func (a *Allocator) plan() (segment.Layout, error) {
	type cand struct {
		i    int
		free int64
	}
	var cs []cand
	for i := range a.drives {
		d := &a.drives[i]
		if d.failed {
			continue
		}
		if f := d.free(); f > 0 {
			cs = append(cs, cand{i, f})
		}
	}
	w := a.g.Width()
	if len(cs) < w {
		return segment.Layout{}, fmt.Errorf("alloc: %d drives have a free AU, a segment needs %d: %w", len(cs), w, ErrNoSpace)
	}
	n := len(a.drives)
	rot := int(uint64(a.nextID) % uint64(n))
	slices.SortFunc(cs, func(x, y cand) int {
		return cmp.Or(cmp.Compare(y.free, x.free), cmp.Compare((x.i-rot+n)%n, (y.i-rot+n)%n))
	})
	lay := segment.Layout{Segment: a.nextID}
	for _, c := range cs[:w] {
		d := &a.drives[c.i]
		au := d.cursor
		for d.isUsed(au % d.aus) {
			au++
		}
		au %= d.aus
		d.set(au, true)
		d.cursor = (au + 1) % d.aus
		d.wear++
		lay.Members = append(lay.Members, segment.Member{Drive: c.i, AU: au})
	}
	// Members in drive order, so a segment's shards sit in a predictable
	// order; which drive gets parity rotates with the drive choice.
	slices.SortFunc(lay.Members, func(x, y segment.Member) int { return cmp.Compare(x.Drive, y.Drive) })
	if r := int(uint64(a.nextID) % uint64(w)); r != 0 {
		lay.Members = append(lay.Members[r:], lay.Members[:r]...)
	}
	a.nextID++
	return lay, nil
}

// Take hands out the next planned segment of the persisted frontier, or
// false if none is left (the caller refills and persists first).
func (a *Allocator) Take() (segment.Layout, bool) {
	for i := range a.frontier[:a.persisted] {
		if e := &a.frontier[i]; !e.taken {
			e.taken = true
			return e.lay.Clone(), true
		}
	}
	return segment.Layout{}, false
}

// Closed records that segment id is full: no more segios go to it.
func (a *Allocator) Closed(id segment.ID) {
	for i := range a.frontier {
		if a.frontier[i].lay.Segment == id {
			a.frontier[i].closed = true
		}
	}
}

// Resume is called after recovery: the frontier segments before index i
// were written and are closed (the writer continues at frontier[i]).
func (a *Allocator) Resume(i int) {
	for j := range a.frontier {
		a.frontier[j].taken = j < i
		a.frontier[j].closed = j < i
	}
}

// DropClosed removes closed segments from the frontier (their AUs stay in
// use). Call it when a checkpoint persists roots that cover their log
// records; the change is durable once the boot region is written.
func (a *Allocator) DropClosed() {
	keep := a.frontier[:0]
	dropped := 0
	for i, e := range a.frontier {
		if e.closed {
			if i < a.persisted {
				dropped++
			}
			continue
		}
		keep = append(keep, e)
	}
	a.frontier = keep
	a.persisted -= dropped
}

// Free returns a segment's AUs (GC, later). The segment must have left the
// frontier.
func (a *Allocator) Free(l segment.Layout) error {
	for _, e := range a.frontier {
		if e.lay.Segment == l.Segment {
			return fmt.Errorf("alloc: segment %d is in the frontier", l.Segment)
		}
	}
	for _, m := range l.Members {
		if m.Drive < 0 || m.Drive >= len(a.drives) || m.AU < 0 || m.AU >= a.drives[m.Drive].aus {
			return fmt.Errorf("alloc: free of segment %d member %+v out of range", l.Segment, m)
		}
	}
	for _, m := range l.Members {
		a.drives[m.Drive].set(m.AU, false)
	}
	return nil
}

// SetFailed marks drive i failed (or healthy). Planned segments not yet
// handed out that use a failed drive are dropped and their AUs freed; the
// next Refill replaces them. It reports whether the frontier changed.
func (a *Allocator) SetFailed(i int, failed bool) bool {
	a.drives[i].failed = failed
	if !failed {
		return false
	}
	changed := false
	keep := a.frontier[:0]
	persisted := a.persisted
	for j, e := range a.frontier {
		if !e.taken && slices.ContainsFunc(e.lay.Members, func(m segment.Member) bool { return m.Drive == i }) {
			for _, m := range e.lay.Members {
				a.drives[m.Drive].set(m.AU, false)
			}
			if j < a.persisted {
				persisted--
			}
			changed = true
			continue
		}
		keep = append(keep, e)
	}
	a.frontier, a.persisted = keep, persisted
	return changed
}

// Failed reports whether drive i is marked failed.
func (a *Allocator) Failed(i int) bool { return a.drives[i].failed }

// Used reports whether AU au of drive i is in use.
func (a *Allocator) Used(i int, au int64) bool { return a.drives[i].isUsed(au) }

// FreeAUs returns the number of free AUs per drive.
func (a *Allocator) FreeAUs() []int64 {
	out := make([]int64, len(a.drives))
	for i := range a.drives {
		out[i] = a.drives[i].free()
	}
	return out
}

// Unclose marks a frontier segment open again (recovery resumes in it).
func (a *Allocator) Unclose(id segment.ID) {
	for i := range a.frontier {
		if a.frontier[i].lay.Segment == id {
			a.frontier[i].closed = false
		}
	}
}
