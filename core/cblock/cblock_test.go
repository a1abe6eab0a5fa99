package cblock

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

// data returns n bytes: kind "random" (incompressible), "text" (compresses
// a few times), "zero" or "half" (half random, half zeros).
func data(rng *rand.Rand, kind string, n int) []byte {
	p := make([]byte, n)
	switch kind {
	case "random":
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
	case "text":
		words := []string{"shale ", "segment ", "medium ", "pyramid ", "cblock ", "elide ", "\n"}
		for i := 0; i < n; {
			i += copy(p[i:], words[rng.IntN(len(words))])
		}
	case "half":
		for i := range p[:n/2] {
			p[i] = byte(rng.Uint32())
		}
	}
	return p
}

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, kind := range []string{"random", "text", "zero", "half"} {
		for _, sectors := range []int{1, 2, 7, 8, 31, 64} {
			p := data(rng, kind, sectors*SectorSize)
			enc, err := Encode(nil, p)
			if err != nil {
				t.Fatal(err)
			}
			h, err := ParseHeader(enc)
			if err != nil {
				t.Fatal(err)
			}
			if h.Sectors != sectors {
				t.Fatalf("%s/%d: header says %d sectors", kind, sectors, h.Sectors)
			}
			if len(enc) > MaxEncoded || len(enc) > HeaderSize+len(p) {
				t.Fatalf("%s/%d: encoded %d bytes", kind, sectors, len(enc))
			}
			switch kind {
			case "random":
				if h.Compressed {
					t.Errorf("%s/%d: random data stored compressed", kind, sectors)
				}
			case "text", "zero":
				if !h.Compressed || len(enc) > HeaderSize+len(p)*7/8 {
					t.Errorf("%s/%d: compressible data stored in %d bytes (compressed %v)", kind, sectors, len(enc), h.Compressed)
				}
			}
			out := make([]byte, MaxLogical)
			n, err := Decode(out, enc)
			if err != nil {
				t.Fatalf("%s/%d: %v", kind, sectors, err)
			}
			if !bytes.Equal(out[:n], p) {
				t.Fatalf("%s/%d: round trip differs", kind, sectors)
			}
		}
	}
}

func TestEncodeBadSize(t *testing.T) {
	for _, n := range []int{0, 1, 511, 513, MaxLogical + 512} {
		if _, err := Encode(nil, make([]byte, n)); !errors.Is(err, ErrSize) {
			t.Errorf("Encode of %d bytes: %v, want ErrSize", n, err)
		}
	}
}

// TestCorruption flips every bit of encoded cblocks in turn: a decode
// either fails with ErrCorrupt or returns exactly the original data,
// never other data.
func TestCorruption(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	out := make([]byte, MaxLogical)
	for _, kind := range []string{"random", "text"} {
		p := data(rng, kind, 4096)
		enc, _ := Encode(nil, p)
		for bit := 0; bit < len(enc)*8; bit++ {
			bad := bytes.Clone(enc)
			bad[bit/8] ^= 1 << (bit % 8)
			n, err := Decode(out, bad)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%s bit %d: %v, want ErrCorrupt", kind, bit, err)
				}
				continue
			}
			if !bytes.Equal(out[:n], p) {
				t.Fatalf("%s bit %d: decode returned other data without error", kind, bit)
			}
		}
		// Truncations.
		for l := 0; l < len(enc); l++ {
			if _, err := Decode(out, enc[:l]); err == nil {
				t.Fatalf("%s truncated to %d: no error", kind, l)
			}
		}
	}
}

func TestDecodeShortDst(t *testing.T) {
	enc, _ := Encode(nil, make([]byte, 4096))
	if _, err := Decode(make([]byte, 4095), enc); err == nil {
		t.Fatal("decode into a short buffer succeeded")
	}
}

func TestNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	rng := rand.New(rand.NewPCG(5, 6))
	p := data(rng, "text", MaxLogical)
	dst := make([]byte, 0, MaxEncoded)
	out := make([]byte, MaxLogical)
	enc, _ := Encode(dst, p) // warm the pool
	if _, err := Decode(out, enc); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		e, _ := Encode(dst[:0], p)
		if _, err := Decode(out, e); err != nil {
			t.Fatal(err)
		}
	})
	// sync.Pool may drop its contents at a GC; allow a rare refill.
	if allocs > 0.1 {
		t.Fatalf("%.2f allocations per encode+decode", allocs)
	}
}

func FuzzDecode(f *testing.F) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, kind := range []string{"random", "text", "zero"} {
		enc, _ := Encode(nil, data(rng, kind, 1024))
		f.Add(enc)
	}
	f.Fuzz(func(t *testing.T, enc []byte) {
		out := make([]byte, MaxLogical)
		n, err := Decode(out, enc)
		if err != nil {
			return
		}
		// A valid cblock re-encodes to something that decodes the same.
		again, err := Encode(nil, out[:n])
		if err != nil {
			t.Fatal(err)
		}
		out2 := make([]byte, MaxLogical)
		n2, err := Decode(out2, again)
		if err != nil || !bytes.Equal(out[:n], out2[:n2]) {
			t.Fatalf("re-encode round trip: %v", err)
		}
	})
}

func benchData(kind string, n int) []byte { return data(rand.New(rand.NewPCG(9, 9)), kind, n) }

func BenchmarkEncode(b *testing.B) {
	for _, bc := range []struct {
		name, kind string
		n          int
	}{{"4K/text", "text", 4096}, {"32K/text", "text", MaxLogical}, {"4K/random", "random", 4096}, {"32K/random", "random", MaxLogical}} {
		b.Run(bc.name, func(b *testing.B) {
			p := benchData(bc.kind, bc.n)
			dst := make([]byte, 0, MaxEncoded)
			b.SetBytes(int64(bc.n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Encode(dst[:0], p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, bc := range []struct {
		name, kind string
		n          int
	}{{"4K/text", "text", 4096}, {"32K/text", "text", MaxLogical}, {"4K/random", "random", 4096}, {"32K/random", "random", MaxLogical}} {
		b.Run(bc.name, func(b *testing.B) {
			enc, _ := Encode(nil, benchData(bc.kind, bc.n))
			out := make([]byte, MaxLogical)
			b.SetBytes(int64(bc.n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode(out, enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
