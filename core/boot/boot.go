// Package boot reads and writes the boot region at the start of every
// drive: the array's identity and geometry, the drive index, the opaque
// metadata roots, the allocator state and the frontier set (paper §4.3).
// The boot region is the one place the array is updated in place, so it is
// double-buffered: generation g goes to slot g%2, the other slot keeps g-1,
// and a torn write of g leaves g-1 readable. Each generation is written to
// several drives, one after another, each synced before the next starts, so
// at most one copy is ever torn.
//
// # Layout of a drive's boot region
//
//	offset        size  contents
//	0             4096  label (written once, at format)
//	4096          S     slot 0 (even generations)
//	4096+S        S     slot 1 (odd generations)
//	4096+2S       ...   AU 0 (the AU base)
//
// # Label (4096 bytes; all integers little-endian)
//
//	0   8   magic "SHLLABEL"
//	8   2   version (1)
//	10  2   zero
//	12  4   drive index in the array
//	16  16  array id
//	32  16  drive id (random at format)
//	48  4   drive count
//	52  4   S, slot size (multiple of 4096)
//	56  8   AU base
//	64  4   crc32c of bytes [0,64)
//
// # Slot
//
//	0   8   magic "SHLBOOT1"
//	8   8   generation (≥ 1)
//	16  4   body length L (≤ S-32)
//	20  4   crc32c of the body
//	24  4   zero
//	28  4   crc32c of bytes [0,28)
//	32  L   body
//
// # Body
//
//	16        array id
//	4,4       k, m
//	8,8       AU size, write unit
//	8         AU base
//	8         next segment id
//	4         drive count D; D × (16 drive id, 8 size, 4 flags: bit 0 failed)
//	4         frontier count F; F × (8 segment id, (k+m) × (4 drive, 4 AU))
//	4         root count R; R × (2 name length, name, 4 value length, value)
//	4         allocator state length A; A bytes (owned by package alloc)
package boot

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"maps"
	"slices"

	"github.com/shalestore/shale/backend"
	"github.com/shalestore/shale/core/segment"
)

// Crash points of a boot-region write, in order. PointCopyWritten is called
// once per copy, after that copy is written and synced.
const (
	PointEncoded     = "boot.encoded"
	PointCopyWritten = "boot.copy-written"
	PointWritten     = "boot.written"
)

// CrashPoints lists the boot write's crash points in order.
var CrashPoints = []string{PointEncoded, PointCopyWritten, PointWritten}

// LabelSize is the size of the label block at the start of every drive.
const LabelSize = 4096

const (
	labelMagic = "SHLLABEL"
	slotMagic  = "SHLBOOT1"
	slotHeader = 32
	version    = 1
	// MaxRootName bounds a root's name; MaxRoots their number.
	MaxRootName = 255
	MaxRoots    = 1024
)

// ErrCorrupt means a label or slot failed validation.
var ErrCorrupt = errors.New("boot: corrupt")

// ErrNotFound means no drive held a valid label or boot generation.
var ErrNotFound = errors.New("boot: no valid boot region")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// Label identifies a drive as a member of an array.
type Label struct {
	Array    [16]byte
	Drive    [16]byte
	Index    int
	Drives   int
	SlotSize int64
	Base     int64
}

// Drive is one entry of the drive index.
type Drive struct {
	ID     [16]byte
	Size   int64
	Failed bool
}

// State is one generation of the boot region.
type State struct {
	Generation  uint64
	Array       [16]byte
	Geometry    segment.Geometry
	Base        int64
	NextSegment segment.ID
	Drives      []Drive
	// Frontier is the frontier set: the segments (with their AUs) that
	// were open or that the allocator may open next. Recovery scans
	// exactly these.
	Frontier []segment.Layout
	// Roots are the metadata roots, opaque here.
	Roots map[string][]byte
	// Alloc is the allocator's encoded state, opaque here.
	Alloc []byte
}

// Clone returns a deep copy of s.
func (s *State) Clone() *State {
	c := *s
	c.Drives = slices.Clone(s.Drives)
	c.Frontier = make([]segment.Layout, len(s.Frontier))
	for i, l := range s.Frontier {
		c.Frontier[i] = l.Clone()
	}
	c.Roots = make(map[string][]byte, len(s.Roots))
	for k, v := range s.Roots {
		c.Roots[k] = bytes.Clone(v)
	}
	c.Alloc = bytes.Clone(s.Alloc)
	return &c
}

// NewID returns a random 16-byte id.
func NewID() [16]byte {
	var id [16]byte
	_, _ = rand.Read(id[:])
	return id
}

