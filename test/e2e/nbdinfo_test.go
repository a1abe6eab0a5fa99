package e2e

import (
	"encoding/json"
	"reflect"
	"testing"
)

// stdVolumes are the exports most tests use: a writable scratch volume, a
// read-only one with 512-byte blocks, and a writable one with 4 KiB blocks.
const stdVolumes = `volumes:
  - {name: vol0, size: 64M, ram: true, description: "scratch volume"}
  - {name: ro, size: 1M, ram: true, read_only: true, min_block_size: 512, description: "read-only volume"}
  - {name: blk4k, size: 4M, ram: true, min_block_size: 4096, description: "4 KiB blocks"}
`

// nbdinfoJSON is the part of `nbdinfo --json` (libnbd 1.14) checked here.
type nbdinfoJSON struct {
	Protocol   string          `json:"protocol"`
	TLS        bool            `json:"TLS"`
	Structured bool            `json:"structured"`
	Exports    []nbdinfoExport `json:"exports"`
}

type nbdinfoExport struct {
	Name         string   `json:"export-name"`
	Description  string   `json:"description"`
	Contexts     []string `json:"contexts"`
	Rotational   bool     `json:"is_rotational"`
	ReadOnly     bool     `json:"is_read_only"`
	CanCache     bool     `json:"can_cache"`
	CanDF        bool     `json:"can_df"`
	CanFastZero  bool     `json:"can_fast_zero"`
	CanFlush     bool     `json:"can_flush"`
	CanFUA       bool     `json:"can_fua"`
	CanMultiConn bool     `json:"can_multi_conn"`
	CanTrim      bool     `json:"can_trim"`
	CanZero      bool     `json:"can_zero"`
	BlockMin     int64    `json:"block_size_minimum"`
	BlockPref    int64    `json:"block_size_preferred"`
	BlockMax     int64    `json:"block_size_maximum"`
	Size         int64    `json:"export-size"`
}

func nbdinfo(t *testing.T, args ...string) nbdinfoJSON {
	t.Helper()
	out := run(t, "nbdinfo", append([]string{"--json"}, args...)...)
	var info nbdinfoJSON
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("nbdinfo --json: %v\n%s", err, out)
	}
	return info
}

// rwExport is what nbdinfo must report for a writable RAM volume.
func rwExport(name, desc string, size, min int64) nbdinfoExport {
	return nbdinfoExport{
		Name: name, Description: desc, Contexts: []string{"base:allocation"},
		CanCache: true, CanDF: true, CanFastZero: true, CanFlush: true, CanFUA: true,
		CanMultiConn: true, CanTrim: true, CanZero: true,
		BlockMin: min, BlockPref: 4096, BlockMax: 32 << 20, Size: size,
	}
}

func roExport() nbdinfoExport {
	e := rwExport("ro", "read-only volume", 1<<20, 512)
	e.ReadOnly, e.CanTrim, e.CanZero, e.CanFastZero = true, false, false, false
	return e
}

func TestNbdinfo(t *testing.T) {
	need(t, "nbdinfo")
	s := startServer(t, stdVolumes)
	for _, tc := range []struct {
		uri  string
		want nbdinfoExport
	}{
		{s.URI("vol0"), rwExport("vol0", "scratch volume", 64<<20, 1)},
		// The default export is the first volume, under its canonical name.
		{"nbd://" + s.addr, rwExport("vol0", "scratch volume", 64<<20, 1)},
		{s.URI("ro"), roExport()},
		{s.URI("blk4k"), rwExport("blk4k", "4 KiB blocks", 4<<20, 4096)},
	} {
		info := nbdinfo(t, tc.uri)
		if info.Protocol != "newstyle-fixed" || info.TLS || !info.Structured || len(info.Exports) != 1 {
			t.Fatalf("%s: protocol %q TLS %v structured %v, %d exports", tc.uri, info.Protocol, info.TLS, info.Structured, len(info.Exports))
		}
		if got := info.Exports[0]; !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.uri, got, tc.want)
		}
	}
	// An unknown export is refused.
	r := runFail(t, "nbdinfo", s.URI("nosuch"))
	t.Logf("unknown export: %s", r.stderr)
}

func TestNbdinfoList(t *testing.T) {
	need(t, "nbdinfo")
	s := startServer(t, stdVolumes)
	info := nbdinfo(t, "--list", "nbd://"+s.addr)
	want := []nbdinfoExport{
		rwExport("vol0", "scratch volume", 64<<20, 1),
		roExport(),
		rwExport("blk4k", "4 KiB blocks", 4<<20, 4096),
	}
	if !reflect.DeepEqual(info.Exports, want) {
		t.Errorf("nbdinfo --list:\n got %+v\nwant %+v", info.Exports, want)
	}
}

// mapEntry is one line of `nbdinfo --map --json`.
type mapEntry struct {
	Offset      int64  `json:"offset"`
	Length      int64  `json:"length"`
	Type        int    `json:"type"`
	Description string `json:"description"`
}

func TestNbdinfoMap(t *testing.T) {
	need(t, "nbdinfo")
	s := startServer(t, stdVolumes)
	// Writes, a TRIM, a WRITE_ZEROES and a WRITE of zeros (see the script);
	// a RAM volume frees zeroed pages, so all three read back as holes.
	python(t, "map.py", s.URI("vol0"))
	out := run(t, "nbdinfo", "--map", "--json", s.URI("vol0"))
	var got []mapEntry
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("nbdinfo --map --json: %v\n%s", err, out)
	}
	const K, M = 1 << 10, 1 << 20
	data := func(off, length int64) mapEntry { return mapEntry{off, length, 0, "data"} }
	hole := func(off, length int64) mapEntry { return mapEntry{off, length, 3, "hole,zero"} }
	want := []mapEntry{
		data(0, 256*K),           // written
		hole(256*K, 260*K),       // trimmed 256K-512K, then a page of written zeros
		data(516*K, 508*K),       // rest of the first MiB
		hole(1*M, 7*M),           // never written
		data(8*M, 4*K),           // written ...
		hole(8*M+4*K, 8*K),       // ... then WRITE_ZEROES over two pages
		data(8*M+12*K, 1*M-12*K), // ... rest of that MiB
		hole(9*M, 55*M),          // never written, to the end
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("nbdinfo --map:\n got %+v\nwant %+v", got, want)
	}
}
