package segment

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/shalestore/shale/backend"
	"github.com/shalestore/shale/core/internal/memdev"
)

// small is a test geometry: 4+2, 16 KiB write units (12 KiB body), 4 segios
// per AU.
var small = Geometry{Data: 4, Parity: 2, AUSize: 64 << 10, WriteUnit: 16 << 10}

type rig struct {
	g      Geometry
	devs   []*memdev.Device
	d      *Drives
	nextID ID
	nextAU []int64
	mu     sync.Mutex
	lays   map[ID]Layout
}

func newRig(t testing.TB, g Geometry, drives int, ausPerDrive int64) *rig {
	t.Helper()
	r := &rig{g: g, nextID: 1, nextAU: make([]int64, drives), lays: map[ID]Layout{}}
	devs := make([]backend.Device, drives)
	for i := range devs {
		r.devs = append(r.devs, memdev.New(BlockSize+ausPerDrive*g.AUSize, backend.SSD))
		devs[i] = r.devs[i]
	}
	d, err := NewDrives(g, BlockSize, devs)
	if err != nil {
		t.Fatal(err)
	}
	r.d = d
	return r
}

// next is a trivial allocator: rotate the starting drive, take each
// drive's next AU.
func (r *rig) next(ctx context.Context) (Layout, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(r.devs)
	lay := Layout{Segment: r.nextID}
	for i := range r.g.Width() {
		dr := (int(r.nextID) + i) % n
		if r.nextAU[dr] >= r.d.AUs(dr) {
			return Layout{}, errors.New("rig: out of AUs")
		}
		lay.Members = append(lay.Members, Member{Drive: dr, AU: r.nextAU[dr]})
		r.nextAU[dr]++
	}
	r.lays[lay.Segment] = lay
	r.nextID++
	return lay, nil
}

func (r *rig) layout(id ID) Layout {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lays[id]
}

func payload(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func TestGeometryValidate(t *testing.T) {
	tests := []struct {
		g       Geometry
		drives  int
		minAUs  int64
		wantErr string
	}{
		{DefaultGeometry(), 9, 10, ""},
		{DefaultGeometry(), 12, 1, ""},
		{Geometry{1, 0, 8192, 8192}, 1, 1, ""},
		{Geometry{1, 1, 8192, 8192}, 2, 1, ""},
		{Geometry{4, 2, 64 << 10, 16 << 10}, 6, 3, ""},
		{DefaultGeometry(), 8, 10, "only 8 drives"},
		{Geometry{0, 2, 8 << 20, 1 << 20}, 9, 10, "data must be at least 1"},
		{Geometry{7, -1, 8 << 20, 1 << 20}, 9, 10, "parity must not be negative"},
		{Geometry{200, 57, 8 << 20, 1 << 20}, 300, 10, "at most 256"},
		{Geometry{7, 2, 8 << 20, 1000}, 9, 10, "write_unit 1000 is not a positive multiple"},
		{Geometry{7, 2, 8 << 20, 0}, 9, 10, "write_unit 0"},
		{Geometry{7, 2, 8<<20 + 4096, 1 << 20}, 9, 10, "au_size 8392704 is not a positive multiple of write_unit"},
		{Geometry{7, 2, 0, 1 << 20}, 9, 10, "au_size 0"},
		{Geometry{7, 2, 4096, 4096}, 9, 10, "leaves no room for data"},
		{DefaultGeometry(), 9, 0, "holds no whole AU"},
		{Geometry{255, 1, 1 << 30, 1 << 30}, 256, 1, "exceeds 4 GiB"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v/%d", tt.g, tt.drives), func(t *testing.T) {
			err := tt.g.CheckDrives(tt.drives, tt.minAUs)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
			if !errors.Is(err, ErrGeometry) {
				t.Fatalf("error %v is not ErrGeometry", err)
			}
		})
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	g := DefaultGeometry()
	h := &Header{Shard: 8, Data: 7, Parity: 2, Size: g.HeaderSize(), WriteUnit: g.WriteUnit, AUSize: g.AUSize,
		Segment: 99, Segio: 7, Stamp: 5, SeqLo: 10, SeqHi: 20, Front: 100, Back: 200, MapOffset: 100, MapCount: 3,
		MapCRC: 42, Members: make([]Member, 9), BlockCRCs: make([]uint32, g.BodyBlocks())}
	for i := range h.Members {
		h.Members[i] = Member{Drive: i + 3, AU: int64(i * 1000)}
	}
	for i := range h.BlockCRCs {
		h.BlockCRCs[i] = uint32(i * 7)
	}
	h.Array[3] = 9
	buf := make([]byte, g.HeaderSize())
	encodeHeader(buf, h)
	got, err := DecodeHeader(buf)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(h) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, h)
	}
	for _, i := range []int{0, 9, 50, 113, int(g.HeaderSize()) - 4 - 1 - int(g.HeaderSize()-int64(headerFixed)-int64(memberSize*9)-4*int64(g.BodyBlocks())-4)} {
		bad := bytes.Clone(buf)
		bad[i] ^= 1
		if _, err := DecodeHeader(bad); !errors.Is(err, ErrCorrupt) {
			t.Errorf("flipped byte %d: err %v, want ErrCorrupt", i, err)
		}
	}
}