// EncodeLabel returns the label block.
func EncodeLabel(l Label) []byte {
	b := backend.AlignedBuffer(LabelSize)
	le := binary.LittleEndian
	copy(b, labelMagic)
	le.PutUint16(b[8:], version)
	le.PutUint32(b[12:], uint32(l.Index))
	copy(b[16:32], l.Array[:])
	copy(b[32:48], l.Drive[:])
	le.PutUint32(b[48:], uint32(l.Drives))
	le.PutUint32(b[52:], uint32(l.SlotSize))
	le.PutUint64(b[56:], uint64(l.Base))
	le.PutUint32(b[64:], crc(b[:64]))
	return b
}

// DecodeLabel parses a label block.
func DecodeLabel(b []byte) (Label, error) {
	le := binary.LittleEndian
	if len(b) < 68 || string(b[:8]) != labelMagic {
		return Label{}, fmt.Errorf("label: bad magic: %w", ErrCorrupt)
	}
	if le.Uint16(b[8:]) != version {
		return Label{}, fmt.Errorf("label: version %d: %w", le.Uint16(b[8:]), ErrCorrupt)
	}
	if crc(b[:64]) != le.Uint32(b[64:]) {
		return Label{}, fmt.Errorf("label: checksum: %w", ErrCorrupt)
	}
	if b[10] != 0 || b[11] != 0 {
		return Label{}, fmt.Errorf("label: reserved bytes not zero: %w", ErrCorrupt)
	}
	l := Label{Index: int(le.Uint32(b[12:])), Drives: int(le.Uint32(b[48:])), SlotSize: int64(le.Uint32(b[52:])), Base: int64(le.Uint64(b[56:]))}
	copy(l.Array[:], b[16:32])
	copy(l.Drive[:], b[32:48])
	if l.Drives < 1 || l.Index >= l.Drives || l.SlotSize < 4096 || l.SlotSize%4096 != 0 || l.Base != LabelSize+2*l.SlotSize {
		return Label{}, fmt.Errorf("label: fields out of range (index %d of %d, slot %d, base %d): %w", l.Index, l.Drives, l.SlotSize, l.Base, ErrCorrupt)
	}
	return l, nil
}

// Encode returns the slot image of s: header and body, unpadded.
func Encode(s *State) []byte {
	le := binary.LittleEndian
	var body []byte
	u16 := func(v int) { body = le.AppendUint16(body, uint16(v)) }
	u32 := func(v int) { body = le.AppendUint32(body, uint32(v)) }
	u64 := func(v uint64) { body = le.AppendUint64(body, v) }
	body = append(body, s.Array[:]...)
	u32(s.Geometry.Data)
	u32(s.Geometry.Parity)
	u64(uint64(s.Geometry.AUSize))
	u64(uint64(s.Geometry.WriteUnit))
	u64(uint64(s.Base))
	u64(uint64(s.NextSegment))
	u32(len(s.Drives))
	for _, d := range s.Drives {
		body = append(body, d.ID[:]...)
		u64(uint64(d.Size))
		flags := 0
		if d.Failed {
			flags = 1
		}
		u32(flags)
	}
	u32(len(s.Frontier))
	for _, l := range s.Frontier {
		u64(uint64(l.Segment))
		for _, m := range l.Members {
			u32(m.Drive)
			u32(int(m.AU))
		}
	}
	u32(len(s.Roots))
	for _, k := range slices.Sorted(maps.Keys(s.Roots)) {
		u16(len(k))
		body = append(body, k...)
		u32(len(s.Roots[k]))
		body = append(body, s.Roots[k]...)
	}
	u32(len(s.Alloc))
	body = append(body, s.Alloc...)

	out := make([]byte, slotHeader, slotHeader+len(body))
	copy(out, slotMagic)
	le.PutUint64(out[8:], s.Generation)
	le.PutUint32(out[16:], uint32(len(body)))
	le.PutUint32(out[20:], crc(body))
	le.PutUint32(out[28:], crc(out[:28]))
	return append(out, body...)
}

// cursor reads a body with a sticky error, never panicking.
type cursor struct {
	b   []byte
	err error
}

func (c *cursor) take(n int) []byte {
	if c.err != nil || n < 0 || n > len(c.b) {
		if c.err == nil {
			c.err = fmt.Errorf("boot: body truncated: %w", ErrCorrupt)
		}
		return nil
	}
	v := c.b[:n]
	c.b = c.b[n:]
	return v
}

func (c *cursor) u16() int {
	if b := c.take(2); b != nil {
		return int(binary.LittleEndian.Uint16(b))
	}
	return 0
}

func (c *cursor) u32() int {
	if b := c.take(4); b != nil {
		return int(binary.LittleEndian.Uint32(b))
	}
	return 0
}

