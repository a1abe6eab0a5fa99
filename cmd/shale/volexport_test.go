package main

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/shalestore/shale/config"
	"github.com/shalestore/shale/core"
	"github.com/shalestore/shale/nbd"
)

// fakeVolume records calls; it stands in for *core.Volume.
type fakeVolume struct {
	name     string
	size     int64
	readOnly bool
	extents  []core.Extent
	fail     error

	mu    sync.Mutex
	calls []string
}

func (f *fakeVolume) record(format string, args ...any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
	return f.fail
}

func (f *fakeVolume) Name() string   { return f.name }
func (f *fakeVolume) Size() int64    { return f.size }
func (f *fakeVolume) ReadOnly() bool { return f.readOnly }
func (f *fakeVolume) ReadAt(ctx context.Context, p []byte, off int64) error {
	return f.record("read %d+%d", off, len(p))
}
func (f *fakeVolume) WriteAt(ctx context.Context, p []byte, off int64) error {
	return f.record("write %d+%d", off, len(p))
}
func (f *fakeVolume) Flush(ctx context.Context) error { return f.record("flush") }
func (f *fakeVolume) Trim(ctx context.Context, off, length int64) error {
	return f.record("trim %d+%d", off, length)
}
func (f *fakeVolume) WriteZeroes(ctx context.Context, off, length int64) error {
	return f.record("zero %d+%d", off, length)
}
func (f *fakeVolume) Extents(ctx context.Context, off, length int64, dst []core.Extent) ([]core.Extent, error) {
	if err := f.record("extents %d+%d", off, length); err != nil {
		return dst, err
	}
	return append(dst, f.extents...), nil
}

func (f *fakeVolume) takeCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func TestVolumeExportFeatures(t *testing.T) {
	for _, tc := range []struct {
		name         string
		snapshot     bool
		cfgRO        bool
		cfgMin       uint32
		wantRO       bool
		wantMinBlock uint32
	}{
		{"volume", false, false, 0, false, 512},
		{"snapshot", true, false, 0, true, 512},
		{"configured read-only", false, true, 0, true, 512},
		{"configured 4K blocks", false, false, 4096, false, 4096},
	} {
		e := volumeExport{v: &fakeVolume{name: "v", size: 1 << 30, readOnly: tc.snapshot}, readOnly: tc.cfgRO, minBlock: tc.cfgMin}
		want := nbd.Features{ReadOnly: tc.wantRO, Flush: true, Trim: true, WriteZeroes: true, FastZero: true, Cache: true,
			Extents: true, MultiConn: true, BlockSize: nbd.BlockSize{Min: tc.wantMinBlock, Preferred: 4096, Max: 32 << 20}}
		if got := e.Features(); got != want {
			t.Errorf("%s: features %+v, want %+v", tc.name, got, want)
		}
		if e.Size() != 1<<30 {
			t.Errorf("%s: size %d", tc.name, e.Size())
		}
	}
}

// TestVolumeExportCalls: FUA and Flush reach Volume.Flush, after the
// operation they cover; everything else passes straight through.
func TestVolumeExportCalls(t *testing.T) {
	ctx := context.Background()
	v := &fakeVolume{name: "v", size: 1 << 20}
	e := volumeExport{v: v}
	p := make([]byte, 4096)
	steps := []struct {
		do   func() error
		want []string
	}{
		{func() error { return e.ReadAt(ctx, p, 512) }, []string{"read 512+4096"}},
		{func() error { return e.WriteAt(ctx, p, 8192, false) }, []string{"write 8192+4096"}},
		{func() error { return e.WriteAt(ctx, p, 8192, true) }, []string{"write 8192+4096", "flush"}},
		{func() error { return e.Flush(ctx) }, []string{"flush"}},
		{func() error { return e.Trim(ctx, 0, 1024, false) }, []string{"trim 0+1024"}},
		{func() error { return e.Trim(ctx, 0, 1024, true) }, []string{"trim 0+1024", "flush"}},
		{func() error { return e.WriteZeroes(ctx, 512, 512, nbd.ZeroFlags{}) }, []string{"zero 512+512"}},
		{func() error {
			return e.WriteZeroes(ctx, 512, 512, nbd.ZeroFlags{FUA: true, NoHole: true, FastZero: true})
		},
			[]string{"zero 512+512", "flush"}},
		{func() error { return e.Cache(ctx, 0, 4096) }, nil},
	}
	for i, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := v.takeCalls(); !reflect.DeepEqual(got, s.want) {
			t.Errorf("step %d: calls %q, want %q", i, got, s.want)
		}
	}
	// A failed write is not flushed, and its error (with its errno) passes
	// through for the NBD server to map.
	v.fail = fmt.Errorf("volume v: %w", core.ErrNoSpace)
	if err := e.WriteAt(ctx, p, 0, true); !errors.Is(err, core.ErrNoSpace) {
		t.Errorf("failed write: %v", err)
	}
	if got := v.takeCalls(); !reflect.DeepEqual(got, []string{"write 0+4096"}) {
		t.Errorf("failed FUA write: calls %q", got)
	}
}

