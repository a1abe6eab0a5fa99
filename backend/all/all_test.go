package all

import (
	"slices"
	"testing"

	"github.com/shalestore/shale/backend"
)

// TestRegistered: importing all registers the backends configuration names.
func TestRegistered(t *testing.T) {
	got := backend.Backends()
	for _, want := range []string{"file", "nvme"} {
		if !slices.Contains(got, want) {
			t.Errorf("backend %q not registered (have %v)", want, got)
		}
	}
}
