package core

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/shalestore/shale/core/cblock"
	"github.com/shalestore/shale/core/segment"
)

func sampleLayouts() [][]byte {
	ls := []segment.Layout{
		{Segment: 3, Members: []segment.Member{{Drive: 0, AU: 5}, {Drive: 1, AU: 5}, {Drive: 2, AU: 7}}},
		{Segment: 9, Members: []segment.Member{{Drive: 2, AU: 1 << 20}, {Drive: 0, AU: 0}, {Drive: 1, AU: 9}}},
	}
	return [][]byte{encodeLayouts(ls), encodeLayouts(nil)}
}

func sampleCatalogs() [][]byte {
	c := &catalog{NextMedium: 5,
		Volumes:   []catVolume{{Name: "vol0", Medium: 3, Size: 1 << 20, Created: time.Unix(1e9, 0).UTC()}, {Name: "c", Medium: 4, Size: 4096, Origin: "vol0@s"}},
		Snapshots: []catSnapshot{{Volume: "vol0", Name: "s", Medium: 1, Size: 1 << 20}},
		Mediums:   []catMedium{{ID: 1, Sectors: 2048, RO: true}, {ID: 3, Parent: 1, Sectors: 2048}, {ID: 4, Parent: 1, Sectors: 8}},
	}
	return [][]byte{c.encode(), (&catalog{NextMedium: 1}).encode()}
}

func sampleAttachments() [][]byte {
	enc, _ := cblock.Encode(nil, bytes.Repeat([]byte("shale"), 1024)[:4096])
	att := []byte{attachVersion}
	att = binary.LittleEndian.AppendUint64(att, 7)
	att = binary.LittleEndian.AppendUint64(att, 4096)
	att = binary.LittleEndian.AppendUint32(att, uint32(len(enc)))
	att = append(att, enc...)
	return [][]byte{att, {attachVersion}}
}

func TestRootsRoundTrip(t *testing.T) {
	for _, b := range sampleLayouts() {
		ls, err := decodeLayouts(b)
		if err != nil {
			t.Fatal(err)
		}
		if again := encodeLayouts(ls); !bytes.Equal(again, b) {
			t.Fatal("layouts re-encode differently")
		}
		for i := range b {
			if _, err := decodeLayouts(b[:i]); i > 0 && err == nil && i != len(b) {
				t.Fatalf("layouts truncated to %d bytes decode", i)
			}
		}
	}
	for _, b := range sampleCatalogs() {
		c, err := decodeCatalog(b)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(c.encode(), b) {
			t.Fatal("catalog re-encodes differently")
		}
	}
	// A catalog that breaks an invariant is refused.
	bad := &catalog{NextMedium: 2, Volumes: []catVolume{{Name: "v", Medium: 7, Size: 512}}}
	if _, err := decodeCatalog(bad.encode()); !errors.Is(err, ErrCorruptRoot) {
		t.Fatalf("catalog naming an unlisted medium: %v", err)
	}
	cyc := &catalog{NextMedium: 3, Mediums: []catMedium{{ID: 1, Parent: 2}, {ID: 2, Parent: 1}}}
	if _, err := decodeCatalog(cyc.encode()); !errors.Is(err, ErrCorruptRoot) {
		t.Fatalf("catalog with a medium cycle: %v", err)
	}
}

func TestGarbageMediums(t *testing.T) {
	c := &catalog{NextMedium: 9,
		Volumes:   []catVolume{{Name: "v", Medium: 5}, {Name: "clone", Medium: 7}},
		Snapshots: []catSnapshot{{Volume: "v", Name: "s", Medium: 4}},
		Mediums: []catMedium{{ID: 1}, {ID: 2, Parent: 1}, {ID: 3, Parent: 2}, {ID: 4, Parent: 3}, {ID: 5, Parent: 4},
			{ID: 6, Parent: 2}, {ID: 7, Parent: 6}, {ID: 8}},
	}
	if got := garbageMediums(c); !reflect.DeepEqual(got, []uint64{8}) {
		t.Fatalf("garbage %v, want [8]", got)
	}
	c.Snapshots = nil
	c.Volumes = c.Volumes[1:]
	if got := garbageMediums(c); !reflect.DeepEqual(got, []uint64{3, 4, 5, 8}) {
		t.Fatalf("garbage %v, want [3 4 5 8]", got)
	}
}

func FuzzDecodeLayouts(f *testing.F) {
	for _, b := range sampleLayouts() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ls, err := decodeLayouts(b)
		if err != nil {
			if !errors.Is(err, ErrCorruptRoot) {
				t.Fatalf("error not ErrCorruptRoot: %v", err)
			}
			return
		}
		again, err := decodeLayouts(encodeLayouts(ls))
		if err != nil || len(again) != len(ls) {
			t.Fatalf("re-encoded layouts: %v", err)
		}
	})
}

func FuzzDecodeCatalog(f *testing.F) {
	for _, b := range sampleCatalogs() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeCatalog(b)
		if err != nil {
			if !errors.Is(err, ErrCorruptRoot) {
				t.Fatalf("error not ErrCorruptRoot: %v", err)
			}
			return
		}
		garbageMediums(c) // must terminate: parents have smaller ids
		if _, err := decodeCatalog(c.encode()); err != nil {
			t.Fatalf("re-encoded catalog: %v", err)
		}
	})
}

func FuzzAttachment(f *testing.F) {
	for _, b := range sampleAttachments() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = eachAttached(b, func(addr segment.Addr, payload []byte) error {
			if int(addr.Length) != len(payload) || addr.Length <= 0 {
				t.Fatalf("item %v with %d bytes", addr, len(payload))
			}
			return nil
		})
	})
}

// TestWriteSeedCorpus regenerates the committed seed corpora when
// SHALE_WRITE_CORPUS=1.
func TestWriteSeedCorpus(t *testing.T) {
	if os.Getenv("SHALE_WRITE_CORPUS") != "1" {
		t.Skip("set SHALE_WRITE_CORPUS=1 to regenerate the seed corpus")
	}
	write := func(fuzz string, i int, b []byte) {
		dir := filepath.Join("testdata", "fuzz", fuzz)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, b := range sampleLayouts() {
		write("FuzzDecodeLayouts", i, b)
	}
	for i, b := range sampleCatalogs() {
		write("FuzzDecodeCatalog", i, b)
	}
	for i, b := range sampleAttachments() {
		write("FuzzAttachment", i, b)
	}
}
