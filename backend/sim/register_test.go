package sim

import (
	"strings"
	"testing"
	"time"

	"github.com/shalestore/shale/backend"
)

func TestOpenFromSpec(t *testing.T) {
	dev, err := backend.Open(backend.Spec{Name: "drives[0]", Backend: "sim", Size: 64 << 20, Options: map[string]any{
		"seed": 7, "profile": "ssd", "time": "virtual", "alignment": 4096, "dies": "2", "planes": 1,
		"pages_per_block": 32, "overprovision": "10%", "read_us": 50.5, "program_us": 300, "erase_us": "2000",
		"cache_bytes": 0,
	}})
	if err != nil {
		t.Fatal(err)
	}
	d := dev.(*Device)
	p := d.Profile()
	if d.Alignment() != 4096 || p.Dies != 2 || p.Planes != 1 || p.PagesPerBlock != 32 || p.OverProvision != 0.1 ||
		p.Read != 50500*time.Nanosecond || p.Program != 300*time.Microsecond || p.Erase != 2*time.Millisecond ||
		d.seed != 7 || p.CacheBytes != 0 || d.Kind() != backend.SSD {
		t.Fatalf("options not applied: %+v", p)
	}
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}

	dev, err = backend.Open(backend.Spec{Backend: "sim", Size: 1 << 20, Kind: backend.NVRAM,
		Options: map[string]any{"zero_latency": true, "time": "real"}})
	if err != nil {
		t.Fatal(err)
	}
	d = dev.(*Device)
	if d.Profile().Name != "nvram" || d.Profile().Program != 0 || d.opts.Time != Real || d.Kind() != backend.NVRAM {
		t.Fatalf("nvram spec: %+v", d.Profile())
	}
}

func TestOpenRejects(t *testing.T) {
	for _, tc := range []struct {
		opts map[string]any
		size int64
		want string
	}{
		{map[string]any{"sead": 1}, 1 << 20, "sead"},
		{map[string]any{"seed": "x"}, 1 << 20, "seed"},
		{map[string]any{"seed": 1.5}, 1 << 20, "seed"},
		{map[string]any{"profile": "hdd"}, 1 << 20, "profile"},
		{map[string]any{"time": "fast"}, 1 << 20, "time"},
		{map[string]any{"alignment": 1024}, 1 << 20, "alignment"},
		{map[string]any{"dies": 0}, 1 << 20, "dies"},
		{map[string]any{"read_us": -1}, 1 << 20, "read_us"},
		{map[string]any{"overprovision": "lots"}, 1 << 20, "overprovision"},
		{map[string]any{"zero_latency": "maybe"}, 1 << 20, "zero_latency"},
		{nil, 0, "size"},
		{nil, 4096 + 512, "size"},
	} {
		_, err := backend.Open(backend.Spec{Name: "d", Backend: "sim", Size: tc.size, Options: tc.opts})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v size %d: error %v, want one naming %q", tc.opts, tc.size, err, tc.want)
		}
	}
}