// TestWriteRead appends random cblocks and records, flushes, and reads each
// back; then every subset of up to m drives is failed and everything read
// again; then m+1 drives fail and reads must fail cleanly.
func TestWriteRead(t *testing.T) {
	ctx := context.Background()
	for _, g := range []Geometry{small, {Data: 3, Parity: 1, AUSize: 32 << 10, WriteUnit: 8 << 10}, {Data: 2, Parity: 0, AUSize: 32 << 10, WriteUnit: 8 << 10}, {Data: 1, Parity: 2, AUSize: 24 << 10, WriteUnit: 8 << 10}} {
		t.Run(g.String(), func(t *testing.T) {
			r := newRig(t, g, g.Width()+2, 64)
			var flushed []Flushed
			var fmu sync.Mutex
			w, err := NewWriter(r.d, WriterOptions{Next: r.next, Stamp: 1, OnFlush: func(f Flushed) { fmu.Lock(); flushed = append(flushed, f); fmu.Unlock() }})
			if err != nil {
				t.Fatal(err)
			}
			rd, err := NewReader(r.d, ReaderOptions{})
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			type item struct {
				a    Addr
				data []byte
				kind Kind
			}
			var items []item
			seq := uint64(0)
			for range 150 {
				kind := Cblock
				if rng.IntN(4) == 0 {
					kind = Record
				}
				n := 1 + rng.IntN(int(min(g.BodySize()*3/2, g.SegioBytes()-2*EntrySize)))
				p := payload(rng, n)
				seq++
				var a Addr
				var err error
				if rng.IntN(2) == 0 {
					a, err = w.Append(ctx, kind, seq, seq, p)
				} else {
					// In place, or through scratch when the item crosses
					// a write unit boundary (n goes up to 1.5 bodies).
					a, err = w.AppendFunc(ctx, kind, seq, seq, n, func(dst []byte) {
						if len(dst) != n {
							t.Errorf("fill got %d bytes, want %d", len(dst), n)
						}
						copy(dst, p)
					})
				}
				if err != nil {
					t.Fatal(err)
				}
				if a.Length != int32(n) || a.Offset/g.SegioBytes() != (a.Offset+int64(n)-1)/g.SegioBytes() {
					t.Fatalf("bad address %v for %d bytes", a, n)
				}
				items = append(items, item{a, p, kind})
			}
			if err := w.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			check := func(wantBad map[int]bool) {
				t.Helper()
				for _, it := range items {
					buf := make([]byte, it.a.Length)
					bad, err := rd.ReadAt(ctx, r.layout(it.a.Segment), buf, it.a.Offset)
					if err != nil {
						t.Fatalf("read %v: %v", it.a, err)
					}
					if !bytes.Equal(buf, it.data) {
						t.Fatalf("read %v: wrong data", it.a)
					}
					for _, b := range bad {
						if !wantBad[b.Drive] {
							t.Fatalf("read %v: drive %d reported bad: %v", it.a, b.Drive, b.Err)
						}
					}
					// ReadBlocks of the whole item and of a random part.
					from := rng.IntN(int(it.a.Length))
					to := from + 1 + rng.IntN(int(it.a.Length)-from)
					for _, part := range [][2]int{{0, int(it.a.Length)}, {from, to}} {
						off, n := it.a.Offset+int64(part[0]), part[1]-part[0]
						span := backend.AlignedBuffer(SpanBytes(off, n))
						data, bad, rebuilt, err := rd.ReadBlocks(ctx, r.layout(it.a.Segment), off, n, span)
						if rebuilt != (len(bad) > 0) && len(wantBad) == 0 {
							t.Fatalf("ReadBlocks %v: rebuilt %v with bad units %v", it.a, rebuilt, bad)
						}
						if err != nil {
							t.Fatalf("ReadBlocks %v [%d,%d): %v", it.a, part[0], part[1], err)
						}
						if !bytes.Equal(data, it.data[part[0]:part[1]]) {
							t.Fatalf("ReadBlocks %v [%d,%d): wrong data", it.a, part[0], part[1])
						}
						for _, b := range bad {
							if !wantBad[b.Drive] {
								t.Fatalf("ReadBlocks %v: drive %d reported bad: %v", it.a, b.Drive, b.Err)
							}
						}
					}
				}
			}
			check(nil)
			// Fail up to m drives, by fail-stop and by silent corruption.
			for f := 1; f <= g.Parity; f++ {
				failed := map[int]bool{}
				for len(failed) < f {
					failed[rng.IntN(len(r.devs))] = true
				}
				for dr := range failed {
					r.devs[dr].Fail(true)
				}
				check(failed)
				for dr := range failed {
					r.devs[dr].Fail(false)
				}
			}
			if g.Parity > 0 {
				failed := map[int]bool{}
				for i := 0; len(failed) <= g.Parity; i++ {
					failed[i] = true
					r.devs[i].Fail(true)
				}
				unreadable := 0
				for _, it := range items {
					buf := make([]byte, it.a.Length)
					_, err := rd.ReadAt(ctx, r.layout(it.a.Segment), buf, it.a.Offset)
					if err != nil {
						if !errors.Is(err, ErrUnrecoverable) {
							t.Fatalf("read %v with %d failed drives: %v, want ErrUnrecoverable", it.a, len(failed), err)
						}
						var re *ReadError
						if !errors.As(err, &re) || len(re.Bad) <= g.Parity {
							t.Fatalf("read error %v does not list > m bad units", err)
						}
						unreadable++
						continue
					}
					if !bytes.Equal(buf, it.data) {
						t.Fatalf("read %v with %d failed drives: wrong data and no error", it.a, len(failed))
					}
				}
				if unreadable == 0 {
					t.Fatalf("no read failed with %d of %d drives failed", len(failed), len(r.devs))
				}
				for dr := range failed {
					r.devs[dr].Fail(false)
				}
			}
			if len(flushed) == 0 || flushed[0].Segio != 0 {
				t.Fatalf("flush reports %v", flushed)
			}
			if err := w.Close(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestCorruption flips bits under reads: every read returns correct data
// and names the corrupt drive, as long as at most m units of a stripe are
// corrupt.
func TestCorruption(t *testing.T) {
	ctx := context.Background()
	g := small
	r := newRig(t, g, 8, 8)
	w, err := NewWriter(r.d, WriterOptions{Next: r.next, Stamp: 1})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	type item struct {
		a    Addr
		data []byte
	}
	var items []item
	for range 80 {
		p := payload(rng, 1+rng.IntN(6000))
		a, err := w.Append(ctx, Cblock, 0, 0, p)
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, item{a, p})
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for round := range 30 {
		rd, _ := NewReader(r.d, ReaderOptions{})
		it := items[rng.IntN(len(items))]
		lay := r.layout(it.a.Segment)
		// Corrupt the blocks this item touches on up to m random members.
		segio := int(it.a.Offset / g.SegioBytes())
		p := it.a.Offset % g.SegioBytes()
		shard := int(p / g.BodySize())
		victims := map[int]bool{lay.Members[shard].Drive: true}
		for len(victims) < 1+rng.IntN(g.Parity) {
			victims[lay.Members[rng.IntN(g.Width())].Drive] = true
		}
		var restore []*memdev.Device
		for i, m := range lay.Members {
			if !victims[m.Drive] {
				continue
			}
			in := p % g.BodySize()
			if i != shard {
				in = 0
			}
			for b := in / BlockSize * BlockSize; b < g.BodySize(); b += BlockSize {
				r.devs[m.Drive].Corrupt(r.d.UnitOffset(m, segio) + g.HeaderSize() + b)
			}
			restore = append(restore, r.devs[m.Drive])
		}
		buf := make([]byte, it.a.Length)
		var bad []BadUnit
		if round%2 == 0 {
			bad, err = rd.ReadAt(ctx, lay, buf, it.a.Offset)
		} else {
			var data []byte
			span := backend.AlignedBuffer(SpanBytes(it.a.Offset, len(buf)))
			var rebuilt bool
			data, bad, rebuilt, err = rd.ReadBlocks(ctx, lay, it.a.Offset, len(buf), span)
			if err == nil && !rebuilt {
				t.Fatalf("round %d: ReadBlocks of corrupt blocks did not say rebuilt", round)
			}
			copy(buf, data)
		}
		if err != nil {
			t.Fatalf("round %d: read %v: %v", round, it.a, err)
		}
		if !bytes.Equal(buf, it.data) {
			t.Fatalf("round %d: read %v: wrong data", round, it.a)
		}
		found := false
		for _, b := range bad {
			if !victims[b.Drive] {
				t.Fatalf("round %d: healthy drive %d reported bad", round, b.Drive)
			}
			if b.Drive == lay.Members[shard].Drive && errors.Is(b.Err, ErrCorrupt) {
				found = true
			}
		}
		if !found {
			t.Fatalf("round %d: corrupt drive %d not reported (bad: %v)", round, lay.Members[shard].Drive, bad)
		}
		for _, d := range restore {
			d.Heal()
		}
	}
}

// TestBusyAvoided: a read of a unit on a drive that is busy writing is
// served by reconstruction, and the drive is not reported bad.
func TestBusyAvoided(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, small, 6, 4)
	w, _ := NewWriter(r.d, WriterOptions{Next: r.next, Stamp: 1})
	p := payload(rand.New(rand.NewPCG(5, 6)), 3000)
	a, err := w.Append(ctx, Cblock, 0, 0, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	lay := r.layout(a.Segment)
	dr := lay.Members[0].Drive
	r.d.busy[dr].Add(1)
	defer r.d.busy[dr].Add(-1)
	if !r.d.Busy(dr) {
		t.Fatal("drive not busy")
	}
	r.devs[dr].Fail(true) // any read of it would fail
	rd, _ := NewReader(r.d, ReaderOptions{})
	buf := make([]byte, len(p))
	bad, err := rd.ReadAt(ctx, lay, buf, a.Offset)
	if err != nil || !bytes.Equal(buf, p) || len(bad) != 0 {
		t.Fatalf("busy read: err %v bad %v equal %v", err, bad, bytes.Equal(buf, p))
	}
	if rd.Stats.BusyAvoided.Load() != 1 {
		t.Fatalf("BusyAvoided = %d", rd.Stats.BusyAvoided.Load())
	}
	// ReadBlocks says the bytes were rebuilt (not checked against a
	// checksum of their own), with no bad unit; a drive that is not busy
	// gives them as read.
	span := backend.AlignedBuffer(SpanBytes(a.Offset, len(p)))
	data, bad, rebuilt, err := rd.ReadBlocks(ctx, lay, a.Offset, len(p), span)
	if err != nil || !bytes.Equal(data, p) || len(bad) != 0 || !rebuilt {
		t.Fatalf("busy ReadBlocks: err %v bad %v rebuilt %v equal %v", err, bad, rebuilt, bytes.Equal(data, p))
	}
	r.d.busy[dr].Add(-1)
	r.devs[dr].Fail(false)
	data, bad, rebuilt, err = rd.ReadBlocks(ctx, lay, a.Offset, len(p), span)
	r.d.busy[dr].Add(1)
	if err != nil || !bytes.Equal(data, p) || len(bad) != 0 || rebuilt {
		t.Fatalf("idle ReadBlocks: err %v bad %v rebuilt %v equal %v", err, bad, rebuilt, bytes.Equal(data, p))
	}
}

// TestWritingDrives checks the write schedule: never more than
// MaxWritingDrives units of a stripe in flight.
func TestWritingDrives(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, small, 6, 8)
	var mu sync.Mutex
	maxBusy := 0
	hook := func(p string) {
		if p != PointUnitWritten {
			return
		}
	}
	w, _ := NewWriter(r.d, WriterOptions{Next: r.next, Stamp: 1, CrashHook: hook})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n := 0
			for i := range r.devs {
				if r.d.Busy(i) {
					n++
				}
			}
			mu.Lock()
			maxBusy = max(maxBusy, n)
			mu.Unlock()
		}
	}()
	rng := rand.New(rand.NewPCG(7, 8))
	for range 200 {
		if _, err := w.Append(ctx, Cblock, 0, 0, payload(rng, 5000)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	close(stop)
	<-done
	if maxBusy > 2 {
		t.Fatalf("%d drives writing at once, limit 2", maxBusy)
	}
	if maxBusy == 0 {
		t.Log("never observed a busy drive (timing)")
	}
}

func TestSegioFormatSelfDescribing(t *testing.T) {
	ctx := context.Background()
	g := small
	r := newRig(t, g, 6, 4)
	w, _ := NewWriter(r.d, WriterOptions{Next: r.next, Stamp: 7, Array: [16]byte{1, 2, 3}})
	rng := rand.New(rand.NewPCG(9, 9))
	var want []Entry
	for i := range 5 {
		kind := Cblock
		if i%2 == 1 {
			kind = Record
		}
		a, err := w.Append(ctx, kind, uint64(10+i), uint64(10+i), payload(rng, 1000))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, Entry{Kind: kind, Offset: uint32(a.Offset), Length: 1000, SeqLo: uint64(10 + i), SeqHi: uint64(10 + i)})
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Find the segment from one AU alone.
	lay := r.layout(1)
	h, err := ReadHeader(ctx, r.d, lay.Members[3], 0)
	if err != nil {
		t.Fatal(err)
	}
	if h.Segment != 1 || h.Segio != 0 || h.Shard != 3 || h.Stamp != 7 || h.SeqLo != 11 || h.SeqHi != 13 || h.Array != [16]byte{1, 2, 3} {
		t.Fatalf("header %+v", h)
	}
	rd, _ := NewReader(r.d, ReaderOptions{Array: [16]byte{1, 2, 3}})
	es, _, err := rd.ReadMap(ctx, h.Layout(), h)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(es) != fmt.Sprint(want) {
		t.Fatalf("map %v, want %v", es, want)
	}
	// Another array's reader refuses the units.
	other, _ := NewReader(r.d, ReaderOptions{Array: [16]byte{9}})
	if _, err := other.ReadAt(ctx, lay, make([]byte, 10), 0); !errors.Is(err, ErrUnrecoverable) {
		t.Fatalf("read with wrong array id: %v", err)
	}
}

// TestRestore: items appended but never flushed (the writer is dropped,
// as in a crash) are put back at their exact addresses by a new writer.
func TestRestore(t *testing.T) {
	ctx := context.Background()
	g := small
	r := newRig(t, g, 6, 16)
	// The first writer's flusher is blocked forever by a hook, so nothing
	// it seals reaches a drive: everything is "lost".
	block := make(chan struct{})
	w, _ := NewWriter(r.d, WriterOptions{Next: r.next, Stamp: 1, MaxPendingSegios: 100, CrashHook: func(p string) {
		if p == PointSegioEncoded {
			<-block
		}
	}})
	defer close(block)
	rng := rand.New(rand.NewPCG(11, 12))
	type item struct {
		a    Addr
		data []byte
		kind Kind
	}
	var items []item
	for range 150 {
		kind := Cblock
		if rng.IntN(3) == 0 {
			kind = Record
		}
		p := payload(rng, 1+rng.IntN(4000))
		a, err := w.Append(ctx, kind, 1, 1, p)
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, item{a, p, kind})
	}
	if items[len(items)-1].a.Segment < 2 {
		t.Fatalf("test should span segments")
	}
	// The new writer replays the same layouts, in order.
	replay := ID(1)
	next := func(ctx context.Context) (Layout, error) {
		l := r.layout(replay)
		replay++
		return l, nil
	}
	w2, _ := NewWriter(r.d, WriterOptions{Next: next, Stamp: 2})
	// Restore every other item (the acknowledged ones), in shuffled order.
	perm := rng.Perm(len(items))
	for _, i := range perm {
		if i%2 == 0 {
			it := items[i]
			if err := w2.Restore(it.a, it.kind, 1, 1, it.data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w2.Restore(items[0].a, items[0].kind, 1, 1, items[1].data[:1]); err == nil {
		t.Fatal("restore with a length mismatch accepted")
	}
	if err := w2.EndRestore(ctx); err != nil {
		t.Fatal(err)
	}
	rd, _ := NewReader(r.d, ReaderOptions{})
	for i, it := range items {
		if i%2 != 0 {
			continue
		}
		buf := make([]byte, it.a.Length)
		if _, err := rd.ReadAt(ctx, r.layout(it.a.Segment), buf, it.a.Offset); err != nil || !bytes.Equal(buf, it.data) {
			t.Fatalf("restored %v: err %v, equal %v", it.a, err, bytes.Equal(buf, it.data))
		}
	}
	// New appends go after the restored segios and read back too.
	p := payload(rng, 2000)
	a, err := w2.Append(ctx, Cblock, 0, 0, p)
	if err != nil {
		t.Fatal(err)
	}
	last := items[len(items)-2].a
	if a.Segment < last.Segment || a.Segment == last.Segment && a.Offset/g.SegioBytes() <= last.Offset/g.SegioBytes() {
		t.Fatalf("append after restore at %v, not after %v", a, last)
	}
	if err := w2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(p))
	if _, err := rd.ReadAt(ctx, r.layout(a.Segment), buf, a.Offset); err != nil || !bytes.Equal(buf, p) {
		t.Fatalf("append after restore: %v", err)
	}
}

// TestHotBlockCRCs checks that the block checksums Append computes as
// items arrive, completed at encode, equal checksums of the encoded units'
// bodies, for random mixes of cblocks and records of every size.
func TestHotBlockCRCs(t *testing.T) {
	g := Geometry{Data: 4, Parity: 2, AUSize: 256 << 10, WriteUnit: 64 << 10}
	w, err := NewWriter(&Drives{Geometry: g}, WriterOptions{Next: func(context.Context) (Layout, error) { return Layout{}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	h := g.HeaderSize()
	var scratch []byte
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 3))
		s := w.getBuf()
		s.lay = Layout{Segment: 1, Members: make([]Member, g.Width())}
		s.entries = s.entries[:0]
		s.front, s.back = 0, uint32(g.SegioBytes())
		s.crcLo, s.crcHi = 0, s.back
		maxLen := []int{100, 4096, 9000, 70000}[seed%4]
		for {
			kind := Cblock
			if rng.IntN(4) == 0 {
				kind = Record
			}
			p := make([]byte, 1+rng.IntN(maxLen))
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			if !s.fits(kind, uint32(len(p))) {
				break
			}
			// Half the items through the fill path (AppendFunc's), in
			// place or, crossing a unit boundary, through scratch.
			var fill func([]byte)
			if rng.IntN(2) == 0 {
				fill = func(dst []byte) { copy(dst, p) }
			}
			_, scratch = s.place(g, kind, 0, 0, uint32(len(p)), p, fill, scratch)
		}
		if err := w.encode(s); err != nil {
			t.Fatal(err)
		}
		for i := range g.Width() {
			hd, err := DecodeHeader(s.shards[i][:h])
			if err != nil {
				t.Fatalf("seed %d shard %d: %v", seed, i, err)
			}
			body := s.shards[i][h:g.WriteUnit]
			for b, c := range hd.BlockCRCs {
				if want := crc(body[b*BlockSize : (b+1)*BlockSize]); c != want {
					t.Fatalf("seed %d shard %d block %d (front %d back %d): crc %08x, body has %08x", seed, i, b, s.front, s.back, c, want)
				}
			}
		}
		w.putBuf(s)
	}
}

// TestAppendFuncErrors checks that AppendFunc refuses what Append refuses,
// and a nil fill, without calling fill or changing the writer.
func TestAppendFuncErrors(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, small, small.Width(), 4)
	w, err := NewWriter(r.d, WriterOptions{Next: r.next, Stamp: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(ctx)
	called := false
	fill := func([]byte) { called = true }
	for _, tc := range []struct {
		name  string
		kind  Kind
		lo    uint64
		size  int
		fill  func([]byte)
		class error
	}{
		{"nil fill", Cblock, 0, 10, nil, nil},
		{"zero size", Cblock, 0, 0, fill, ErrTooLarge},
		{"negative size", Record, 0, -1, fill, ErrTooLarge},
		{"larger than a segio", Cblock, 0, int(small.SegioBytes()), fill, ErrTooLarge},
		{"bad kind", Kind(99), 0, 10, fill, nil},
		{"bad seq range", Record, 2, 10, fill, nil},
	} {
		_, err := w.AppendFunc(ctx, tc.kind, tc.lo, 1, tc.size, tc.fill)
		if err == nil || tc.class != nil && !errors.Is(err, tc.class) {
			t.Errorf("%s: err %v, want an error of class %v", tc.name, err, tc.class)
		}
	}
	if called || w.Stats.Appends.Load() != 0 {
		t.Fatalf("a refused AppendFunc called fill (%v) or appended (%d)", called, w.Stats.Appends.Load())
	}
}
