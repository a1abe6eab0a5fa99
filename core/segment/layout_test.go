package segment

import (
	"errors"
	"testing"
)

func TestCheckLayout(t *testing.T) {
	r := newRig(t, small, 8, 4)
	ok := []Member{{0, 0}, {1, 0}, {2, 1}, {3, 0}, {4, 3}, {7, 0}}
	with := func(i int, m Member) []Member {
		ms := append([]Member(nil), ok...)
		ms[i] = m
		return ms
	}
	for _, tc := range []struct {
		name    string
		members []Member
		valid   bool
	}{
		{"valid", ok, true},
		{"too few", ok[:5], false},
		{"repeated drive", with(5, Member{0, 1}), false},
		{"repeated drive, adjacent", with(1, Member{0, 1}), false},
		{"negative drive", with(2, Member{-1, 0}), false},
		{"drive beyond", with(2, Member{8, 0}), false},
		{"AU beyond", with(3, Member{3, 4}), false},
		{"negative AU", with(3, Member{3, -1}), false},
	} {
		err := r.d.CheckLayout(Layout{Segment: 1, Members: tc.members})
		if tc.valid && err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if !tc.valid && !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", tc.name, err)
		}
	}
}
