package page

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestDocExample(t *testing.T) {
	var e Encoder
	buf, err := e.Encode(nil, []uint64{7, 100, 7, 164, 7, 228}, 2, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	dict := []byte{0, 0, 1, 7, 0, 1, 1, 64, 100}
	if len(buf) != HeaderSize+len(dict) || !bytes.Equal(buf[HeaderSize:], dict) {
		t.Fatalf("page %x, want header then dictionary %x", buf, dict)
	}
	p, err := Decode(buf)
	if err != nil {
		t.Fatal(err)
	}
	if p.TupleBits() != 0 || p.Value(2, 1) != 228 || p.Value(1, 0) != 7 {
		t.Fatalf("T=%d v(2,1)=%d v(1,0)=%d", p.TupleBits(), p.Value(2, 1), p.Value(1, 0))
	}
}

// gen makes n tuples of nf fields with nk strictly increasing key fields,
// each field drawn from a distribution named by kind.
func gen(rng *rand.Rand, n, nf, nk int, kinds []string) []uint64 {
	rows := make([]uint64, n*nf)
	for f := 0; f < nf; f++ {
		kind := kinds[f%len(kinds)]
		base := rng.Uint64()
		for i := 0; i < n; i++ {
			var v uint64
			switch kind {
			case "const":
				v = base
			case "seq":
				v = base + uint64(i)*64
			case "small":
				v = uint64(rng.IntN(16))
			case "random":
				v = rng.Uint64()
			case "cluster":
				v = uint64(rng.IntN(4))<<40 + uint64(rng.IntN(1000))
			case "walk":
				v = base + uint64(i)*16000 + uint64(rng.IntN(8000))
			case "max":
				v = math.MaxUint64 - uint64(rng.IntN(3))
			}
			rows[i*nf+f] = v
		}
	}
	// Make the keys strictly increasing: sort by key, then drop duplicates.
	type row []uint64
	rs := make([]row, n)
	for i := range rs {
		rs[i] = rows[i*nf : (i+1)*nf]
	}
	slices.SortFunc(rs, func(a, b row) int { return slices.Compare(a[:nk], b[:nk]) })
	out := make([]uint64, 0, len(rows))
	for i, r := range rs {
		if i > 0 && slices.Equal(rs[i-1][:nk], r[:nk]) {
			continue
		}
		out = append(out, r...)
	}
	return out
}

var kindSets = [][]string{
	{"const"}, {"seq"}, {"small"}, {"random"}, {"cluster"}, {"walk"}, {"max"},
	{"const", "seq", "const", "walk", "small", "const"}, // a block map
	{"cluster", "random", "seq"},
	{"small", "small", "random"},
}

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var e Encoder
	for it := 0; it < 300; it++ {
		nf := 1 + rng.IntN(8)
		nk := 1 + rng.IntN(nf)
		n := []int{0, 1, 2, 3, 5, 17, 100, 1000}[rng.IntN(8)]
		kinds := kindSets[rng.IntN(len(kindSets))]
		rows := gen(rng, n, nf, nk, kinds)
		n = len(rows) / nf
		buf, err := e.Encode([]byte("prefix"), rows, nf, nk, uint64(it))
		if err != nil {
			t.Fatalf("it %d: %v", it, err)
		}
		if string(buf[:6]) != "prefix" {
			t.Fatal("prefix clobbered")
		}
		if got := e.Size(rows, nf); got != len(buf)-6 {
			t.Fatalf("Size %d, encoded %d", got, len(buf)-6)
		}
		// Decode from a longer buffer: the page knows its length.
		p, err := Decode(append(buf[6:], 0xff, 0xff))
		if err != nil {
			t.Fatalf("it %d (%v, n=%d nf=%d nk=%d): %v", it, kinds, n, nf, nk, err)
		}
		if p.Len() != n || p.Fields() != nf || p.Keys() != nk || p.Tag() != uint64(it) {
			t.Fatalf("shape %d/%d/%d/%d", p.Len(), p.Fields(), p.Keys(), p.Tag())
		}
		for i := 0; i < n; i++ {
			got := p.Tuple(i, nil)
			if !slices.Equal(got, rows[i*nf:(i+1)*nf]) {
				t.Fatalf("it %d tuple %d: %v, want %v", it, i, got, rows[i*nf:(i+1)*nf])
			}
		}
		checkSearch(t, rng, p, rows, nf, nk)
		checkFindEqual(t, rng, p, rows, nf)
	}
}