func (c *cursor) u64() uint64 {
	if b := c.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// Decode parses and validates a slot image (header and body; trailing
// padding is ignored). It never panics on any input.
func Decode(b []byte) (*State, error) {
	le := binary.LittleEndian
	if len(b) < slotHeader || string(b[:8]) != slotMagic {
		return nil, fmt.Errorf("boot slot: bad magic: %w", ErrCorrupt)
	}
	if crc(b[:28]) != le.Uint32(b[28:]) {
		return nil, fmt.Errorf("boot slot: header checksum: %w", ErrCorrupt)
	}
	if le.Uint32(b[24:]) != 0 {
		return nil, fmt.Errorf("boot slot: reserved bytes not zero: %w", ErrCorrupt)
	}
	s := &State{Generation: le.Uint64(b[8:])}
	n := int64(le.Uint32(b[16:]))
	if n > int64(len(b)-slotHeader) {
		return nil, fmt.Errorf("boot slot: body of %d bytes beyond slot: %w", n, ErrCorrupt)
	}
	body := b[slotHeader : slotHeader+n]
	if crc(body) != le.Uint32(b[20:]) {
		return nil, fmt.Errorf("boot slot: generation %d: body checksum: %w", s.Generation, ErrCorrupt)
	}
	if s.Generation == 0 {
		return nil, fmt.Errorf("boot slot: generation 0: %w", ErrCorrupt)
	}
	c := &cursor{b: body}
	copy(s.Array[:], c.take(16))
	s.Geometry.Data = c.u32()
	s.Geometry.Parity = c.u32()
	s.Geometry.AUSize = int64(c.u64())
	s.Geometry.WriteUnit = int64(c.u64())
	s.Base = int64(c.u64())
	s.NextSegment = segment.ID(c.u64())
	if c.err == nil {
		if err := s.Geometry.Validate(); err != nil {
			return nil, fmt.Errorf("boot slot: %w: %w", err, ErrCorrupt)
		}
	}
	nd := c.u32()
	if nd > len(c.b)/28 {
		return nil, fmt.Errorf("boot slot: %d drives: %w", nd, ErrCorrupt)
	}
	for range nd {
		var d Drive
		copy(d.ID[:], c.take(16))
		d.Size = int64(c.u64())
		d.Failed = c.u32()&1 != 0
		s.Drives = append(s.Drives, d)
	}
	nf := c.u32()
	w := s.Geometry.Width()
	if c.err == nil && nf > len(c.b)/(8+8*w) {
		return nil, fmt.Errorf("boot slot: %d frontier segments: %w", nf, ErrCorrupt)
	}
	for range nf {
		l := segment.Layout{Segment: segment.ID(c.u64()), Members: make([]segment.Member, w)}
		seen := map[int]bool{}
		for i := range l.Members {
			l.Members[i] = segment.Member{Drive: c.u32(), AU: int64(c.u32())}
			if l.Members[i].Drive >= nd || seen[l.Members[i].Drive] {
				c.err = cmpErr(c.err, fmt.Errorf("boot slot: frontier segment %d member %d: drive %d invalid: %w", l.Segment, i, l.Members[i].Drive, ErrCorrupt))
			}
			seen[l.Members[i].Drive] = true
		}
		if l.Segment >= s.NextSegment {
			c.err = cmpErr(c.err, fmt.Errorf("boot slot: frontier segment %d not below next id %d: %w", l.Segment, s.NextSegment, ErrCorrupt))
		}
		s.Frontier = append(s.Frontier, l)
	}
	nr := c.u32()
	if nr > MaxRoots {
		return nil, fmt.Errorf("boot slot: %d roots: %w", nr, ErrCorrupt)
	}
	s.Roots = make(map[string][]byte, nr)
	for range nr {
		k := string(c.take(c.u16()))
		v := bytes.Clone(c.take(c.u32()))
		if _, dup := s.Roots[k]; dup {
			c.err = cmpErr(c.err, fmt.Errorf("boot slot: root %q twice: %w", k, ErrCorrupt))
		}
		s.Roots[k] = v
	}
	s.Alloc = bytes.Clone(c.take(c.u32()))
	if c.err == nil && len(c.b) != 0 {
		c.err = fmt.Errorf("boot slot: %d trailing body bytes: %w", len(c.b), ErrCorrupt)
	}
	if c.err != nil {
		return nil, c.err
	}
	return s, nil
}

func cmpErr(old, new error) error {
	if old != nil {
		return old
	}
	return new
}

// SlotOffset is where slot i (0 or 1) starts on a drive.
func SlotOffset(slotSize int64, i int) int64 { return LabelSize + int64(i)*slotSize }

// Base returns the AU base for a slot size.
func Base(slotSize int64) int64 { return LabelSize + 2*slotSize }

// WriteLabel writes and syncs a drive's label.
func WriteLabel(ctx context.Context, dev backend.Device, l Label) error {
	if err := dev.WriteAt(ctx, EncodeLabel(l), 0); err != nil {
		return fmt.Errorf("boot: writing label: %w", err)
	}
	return dev.Sync(ctx)
}

// ReadLabel reads a drive's label.
func ReadLabel(ctx context.Context, dev backend.Device) (Label, error) {
	b := backend.AlignedBuffer(LabelSize)
	if err := dev.ReadAt(ctx, b, 0); err != nil {
		return Label{}, fmt.Errorf("boot: reading label: %w", err)
	}
	return DecodeLabel(b)
}

// Writer writes boot generations.
type Writer struct {
	// SlotSize is S.
	SlotSize int64
	// CrashHook, if set, is called at each crash point.
	CrashHook func(string)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Write writes s (whose Generation must be one higher than the last
// generation written or read) to slot Generation%2 of each device in
// copies, one copy after another, each synced before the next. It succeeds
// if at least one copy was written; a copy whose drive fails is skipped and
// logged. The error lists every copy that failed.
func (w *Writer) Write(ctx context.Context, copies []backend.Device, s *State) error {
	img := Encode(s)
	if int64(len(img)) > w.SlotSize {
		return fmt.Errorf("boot: generation %d is %d bytes, slot holds %d", s.Generation, len(img), w.SlotSize)
	}
	buf := backend.AlignedBuffer(int((int64(len(img)) + 4095) / 4096 * 4096))
	copy(buf, img)
	w.hook(PointEncoded)
	off := SlotOffset(w.SlotSize, int(s.Generation%2))
	var errs []error
	ok := 0
	for i, d := range copies {
		err := d.WriteAt(ctx, buf, off)
		if err == nil {
			err = d.Sync(ctx)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("copy %d: %w", i, err))
			w.logger().Warn("boot copy not written", "generation", s.Generation, "copy", i, "err", err)
			continue
		}
		ok++
		w.hook(PointCopyWritten)
	}
	if ok == 0 {
		return fmt.Errorf("boot: generation %d written nowhere: %w", s.Generation, errors.Join(errs...))
	}
	w.hook(PointWritten)
	return nil
}

func (w *Writer) hook(p string) {
	if w.CrashHook != nil {
		w.CrashHook(p)
	}
}

func (w *Writer) logger() *slog.Logger {
	if w.Logger != nil {
		return w.Logger
	}
	return slog.Default()
}

// Found is the result of reading the boot regions of a set of drives.
type Found struct {
	// State is the newest valid generation.
	State *State
	// Labels[i] is drive i's label (in the order given), or nil if it had
	// none that verified.
	Labels []*Label
	// Copies is how many drives held State's generation.
	Copies int
}

// ReadNewest reads the labels and both slots of every device and returns
// the newest generation that verifies and belongs to the array named by
// the labels (which must agree). Unreadable drives are skipped.
func ReadNewest(ctx context.Context, devs []backend.Device) (*Found, error) {
	f := &Found{Labels: make([]*Label, len(devs))}
	var array [16]byte
	haveArray := false
	for i, d := range devs {
		l, err := ReadLabel(ctx, d)
		if err != nil {
			continue
		}
		if haveArray && l.Array != array {
			return nil, fmt.Errorf("boot: drive %d belongs to another array: %w", i, ErrCorrupt)
		}
		array, haveArray = l.Array, true
		f.Labels[i] = &l
	}
	if !haveArray {
		return nil, fmt.Errorf("boot: no drive has a label: %w", ErrNotFound)
	}
	for i, d := range devs {
		l := f.Labels[i]
		if l == nil {
			continue
		}
		buf := backend.AlignedBuffer(int(l.SlotSize))
		for slot := range 2 {
			if err := d.ReadAt(ctx, buf, SlotOffset(l.SlotSize, slot)); err != nil {
				continue
			}
			s, err := Decode(buf)
			if err != nil || s.Array != array || int(s.Generation%2) != slot {
				continue
			}
			switch {
			case f.State == nil || s.Generation > f.State.Generation:
				f.State, f.Copies = s, 1
			case s.Generation == f.State.Generation:
				f.Copies++
			}
		}
	}
	if f.State == nil {
		return nil, fmt.Errorf("boot: no valid generation on %d drives: %w", len(devs), ErrNotFound)
	}
	return f, nil
}
