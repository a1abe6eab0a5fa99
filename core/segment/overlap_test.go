package segment

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// TestUnsyncedBound checks the write/sync overlap: never more than
// MaxUnsyncedSegios segios between the start of their writes and their
// report, reports in order, and with the default some overlap happens.
func TestUnsyncedBound(t *testing.T) {
	for _, limit := range []int{1, 2} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			ctx := context.Background()
			r := newRig(t, small, 6, 16)
			var mu sync.Mutex
			inFlight, maxInFlight := 0, 0
			var reported []Position
			hook := func(p string) {
				mu.Lock()
				defer mu.Unlock()
				switch p {
				case PointSegioEncoded: // the write stage starts a segio
					inFlight++
					maxInFlight = max(maxInFlight, inFlight)
				case PointSegioReported:
					inFlight--
				case PointSegioSynced:
					// Slow syncs, so the next segio's writes can overlap.
					time.Sleep(3 * time.Millisecond)
				}
			}
			w, err := NewWriter(r.d, WriterOptions{Next: r.next, Stamp: 1, CrashHook: hook, MaxUnsyncedSegios: limit,
				MaxPendingSegios: 4, OnFlush: func(f Flushed) {
					mu.Lock()
					reported = append(reported, Position{Layout: Layout{Segment: f.Segment}, Segio: f.Segio})
					mu.Unlock()
				}})
			if err != nil {
				t.Fatal(err)
			}
			p := payload(rand.New(rand.NewPCG(3, 4)), 3000)
			for range 300 {
				if _, err := w.Append(ctx, Cblock, 0, 0, p); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if maxInFlight > limit {
				t.Fatalf("%d segios unsynced at once, limit %d", maxInFlight, limit)
			}
			if limit == 2 && maxInFlight < 2 {
				t.Fatalf("no overlap of writes and syncs observed (max %d in flight)", maxInFlight)
			}
			for i := 1; i < len(reported); i++ {
				a, b := reported[i-1], reported[i]
				if b.Layout.Segment < a.Layout.Segment || b.Layout.Segment == a.Layout.Segment && b.Segio != a.Segio+1 ||
					b.Layout.Segment > a.Layout.Segment && (b.Segio != 0 || a.Segio != small.SegiosPerAU()-1) {
					t.Fatalf("report %d (%v) does not follow %v", i, b, a)
				}
			}
		})
	}
}

// writeSegios writes n full segios with stamp, starting at pos.
func writeSegios(t *testing.T, r *rig, stamp uint64, start Position, n int) {
	t.Helper()
	ctx := context.Background()
	w, err := NewWriter(r.d, WriterOptions{Next: r.next, Stamp: stamp, Start: start})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(stamp, uint64(n)))
	for range n {
		if _, err := w.Append(ctx, Cblock, 0, 0, payload(rng, 1000)); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestScanStopsAtLowerStamp: a segio whose stamp is below the one before
// it is a leftover of an earlier session and ends the scan.
func TestScanStopsAtLowerStamp(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, small, 6, 16)
	writeSegios(t, r, 1, Position{}, 4) // segment 1, segios 0..3, stamp 1
	lay := r.layout(1)
	writeSegios(t, r, 2, Position{Layout: lay, Segio: 1}, 1) // a later session rewrote segio 1
	rd, _ := NewReader(r.d, ReaderOptions{})
	sc, err := rd.Scan(ctx, lay)
	if err != nil {
		t.Fatal(err)
	}
	if len(sc.Segios) != 2 {
		t.Fatalf("scan found %d segios, want 2 (segio 2 has a lower stamp than segio 1)", len(sc.Segios))
	}
	writeSegios(t, r, 3, Position{Layout: lay, Segio: 2}, 2)
	if sc, _ = rd.Scan(ctx, lay); len(sc.Segios) != 4 {
		t.Fatalf("scan found %d segios after the rewrite, want 4", len(sc.Segios))
	}
}

// TestVerifyTail: the last two segios written, across a segment boundary,
// are verified; a torn one beyond repair is dropped with everything after
// it, one torn within parity is repaired.
func TestVerifyTail(t *testing.T) {
	ctx := context.Background()
	g := small
	tear := func(r *rig, lay Layout, segio int, shards ...int) {
		junk := make([]byte, BlockSize)
		for i := range junk {
			junk[i] = 0xa5
		}
		for _, sh := range shards {
			m := lay.Members[sh]
			if err := r.d.Devs[m.Drive].WriteAt(ctx, junk, r.d.UnitOffset(m, segio)+g.WriteUnit-BlockSize); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name         string
		tornSegment  ID
		tornSegio    int
		shards       []int
		want1, want2 int // segios kept in segments 1 and 2
		repaired     int
	}{
		{"none", 0, 0, nil, 4, 1, 0},
		{"last-segio-of-1-beyond-repair", 1, 3, []int{0, 1, 4}, 3, 0, 0},
		{"last-segio-of-1-repairable", 1, 3, []int{2, 5}, 4, 1, 2},
		{"last-beyond-repair", 2, 0, []int{0, 1, 2}, 4, 0, 0},
		{"older-not-verified", 1, 2, []int{0, 1, 2}, 4, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, g, 6, 16)
			writeSegios(t, r, 1, Position{}, 5) // segment 1 whole, segment 2 segio 0
			if tc.shards != nil {
				tear(r, r.layout(tc.tornSegment), tc.tornSegio, tc.shards...)
			}
			rd, _ := NewReader(r.d, ReaderOptions{})
			var scans []*Scanned
			for _, id := range []ID{1, 2} {
				sc, err := rd.Scan(ctx, r.layout(id))
				if err != nil {
					t.Fatal(err)
				}
				scans = append(scans, sc)
			}
			if err := rd.VerifyTail(ctx, scans, MaxUnsynced); err != nil {
				t.Fatal(err)
			}
			if len(scans[0].Segios) != tc.want1 || len(scans[1].Segios) != tc.want2 {
				t.Fatalf("kept %d and %d segios, want %d and %d", len(scans[0].Segios), len(scans[1].Segios), tc.want1, tc.want2)
			}
			if got := scans[0].Repaired + scans[1].Repaired; got != tc.repaired {
				t.Fatalf("repaired %d units, want %d", got, tc.repaired)
			}
		})
	}
}