func checkSearch(t *testing.T, rng *rand.Rand, p *Page, rows []uint64, nf, nk int) {
	t.Helper()
	n := len(rows) / nf
	for k := 0; k < 20; k++ {
		plen := 1 + rng.IntN(nk)
		probe := make([]uint64, plen)
		if n > 0 && rng.IntN(2) == 0 {
			copy(probe, rows[rng.IntN(n)*nf:])
			if rng.IntN(2) == 0 {
				probe[plen-1] += uint64(rng.IntN(3)) - 1
			}
		} else {
			for i := range probe {
				probe[i] = rng.Uint64()
			}
		}
		ge, gt := n, n
		for i := n - 1; i >= 0; i-- {
			c := slices.Compare(rows[i*nf:i*nf+plen], probe)
			if c >= 0 {
				ge = i
			}
			if c > 0 {
				gt = i
			}
		}
		if got := p.SearchGE(probe); got != ge {
			t.Fatalf("SearchGE(%v) = %d, want %d", probe, got, ge)
		}
		if got := p.SearchGT(probe); got != gt {
			t.Fatalf("SearchGT(%v) = %d, want %d", probe, got, gt)
		}
	}
}

func checkFindEqual(t *testing.T, rng *rand.Rand, p *Page, rows []uint64, nf int) {
	t.Helper()
	n := len(rows) / nf
	for k := 0; k < 10; k++ {
		f := rng.IntN(nf)
		v := rng.Uint64()
		if n > 0 && rng.IntN(4) != 0 {
			v = rows[rng.IntN(n)*nf+f] + uint64(rng.IntN(3)) - 1
		}
		from := rng.IntN(n + 1)
		want := n
		for i := from; i < n; i++ {
			if rows[i*nf+f] == v {
				want = i
				break
			}
		}
		if got := p.FindEqual(f, v, from); got != want {
			t.Fatalf("FindEqual(%d, %d, %d) = %d, want %d", f, v, from, got, want)
		}
	}
}

func TestEncodeRejectsUnsortedKeys(t *testing.T) {
	var e Encoder
	for _, rows := range [][]uint64{{1, 0, 1, 0}, {2, 0, 1, 0}} {
		if _, err := e.Encode(nil, rows, 2, 1, 0); err == nil {
			t.Fatalf("%v: no error", rows)
		}
	}
	if _, err := e.Encode(nil, []uint64{1, 2, 3}, 2, 1, 0); err == nil {
		t.Fatal("ragged rows: no error")
	}
}

// TestCorruptionDetected flips every bit of a page in turn: each flip must
// be reported as ErrCorrupt.
func TestCorruptionDetected(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var e Encoder
	rows := gen(rng, 40, 4, 2, kindSets[7])
	buf, err := e.Encode(nil, rows, 4, 2, 99)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(buf)*8; i++ {
		b := slices.Clone(buf)
		b[i/8] ^= 1 << (i % 8)
		if _, err := Decode(b); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("bit %d flipped: err %v", i, err)
		}
	}
	for l := 0; l < len(buf); l++ {
		if _, err := Decode(buf[:l]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d: err %v", l, err)
		}
	}
}

// fixCRC rewrites the length and checksum of a candidate page so the
// structural checks behind them get exercised.
func fixCRC(b []byte) []byte {
	if len(b) < HeaderSize {
		return b
	}
	b = slices.Clone(b)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(b)))
	sum := crc32.Update(crc32.Checksum(b[:24], castagnoli), castagnoli, b[28:])
	binary.LittleEndian.PutUint32(b[24:], sum)
	return b
}

