package segment

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var writeCorpus = flag.Bool("write-corpus", false, "rewrite the committed fuzz seed corpus under testdata/fuzz")

// seedHeaders returns valid encoded unit headers of a few geometries.
func seedHeaders() [][]byte {
	var out [][]byte
	for i, g := range []Geometry{small, {Data: 1, Parity: 0, AUSize: 8192, WriteUnit: 8192}, {Data: 3, Parity: 2, AUSize: 32 << 10, WriteUnit: 8 << 10}} {
		h := &Header{Shard: i, Data: g.Data, Parity: g.Parity, Size: g.HeaderSize(), WriteUnit: g.WriteUnit, AUSize: g.AUSize,
			Segment: ID(10 + i), Segio: 0, Stamp: 3, SeqLo: 1, SeqHi: 9, Front: 100, Back: 2000, MapOffset: 100, MapCount: 2,
			Members: make([]Member, g.Width()), BlockCRCs: make([]uint32, g.BodyBlocks())}
		for j := range h.Members {
			h.Members[j] = Member{Drive: j, AU: int64(j)}
		}
		buf := make([]byte, g.HeaderSize())
		encodeHeader(buf, h)
		out = append(out, buf)
	}
	return out
}

func writeSeeds(t testing.TB, name string, seeds ...[]byte) {
	dir := filepath.Join("testdata", "fuzz", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range seeds {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%d", i)), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzDecodeHeader: the unit-header decoder never panics, and whatever it
// accepts re-encodes to the same bytes (so it validated every field).
func FuzzDecodeHeader(f *testing.F) {
	seeds := seedHeaders()
	if *writeCorpus {
		writeSeeds(f, "FuzzDecodeHeader", seeds...)
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := DecodeHeader(b)
		if err != nil {
			return
		}
		again := make([]byte, h.Size)
		encodeHeader(again, h)
		n := int64(headerFixed) + int64(memberSize*len(h.Members)) + 4*int64(len(h.BlockCRCs)) + 4
		if string(again[:n]) != string(b[:n]) {
			t.Fatalf("decoded header re-encodes differently")
		}
		// A map decode against it must not panic either.
		_, _ = DecodeMap(h, b)
	})
}

// FuzzDecodeMap: the content-map decoder never panics and accepts only
// entries inside their areas.
func FuzzDecodeMap(f *testing.F) {
	g := small
	h := &Header{Data: g.Data, Parity: g.Parity, Size: g.HeaderSize(), WriteUnit: g.WriteUnit, AUSize: g.AUSize, Front: 300, Back: 40000, MapOffset: 300, MapCount: 2}
	m := make([]byte, 2*entrySize)
	encodeEntry(m, Entry{Kind: Cblock, Offset: 0, Length: 300})
	encodeEntry(m[entrySize:], Entry{Kind: Record, Offset: 40000, Length: 100, SeqLo: 5, SeqHi: 6})
	if *writeCorpus {
		writeSeeds(f, "FuzzDecodeMap", m)
	}
	f.Add(m)
	f.Fuzz(func(t *testing.T, b []byte) {
		hh := *h
		hh.MapCount = uint32(len(b) / entrySize)
		hh.MapCRC = crc(b[:int(hh.MapCount)*entrySize])
		es, err := DecodeMap(&hh, b)
		if err != nil {
			return
		}
		for _, e := range es {
			if e.Kind == Cblock && e.Offset+e.Length > hh.Front || e.Kind == Record && e.Offset < hh.Back {
				t.Fatalf("accepted %+v", e)
			}
		}
	})
}
