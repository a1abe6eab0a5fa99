package sim

import (
	"fmt"
	"testing"

	"github.com/shalestore/shale/backend"
	"github.com/shalestore/shale/backend/backendtest"
)

// factory opens sim devices through the registry (backend.Open), so the
// spec path is tested too.
func factory(t *testing.T, kind backend.Kind, file bool, opts map[string]any) backendtest.Factory {
	n := 0
	return backendtest.Factory{
		Open: func(tb testing.TB) backend.Device {
			n++
			spec := backend.Spec{Name: fmt.Sprintf("drives[%d]", n), Backend: "sim", Size: 16 << 20, Kind: kind, Options: opts}
			if file {
				spec.Path = tb.TempDir() + "/img"
			}
			dev, err := backend.Open(spec)
			if err != nil {
				tb.Fatal(err)
			}
			return dev
		},
		Reopen: func(tb testing.TB, old backend.Device) backend.Device {
			d, err := old.(*Device).Reopen()
			if err != nil {
				tb.Fatal(err)
			}
			return d
		},
		PowerLoss: func(tb testing.TB, dev backend.Device) backend.Device {
			d, err := dev.(*Device).PowerLoss()
			if err != nil {
				tb.Fatal(err)
			}
			return d
		},
	}
}

func TestConformance(t *testing.T) {
	for _, c := range []struct {
		name string
		kind backend.Kind
		file bool
		opts map[string]any
	}{
		{"memory/virtual", backend.SSD, false, map[string]any{"seed": 1}},
		{"file/virtual", backend.SSD, true, map[string]any{"seed": 2}},
		{"memory/virtual/align4096", backend.SSD, false, map[string]any{"seed": 3, "alignment": 4096}},
		{"memory/virtual/nvram", backend.NVRAM, false, map[string]any{"seed": 4}},
		// Real time with the NVRAM profile's microsecond latencies, and the
		// SSD profile without latency: the suite's waits stay short.
		{"memory/real/nvram", backend.NVRAM, false, map[string]any{"seed": 5, "time": "real"}},
		{"file/real/zero-latency", backend.SSD, true, map[string]any{"seed": 6, "time": "real", "zero_latency": true}},
	} {
		t.Run(c.name, func(t *testing.T) { backendtest.Run(t, factory(t, c.kind, c.file, c.opts)) })
	}
}