// TestStructureChecks corrupts structure under a valid checksum.
func TestStructureChecks(t *testing.T) {
	var e Encoder
	good, err := e.Encode(nil, []uint64{1, 5, 2, 9, 3, 1000, 4, 7}, 2, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(b []byte) []byte{
		"fields 0":      func(b []byte) []byte { b[3] = 0; return b },
		"keys > fields": func(b []byte) []byte { b[4] = 3; return b },
		"reserved":      func(b []byte) []byte { b[6] = 1; return b },
		"more tuples":   func(b []byte) []byte { b[12]++; return b },
		"width 65":      func(b []byte) []byte { b[HeaderSize] = 65; return b },
		"flags":         func(b []byte) []byte { b[HeaderSize+1] = 4; return b },
		"extra byte":    func(b []byte) []byte { return append(b, 0) },
		"short":         func(b []byte) []byte { return b[:len(b)-1] },
		"equal keys": func([]byte) []byte {
			// Two tuples distinct in two key fields, then claim one key.
			q, _ := e.Encode(nil, []uint64{1, 5, 1, 6}, 2, 2, 0)
			q[4] = 1
			return q
		},
	}
	for name, mutate := range cases {
		b := fixCRC(mutate(slices.Clone(good)))
		if _, err := Decode(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err %v", name, err)
		}
	}
	if _, err := Decode(fixCRC(slices.Clone(good))); err != nil {
		t.Fatalf("fixCRC broke a good page: %v", err)
	}
}

func TestFit(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var e Encoder
	for _, kinds := range kindSets {
		for _, limit := range []int{MinPageBytes, 4096, 32768} {
			rows := gen(rng, 20000, 6, 2, kinds)
			n := e.Fit(rows, 6, limit)
			if n < 1 {
				t.Fatalf("%v/%d: Fit %d", kinds, limit, n)
			}
			size := e.Size(rows[:n*6], 6)
			if size > limit {
				t.Fatalf("%v/%d: Fit %d tuples, %d bytes", kinds, limit, n, size)
			}
			if n*6 < len(rows) {
				if more := e.Size(rows[:(n+1)*6], 6); size*10 < limit*9 && more <= limit {
					t.Fatalf("%v/%d: Fit %d tuples fill %d bytes; %d tuples would fit in %d", kinds, limit, n, size, n+1, more)
				}
			}
		}
	}
}

// TestBlockMapDensity checks the claim the pyramid relies on: a page of
// back-to-back block-map runs costs little per tuple.
func TestBlockMapDensity(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	const nf = 8
	var rows []uint64
	off := uint64(0)
	for i := 0; i < 4000; i++ {
		clen := uint64(8192 + rng.IntN(24577))
		// medium, lba, len, kind, segment, offset, cblock bytes, sector
		rows = append(rows, 5, uint64(i)*64, 64, 0, 100, off, clen, 0)
		off += clen
	}
	var e Encoder
	total, tuples := 0, 0
	for len(rows) > 0 {
		n := e.Fit(rows, nf, 4096)
		buf, err := e.Encode(nil, rows[:n*nf], nf, 2, 0)
		if err != nil {
			t.Fatal(err)
		}
		total += len(buf)
		tuples += n
		rows = rows[n*nf:]
	}
	bpt := float64(total) / float64(tuples)
	t.Logf("%d tuples in %d bytes: %.2f bytes per tuple", tuples, total, bpt)
	if bpt > 8 {
		t.Fatalf("%.2f bytes per block-map tuple, want ≤ 8", bpt)
	}
}

func FuzzDecode(f *testing.F) {
	rng := rand.New(rand.NewPCG(9, 10))
	var e Encoder
	for i, kinds := range kindSets {
		rows := gen(rng, 1+i*3, 3, 2, kinds)
		buf, err := e.Encode(nil, rows, 3, 2, uint64(i))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(buf, false)
	}
	f.Fuzz(func(t *testing.T, b []byte, fix bool) {
		if fix {
			b = fixCRC(b)
		}
		p, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not ErrCorrupt: %v", err)
			}
			return
		}
		// A page that decodes is usable everywhere and re-encodes to the
		// same tuples.
		rows := make([]uint64, 0, p.Len()*p.Fields())
		for i := 0; i < p.Len(); i++ {
			rows = p.Tuple(i, rows)
		}
		var enc Encoder
		again, err := enc.Encode(nil, rows, p.Fields(), p.Keys(), p.Tag())
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		q, err := Decode(again)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		for i := 0; i < p.Len(); i++ {
			if !slices.Equal(q.Tuple(i, nil), rows[i*p.Fields():(i+1)*p.Fields()]) {
				t.Fatalf("tuple %d changed", i)
			}
		}
		probe := make([]uint64, p.Keys())
		for i := range probe {
			probe[i] = uint64(len(b)) << (i * 8)
		}
		_ = p.SearchGE(probe)
		_ = p.SearchGT(probe[:1])
		for f := 0; f < p.Fields(); f++ {
			_ = p.FindEqual(f, uint64(len(b)), 0)
		}
	})
}

