package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/shalestore/shale/backend/sim"
	"github.com/shalestore/shale/core/segment"
)

type stored struct {
	a    segment.Addr
	data []byte
}

func fill(t *testing.T, s *Store, rng *rand.Rand, n int) []stored {
	ctx := context.Background()
	var out []stored
	for range n {
		p := make([]byte, 1+rng.IntN(12000))
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		a, err := s.Append(ctx, segment.Cblock, 0, 0, p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, stored{a, p})
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestFaultsUnderReads fails 0..m drives (fail-stop) or corrupts reads of
// up to m drives silently, and checks every read returns the right bytes
// and names only the faulty drives; then m+1 failed drives must give a
// clear error and never wrong data.
func TestFaultsUnderReads(t *testing.T) {
	ctx := context.Background()
	g := testGeometry
	for _, mode := range []string{"fail-stop", "corrupt"} {
		for f := 0; f <= g.Parity+1; f++ {
			t.Run(fmt.Sprintf("%s/%d", mode, f), func(t *testing.T) {
				a := newArray(t, 7, 3<<20, int64(10+f))
				s, err := Create(ctx, a.devs(), a.nvram, testOptions())
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close(ctx)
				rng := rand.New(rand.NewPCG(uint64(f), 3))
				items := fill(t, s, rng, 150)
				// The faulty drives: in corrupt mode, drives of the first
				// item's segment so the faults are met.
				lay, _ := s.Layout(items[0].a.Segment)
				faulty := map[int]bool{}
				for _, i := range rng.Perm(len(lay.Members))[:f] {
					faulty[lay.Members[i].Drive] = true
				}
				for dr := range faulty {
					switch mode {
					case "fail-stop":
						a.drives[dr].AddFault(sim.Fault{Op: sim.OpAny, Effect: sim.FailStop})
					case "corrupt":
						a.drives[dr].AddFault(sim.Fault{Op: sim.OpRead, Effect: sim.Corrupt, Sticky: true, Sectors: 2, Bits: 3})
					}
				}
				reported := map[int]bool{}
				unreadable := 0
				for _, it := range items {
					buf := make([]byte, it.a.Length)
					bad, err := s.Read(ctx, it.a, buf)
					if err != nil {
						if f <= g.Parity {
							t.Fatalf("read %v with %d faulty drives: %v", it.a, f, err)
						}
						if !errors.Is(err, segment.ErrUnrecoverable) {
							t.Fatalf("read %v with %d faulty drives: %v, want ErrUnrecoverable", it.a, f, err)
						}
						unreadable++
						continue
					}
					if !bytes.Equal(buf, it.data) {
						t.Fatalf("read %v with %d faulty drives (%s): wrong data", it.a, f, mode)
					}
					for _, b := range bad {
						if !faulty[b.Drive] {
							t.Fatalf("healthy drive %d reported bad: %v", b.Drive, b.Err)
						}
						if mode == "corrupt" && !errors.Is(b.Err, segment.ErrCorrupt) {
							t.Fatalf("corruption on drive %d reported as %v", b.Drive, b.Err)
						}
						reported[b.Drive] = true
					}
				}
				if f > g.Parity && unreadable == 0 {
					t.Fatalf("no read failed with %d faulty drives in a segment", f)
				}
				if f <= g.Parity && len(reported) != f {
					t.Fatalf("faulty drives %v, reported %v", faulty, reported)
				}
			})
		}
	}
}

// TestDriveFailsDuringWrites: a drive fail-stops while segios are being
// written; writing goes on (degraded segios, then segments without the
// drive), every item reads back, and after a restart everything is still
// there.
func TestDriveFailsDuringWrites(t *testing.T) {
	ctx := context.Background()
	a := newArray(t, 7, 4<<20, 21)
	s, err := Create(ctx, a.devs(), a.nvram, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(21, 21))
	items := fill(t, s, rng, 40)
	lay, _ := s.Layout(items[len(items)-1].a.Segment)
	victim := lay.Members[1].Drive
	a.drives[victim].AddFault(sim.Fault{Op: sim.OpWrite, Effect: sim.FailStop})
	items = append(items, fill(t, s, rng, 200)...)
	if !s.Drives().Failed(victim) {
		t.Fatalf("drive %d failed a write but is not marked failed", victim)
	}
	check := func(s *Store) {
		for _, it := range items {
			buf := make([]byte, it.a.Length)
			if _, err := s.Read(ctx, it.a, buf); err != nil || !bytes.Equal(buf, it.data) {
				t.Fatalf("read %v: %v", it.a, err)
			}
		}
	}
	check(s)
	// Segments opened after the failure avoid the drive.
	last, _ := s.Layout(items[len(items)-1].a.Segment)
	for _, m := range last.Members {
		if m.Drive == victim {
			t.Fatalf("segment %d opened after drive %d failed still uses it", last.Segment, victim)
		}
	}
	if err := s.Checkpoint(ctx, nil); err != nil {
		t.Fatal(err)
	}
	layouts := map[segment.ID]segment.Layout{}
	for _, it := range items {
		l, _ := s.Layout(it.a.Segment)
		layouts[l.Segment] = l
	}
	_ = s.Close(ctx)
	b := a.powerLoss(t)
	s2, _, err := Open(ctx, b.devs(), b.nvram, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close(ctx)
	if !s2.Drives().Failed(victim) {
		t.Fatalf("drive %d not failed after restart", victim)
	}
	for _, l := range layouts {
		if err := s2.AddLayout(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := s2.EndRestore(ctx); err != nil {
		t.Fatal(err)
	}
	check(s2)
}
