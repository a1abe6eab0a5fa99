package main

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shalestore/shale/backend"
)

func TestPlanStart(t *testing.T) {
	blank := func(name string) devProbe { return devProbe{name: name, blank: true} }
	data := func(name string) devProbe { return devProbe{name: name} }
	bad := func(name string) devProbe { return devProbe{name: name, err: errors.New("EIO")} }
	cases := []struct {
		name    string
		probes  []devProbe
		want    startPlan
		wantErr string
	}{
		{"all blank", []devProbe{blank("drives[0]"), blank("drives[1]"), blank("nvram")}, planCreate, ""},
		{"all data", []devProbe{data("drives[0]"), data("drives[1]"), data("nvram")}, planOpen, ""},
		{"one drive holds data", []devProbe{blank("drives[0]"), data("drives[1]"), blank("nvram")}, planOpen, ""},
		{"only nvram holds data", []devProbe{blank("drives[0]"), blank("drives[1]"), data("nvram")}, planOpen, ""},
		{"replaced drive in an array", []devProbe{data("drives[0]"), blank("drives[1]"), data("nvram")}, planOpen, ""},
		{"unreadable drive in an array", []devProbe{data("drives[0]"), bad("drives[1]"), data("nvram")}, planOpen, ""},
		{"unreadable among blanks", []devProbe{blank("drives[0]"), bad("drives[1]"), blank("nvram")}, 0, "drives[1]: EIO"},
	}
	for _, tc := range cases {
		got, err := planStart(tc.probes)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: plan %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	if s := describe([]devProbe{data("drives[0]"), blank("drives[1]"), bad("nvram")}); s != "holding data: drives[0], nvram (unreadable); blank: drives[1]" {
		t.Errorf("describe: %q", s)
	}
}

// TestProbeBlank runs the blank check on real file drives: a new sparse
// file is blank; a byte anywhere in the first or last MiB is not.
func TestProbeBlank(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, tc := range []struct {
		name  string
		size  int64
		write int64 // offset of a 4 KiB block of 0xff; -1 for none
		blank bool
	}{
		{"new", 8 << 20, -1, true},
		{"small new", 64 << 10, -1, true},
		{"label", 8 << 20, 0, false},
		{"end of first MiB", 8 << 20, 1<<20 - 4096, false},
		{"tail", 8 << 20, 8<<20 - 4096, false},
		{"start of last MiB", 8 << 20, 7 << 20, false},
		{"middle only", 8 << 20, 4 << 20, true}, // the probe's documented limit
	} {
		dev, err := backend.Open(backend.Spec{Name: tc.name, Backend: "file", Path: filepath.Join(dir, tc.name), Size: tc.size})
		if err != nil {
			t.Fatal(err)
		}
		if tc.write >= 0 {
			buf := backend.AlignedBuffer(4096)
			for i := range buf {
				buf[i] = 0xff
			}
			if err := dev.WriteAt(ctx, buf, tc.write); err != nil {
				t.Fatal(err)
			}
		}
		got, err := probeBlank(ctx, dev)
		if err != nil || got != tc.blank {
			t.Errorf("%s: blank %v, %v; want %v", tc.name, got, err, tc.blank)
		}
		dev.Close()
	}
}

func TestIEC(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 512: "512 B", 1023: "1023 B", 1024: "1 KiB", 1536: "1.5 KiB", 4096: "4 KiB",
		16 << 30: "16 GiB", 10<<30 + 512<<20: "10.5 GiB", 1<<30 - 1: "1.0 GiB", 8 << 40: "8 TiB", -2048: "-2 KiB",
	} {
		if got := iec(n); got != want {
			t.Errorf("iec(%d) = %q, want %q", n, got, want)
		}
	}
	for r, want := range map[float64]string{0: "-", 1: "1.0:1", 3.25: "3.2:1"} {
		if got := ratio(r); got != want {
			t.Errorf("ratio(%v) = %q, want %q", r, got, want)
		}
	}
}