// TestWriteSeedCorpus regenerates testdata/fuzz/FuzzDecode when
// SHALE_WRITE_CORPUS=1; the corpus is committed.
func TestWriteSeedCorpus(t *testing.T) {
	if os.Getenv("SHALE_WRITE_CORPUS") != "1" {
		t.Skip("set SHALE_WRITE_CORPUS=1 to regenerate the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(11, 12))
	var e Encoder
	write := func(name string, b []byte, fix bool) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nbool(%v)\n", b, fix)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, kinds := range kindSets {
		rows := gen(rng, 1+i*7, 4, 2, kinds)
		buf, err := e.Encode(nil, rows, 4, 2, uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		write(fmt.Sprintf("page-%02d", i), buf, false)
		trunc := buf[:len(buf)*2/3]
		write(fmt.Sprintf("truncated-%02d", i), trunc, true)
	}
	empty, _ := e.Encode(nil, nil, 3, 1, 0)
	write("empty", empty, false)
	write("header-only", make([]byte, HeaderSize), true)
}

// blockMapRows returns n back-to-back block-map runs of a sequentially
// written volume: 64-sector cblocks compressed to 8-32 KiB.
func blockMapRows(n int) []uint64 {
	rng := rand.New(rand.NewPCG(13, 14))
	rows := make([]uint64, 0, n*8)
	off := uint64(0)
	for i := 0; i < n; i++ {
		clen := uint64(8192 + rng.IntN(24577))
		rows = append(rows, 5, uint64(i)*64, 64, 0, 100, off, clen, 0)
		off += clen
	}
	return rows
}

func BenchmarkEncodeBlockMap4K(b *testing.B) {
	rows := blockMapRows(100000)
	var e Encoder
	var buf []byte
	b.ReportAllocs()
	tuples := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := rows
		for len(r) > 0 {
			n := e.Fit(r, 8, 4096)
			var err error
			buf, err = e.Encode(buf[:0], r[:n*8], 8, 2, 0)
			if err != nil {
				b.Fatal(err)
			}
			tuples += n
			r = r[n*8:]
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(tuples), "ns/tuple")
}

func BenchmarkSearchBlockMap4K(b *testing.B) {
	rows := blockMapRows(100000)
	var e Encoder
	n := e.Fit(rows, 8, 4096)
	buf, err := e.Encode(nil, rows[:n*8], 8, 2, 0)
	if err != nil {
		b.Fatal(err)
	}
	p, err := Decode(buf)
	if err != nil {
		b.Fatal(err)
	}
	probe := []uint64{5, 0}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		probe[1] = uint64(i%n) * 64
		if j := p.SearchGT(probe) - 1; j != i%n {
			b.Fatalf("found %d want %d", j, i%n)
		}
	}
}

func BenchmarkDecodeBlockMap4K(b *testing.B) {
	rows := blockMapRows(100000)
	var e Encoder
	n := e.Fit(rows, 8, 4096)
	buf, _ := e.Encode(nil, rows[:n*8], 8, 2, 0)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := Decode(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// TestEncodeChecksPlan changes rows between Fit and Encode: Encode must
// notice rather than write a page that decodes to other values.
func TestEncodeChecksPlan(t *testing.T) {
	var e Encoder
	rows := []uint64{1, 10, 2, 11, 3, 12, 4, 13}
	n := e.Fit(rows, 2, MinPageBytes)
	rows[3] = 1 << 40
	if _, err := e.Encode(nil, rows[:n*2], 2, 1, 0); err == nil {
		t.Fatal("no error")
	}
	rows[3] = 11
	e.Fit(rows, 2, MinPageBytes)
	rows[3] = 0
	if _, err := e.Encode(nil, rows[:n*2], 2, 1, 0); err == nil {
		t.Fatal("no error")
	}
}

func BenchmarkValueBlockMap4K(b *testing.B) {
	rows := blockMapRows(100000)
	var e Encoder
	n := e.Fit(rows, 8, 4096)
	buf, _ := e.Encode(nil, rows[:n*8], 8, 2, 0)
	p, _ := Decode(buf)
	b.ReportAllocs()
	var sink uint64
	for i := 0; i < b.N; i++ {
		sink += p.Value(i%n, 5)
	}
	_ = sink
}