func TestVolumeExportExtents(t *testing.T) {
	v := &fakeVolume{name: "v", size: 1 << 20, extents: []core.Extent{
		{Length: 4096}, {Length: 8192, Hole: true, Zero: true}, {Length: 512, Zero: true},
	}}
	e := volumeExport{v: v}
	prefix := []nbd.Extent{{Length: 1, Flags: 0}}
	got, err := e.Extents(context.Background(), 0, 1<<20, prefix)
	if err != nil {
		t.Fatal(err)
	}
	want := []nbd.Extent{{Length: 1}, {Length: 4096}, {Length: 8192, Flags: nbd.ExtentHole | nbd.ExtentZero}, {Length: 512, Flags: nbd.ExtentZero}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("extents %+v, want %+v", got, want)
	}
	v.fail = core.ErrIO
	if _, err := e.Extents(context.Background(), 0, 512, nil); !errors.Is(err, core.ErrIO) {
		t.Errorf("failed extents: %v", err)
	}
}

// fakeLookup is an engineLookup over a set of fake volumes.
type fakeLookup struct {
	mu   sync.Mutex
	vols map[string]*fakeVolume
}

func (f *fakeLookup) volume(name string) (volumeHandle, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vols[name]
	if !ok {
		return nil, fmt.Errorf("volume %q: %w", name, core.ErrNotFound)
	}
	return v, nil
}

func (f *fakeLookup) list(snap bool) []core.VolumeInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []core.VolumeInfo
	for n, v := range f.vols {
		if v.readOnly == snap {
			origin, _, _ := strings.Cut(n, "@")
			if !snap {
				origin = ""
			}
			out = append(out, core.VolumeInfo{Name: n, Size: v.size, Snapshot: snap, Origin: origin})
		}
	}
	// core sorts by name
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j].Name < out[i].Name {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func (f *fakeLookup) Volumes() []core.VolumeInfo         { return f.list(false) }
func (f *fakeLookup) Snapshots(string) []core.VolumeInfo { return f.list(true) }

func TestLiveExports(t *testing.T) {
	cfgFile := writeConfig(t, `
data_dir: /nonexistent
volumes:
  - {name: main, size: 1G, description: "the main one", read_only: true}
  - {name: scratch, size: 1M, ram: true, description: "ram"}
geometry: {data: 1, parity: 0}
`)
	cfg, err := config.Load(config.New(), cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	ramSet, err := buildExports(cfg)
	if err != nil {
		t.Fatal(err)
	}
	arr := &fakeLookup{vols: map[string]*fakeVolume{
		"main":     {name: "main", size: 1 << 30},
		"zeta":     {name: "zeta", size: 1 << 20},
		"alpha":    {name: "alpha", size: 1 << 20},
		"main@s1":  {name: "main@s1", size: 1 << 30, readOnly: true},
		"scratch":  {name: "scratch", size: 1 << 20}, // hidden by the RAM volume
		"alpha@s0": {name: "alpha@s0", size: 1 << 20, readOnly: true},
	}}
	x := newLiveExports(cfg, ramSet, arr)

	wantList := []nbd.ExportInfo{
		{Name: "main", Description: "the main one"},
		{Name: "scratch", Description: "ram"},
		{Name: "alpha"},
		{Name: "zeta"},
		{Name: "alpha@s0", Description: "snapshot of alpha (read-only)"},
		{Name: "main@s1", Description: "snapshot of main (read-only)"},
	}
	if got := x.List(); !reflect.DeepEqual(got, wantList) {
		t.Errorf("List:\n got %+v\nwant %+v", got, wantList)
	}
	for _, tc := range []struct {
		name, want, desc string
		ram, readOnly    bool
	}{
		{"", "main", "the main one", false, true}, // the first configured volume; read_only from config
		{"main", "main", "the main one", false, true},
		{"scratch", "scratch", "ram", true, false},
		{"zeta", "zeta", "", false, false},
		{"main@s1", "main@s1", "snapshot of main (read-only)", false, true},
	} {
		exp, info, ok := x.Lookup(tc.name)
		if !ok || info.Name != tc.want || info.Description != tc.desc {
			t.Errorf("Lookup(%q) = %+v, %v; want %s %q", tc.name, info, ok, tc.want, tc.desc)
			continue
		}
		_, isRAM := exp.(ramExport)
		if isRAM != tc.ram || exp.Features().ReadOnly != tc.readOnly {
			t.Errorf("Lookup(%q): RAM %v read-only %v; want %v %v", tc.name, isRAM, exp.Features().ReadOnly, tc.ram, tc.readOnly)
		}
	}
	// Created and deleted volumes appear and disappear at once.
	if _, _, ok := x.Lookup("new"); ok {
		t.Error("Lookup of a volume that does not exist succeeded")
	}
	arr.mu.Lock()
	arr.vols["new"] = &fakeVolume{name: "new", size: 4096}
	delete(arr.vols, "zeta")
	arr.mu.Unlock()
	if _, _, ok := x.Lookup("new"); !ok {
		t.Error("a volume created after start is not served")
	}
	if _, _, ok := x.Lookup("zeta"); ok {
		t.Error("a deleted volume is still served")
	}

	// The default follows the first configured volume, and the first
	// listed export once it is deleted.
	arr.mu.Lock()
	delete(arr.vols, "main")
	arr.mu.Unlock()
	if _, info, ok := x.Lookup(""); !ok || info.Name != "scratch" {
		t.Errorf("default export after deleting main: %+v %v; want scratch", info, ok)
	}

	// RAM only: no array at all.
	y := newLiveExports(cfg, ramSet, nil)
	if got := y.List(); !reflect.DeepEqual(got, []nbd.ExportInfo{{Name: "scratch", Description: "ram"}}) {
		t.Errorf("RAM-only List: %+v", got)
	}
	if _, _, ok := y.Lookup("zeta"); ok {
		t.Error("RAM-only: an engine name was served")
	}
}
