package main

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// random returns n incompressible bytes from seed.
func random(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// text returns n bytes of a repeated line: compresses to far under 512 B
// per 4 KiB block.
func text(n int) []byte {
	return bytes.Repeat([]byte("shale stores volumes on drives.\n"), n/32+1)[:n]
}

func TestReduce(t *testing.T) {
	r1 := random(1, blockBytes)
	r2 := random(2, blockBytes)
	tx := text(blockBytes)
	zero := make([]byte, blockBytes)
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

	tests := []struct {
		name  string
		files [][]byte
		want  Result
	}{
		{"empty", [][]byte{{}}, Result{}},
		{"zeros are free", [][]byte{cat(zero, zero, zero)},
			Result{Blocks: 3, ZeroBlocks: 3}},
		{"one random block stored raw", [][]byte{r1},
			Result{Blocks: 1, UniqueBlocks: 1, RawBlocks: 1, LogicalBytes: 4096, PhysicalBytes: 4096, DedupRatio: 1, DataReduction: 1}},
		{"duplicates stored once", [][]byte{cat(r1, r1, r2, r1)},
			Result{Blocks: 4, UniqueBlocks: 2, RawBlocks: 2, LogicalBytes: 4 * 4096, PhysicalBytes: 2 * 4096, DedupRatio: 2, DataReduction: 2}},
		{"dedup across files", [][]byte{cat(r1, zero), cat(zero, r1, r2)},
			Result{Blocks: 5, ZeroBlocks: 2, UniqueBlocks: 2, RawBlocks: 2, LogicalBytes: 3 * 4096, PhysicalBytes: 2 * 4096, DedupRatio: 1.5, DataReduction: 1.5}},
		// Text compresses to one 512 B sector.
		{"compressible rounds to a sector", [][]byte{tx},
			Result{Blocks: 1, UniqueBlocks: 1, LogicalBytes: 4096, PhysicalBytes: 512, DedupRatio: 1, DataReduction: 8}},
		// Half random, half text: compresses to a bit over 2 KiB, so 2560
		// after rounding; saves more than 1/8 so it is kept compressed.
		{"half compressible rounds up", [][]byte{cat(r1[:2048], tx[:2048])},
			Result{Blocks: 1, UniqueBlocks: 1, LogicalBytes: 4096, PhysicalBytes: 2560, DedupRatio: 1, DataReduction: 4096.0 / 2560}},
		// 1/16 text saves too little: raw.
		{"too little saving stays raw", [][]byte{cat(r1[:3840], tx[:256])},
			Result{Blocks: 1, UniqueBlocks: 1, RawBlocks: 1, LogicalBytes: 4096, PhysicalBytes: 4096, DedupRatio: 1, DataReduction: 1}},
		// A short tail is padded with zeros: r1's first 100 bytes then
		// zeros is one block, not equal to r1.
		{"short tail padded", [][]byte{cat(r1, r1[:100])},
			Result{Blocks: 2, UniqueBlocks: 2, RawBlocks: 1, LogicalBytes: 2 * 4096, PhysicalBytes: 4096 + 512, DedupRatio: 1, DataReduction: 8192.0 / 4608}},
		// A copy shifted by 512 B shares no 4 KiB block: the case
		// shale's sector-granular dedup is meant to beat.
		{"misaligned copy does not dedup", [][]byte{cat(r1, r2), cat(r1[:512], r1, r2[:3584])},
			Result{Blocks: 4, UniqueBlocks: 4, RawBlocks: 4, LogicalBytes: 4 * 4096, PhysicalBytes: 4 * 4096, DedupRatio: 1, DataReduction: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newReducer()
			for _, f := range tc.files {
				if err := r.AddReader(bytes.NewReader(f)); err != nil {
					t.Fatal(err)
				}
			}
			if got := r.Result(); got.Blocks != tc.want.Blocks || got.ZeroBlocks != tc.want.ZeroBlocks ||
				got.UniqueBlocks != tc.want.UniqueBlocks || got.RawBlocks != tc.want.RawBlocks ||
				got.LogicalBytes != tc.want.LogicalBytes || got.PhysicalBytes != tc.want.PhysicalBytes ||
				got.DedupRatio != tc.want.DedupRatio || got.DataReduction != tc.want.DataReduction {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestAddRejectsShortBlock(t *testing.T) {
	if err := newReducer().Add(make([]byte, 512)); err == nil {
		t.Fatal("Add of 512 bytes: no error")
	}
}

func TestRunJSON(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	r1 := random(3, blockBytes)
	if err := os.WriteFile(a, append(append([]byte{}, r1...), make([]byte, blockBytes)...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, r1, 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run([]string{a, b}, true, &out); err != nil {
		t.Fatal(err)
	}
	var res Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if res.LogicalBytes != 8192 || res.PhysicalBytes != 4096 || res.DataReduction != 2 || len(res.Files) != 2 {
		t.Errorf("got %+v", res)
	}
	if err := run([]string{filepath.Join(dir, "missing")}, false, &out); err == nil {
		t.Error("missing file: no error")
	}
}
