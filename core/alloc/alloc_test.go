package alloc

import (
	"errors"
	"reflect"
	"testing"

	"github.com/shalestore/shale/core/segment"
)

var g = segment.Geometry{Data: 2, Parity: 1, AUSize: 64 << 10, WriteUnit: 16 << 10}

func TestPlanTakeRefill(t *testing.T) {
	a := New(g, []int64{10, 10, 10, 10, 10}, Options{Ahead: 3})
	if _, ok := a.Take(); ok {
		t.Fatal("took a segment from an empty frontier")
	}
	if err := a.Refill(); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Take(); ok {
		t.Fatal("took a segment that is not persisted")
	}
	a.Persisted()
	seen := map[segment.Member]segment.ID{}
	perDrive := make([]int, 5)
	for i := range 15 {
		if a.NeedRefill() {
			if err := a.Refill(); err != nil {
				t.Fatal(err)
			}
			a.Persisted()
		}
		l, ok := a.Take()
		if !ok {
			t.Fatalf("segment %d: nothing to take", i)
		}
		if l.Segment != segment.ID(i+1) {
			t.Fatalf("took segment %d, want %d", l.Segment, i+1)
		}
		drives := map[int]bool{}
		for _, m := range l.Members {
			if drives[m.Drive] {
				t.Fatalf("segment %d uses drive %d twice", l.Segment, m.Drive)
			}
			drives[m.Drive] = true
			if prev, dup := seen[m]; dup {
				t.Fatalf("AU %+v in segments %d and %d", m, prev, l.Segment)
			}
			seen[m] = l.Segment
			perDrive[m.Drive]++
		}
		a.Closed(l.Segment)
		if len(a.Frontier()) > 8 {
			a.DropClosed()
		}
	}
	// 16+ segments × 3 AUs over 5 drives: usage differs by at most 1.
	lo, hi := perDrive[0], perDrive[0]
	for _, n := range perDrive {
		lo, hi = min(lo, n), max(hi, n)
	}
	if hi-lo > 1 {
		t.Fatalf("uneven drive use %v", perDrive)
	}
	// Round trip through the encoding.
	b, err := Decode(g, a.Encode(), a.Frontier(), a.NextID(), Options{Ahead: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(b.drives, a.drives) || !reflect.DeepEqual(b.Frontier(), a.Frontier()) {
		t.Fatal("decode differs")
	}
	if len(a.Encode()) != EncodedSize([]int64{10, 10, 10, 10, 10}) {
		t.Fatal("EncodedSize wrong")
	}
}

func TestNoSpaceAndFailed(t *testing.T) {
	a := New(g, []int64{2, 2, 2, 1}, Options{Ahead: 10})
	if err := a.Refill(); err != nil {
		t.Fatal(err)
	}
	if n := len(a.Frontier()); n != 2 {
		t.Fatalf("planned %d segments on 7 AUs of width 3 over 4 drives, want 2", n)
	}
	a.Persisted()
	for range 2 {
		if _, ok := a.Take(); !ok {
			t.Fatal("take")
		}
	}
	if err := a.Refill(); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("refill on a full array: %v", err)
	}

	b := New(g, []int64{5, 5, 5, 5}, Options{Ahead: 2})
	_ = b.Refill()
	b.Persisted()
	if !b.SetFailed(0, true) && !b.SetFailed(1, true) {
		t.Fatal("failing a drive did not change the plan")
	}
	if err := b.Refill(); err != nil {
		t.Fatal(err)
	}
	for _, l := range b.Frontier() {
		for _, m := range l.Members {
			if b.Failed(m.Drive) {
				t.Fatalf("segment %d planned on failed drive %d", l.Segment, m.Drive)
			}
		}
	}
}

func TestMaxFrontier(t *testing.T) {
	a := New(g, []int64{100, 100, 100}, Options{Ahead: 2, MaxFrontier: 4})
	for range 4 {
		if err := a.Refill(); err != nil {
			t.Fatal(err)
		}
		a.Persisted()
		l, ok := a.Take()
		if !ok {
			t.Fatal("take")
		}
		a.Closed(l.Segment)
	}
	if err := a.Refill(); !errors.Is(err, ErrFrontierFull) {
		t.Fatalf("refill of a full frontier: %v (frontier %d)", err, len(a.Frontier()))
	}
	a.DropClosed()
	if err := a.Refill(); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeRejects(t *testing.T) {
	a := New(g, []int64{8, 8, 8}, Options{})
	_ = a.Refill()
	enc := a.Encode()
	for _, b := range [][]byte{nil, enc[:len(enc)-1], append(enc, 0)} {
		if _, err := Decode(g, b, nil, 1, Options{}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("decode of %d bytes: %v", len(b), err)
		}
	}
	// A frontier naming a free AU is rejected.
	bad := []segment.Layout{{Segment: 1, Members: []segment.Member{{Drive: 0, AU: 7}, {Drive: 1, AU: 7}, {Drive: 2, AU: 7}}}}
	if _, err := Decode(g, New(g, []int64{8, 8, 8}, Options{}).Encode(), bad, 2, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("frontier on free AUs: %v", err)
	}
}
