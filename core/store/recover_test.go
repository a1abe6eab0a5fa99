package store

import (
	"fmt"
	"testing"

	"github.com/shalestore/shale/core/segment"
)

// TestCutAtHole: only the segios before the first hole count, in frontier
// order, with stamps never going down.
func TestCutAtHole(t *testing.T) {
	// Each scan is a list of segio stamps; 4 segios per segment.
	for _, tc := range []struct {
		scans   [][]uint64
		want    []int
		dropped int
	}{
		{[][]uint64{{1, 1, 1, 1}, {1, 1}, {}}, []int{4, 2, 0}, 0},
		{[][]uint64{{1, 1, 1}, {1}}, []int{3, 0}, 1},                     // pipelined leftover in the next segment
		{[][]uint64{{1, 1, 1, 2}, {1}}, []int{4, 0}, 1},                  // rewritten by session 2, leftover of session 1
		{[][]uint64{{1, 1, 2, 2}, {2, 3}}, []int{4, 2}, 0},               // sessions in order
		{[][]uint64{{1, 2, 1, 1}, {1, 1}}, []int{2, 0}, 4},               // a stamp going down ends everything
		{[][]uint64{{}, {1, 1}, {1}}, []int{0, 0, 0}, 3},                 // nothing written in the first
		{[][]uint64{{3, 3, 3, 3}, {3, 3, 3, 3}}, []int{4, 4}, 0},         // all full
		{[][]uint64{{5}, {}}, []int{1, 0}, 0},                            // fresh
		{[][]uint64{{2, 2, 2, 2}, {1, 1, 1, 1}, {1}}, []int{4, 0, 0}, 5}, // whole old segment after a newer one
	} {
		t.Run(fmt.Sprint(tc.scans), func(t *testing.T) {
			var scans []*segment.Scanned
			for _, st := range tc.scans {
				sc := &segment.Scanned{}
				for j, s := range st {
					sc.Segios = append(sc.Segios, &segment.Header{Segio: j, Stamp: s})
				}
				scans = append(scans, sc)
			}
			if got := cutAtHole(scans, 4); got != tc.dropped {
				t.Errorf("dropped %d, want %d", got, tc.dropped)
			}
			for i, sc := range scans {
				if len(sc.Segios) != tc.want[i] {
					t.Errorf("scan %d keeps %d segios, want %d", i, len(sc.Segios), tc.want[i])
				}
			}
		})
	}
}
