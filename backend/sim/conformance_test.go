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
		PowerLossCorruptsUnsynced: opts["corrupt_torn"] == true,
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
	type config struct {
		name string
		kind backend.Kind
		file bool
		opts map[string]any
	}
	// Three runs cover every mode: memory and file, virtual and real time,
	// ssd and nvram, 512 and 4096 alignment. Real time uses the NVRAM
	// profile's microsecond latencies or no latency, so waits stay short.
	configs := []config{
		{"memory/virtual/ssd", backend.SSD, false, map[string]any{"seed": 1}},
		{"file/real/ssd-zero-latency", backend.SSD, true, map[string]any{"seed": 2, "time": "real", "zero_latency": true}},
		{"memory/real/nvram/align4096", backend.NVRAM, false, map[string]any{"seed": 3, "time": "real", "alignment": 4096}},
		{"memory/virtual/corrupt_torn", backend.SSD, false, map[string]any{"seed": 9, "corrupt_torn": true, "zero_latency": true}},
	}
	if *long {
		configs = append(configs,
			config{"file/virtual/ssd", backend.SSD, true, map[string]any{"seed": 4}},
			config{"memory/virtual/ssd/align4096", backend.SSD, false, map[string]any{"seed": 5, "alignment": 4096}},
			config{"memory/virtual/nvram", backend.NVRAM, false, map[string]any{"seed": 6}},
			config{"file/real/nvram", backend.NVRAM, true, map[string]any{"seed": 7, "time": "real"}},
			config{"memory/real/ssd", backend.SSD, false, map[string]any{"seed": 8, "time": "real"}},
		)
	}
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) { backendtest.Run(t, factory(t, c.kind, c.file, c.opts)) })
	}
}
