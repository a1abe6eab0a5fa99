package cblock

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/DataDog/zstd"
)

// probeCase builds n bytes of one kind of data.
func probeCase(rng *rand.Rand, kind string, n int) []byte {
	p := make([]byte, n)
	fill := func(q []byte) {
		for i := range q {
			q[i] = byte(rng.Uint32())
		}
	}
	switch kind {
	case "random":
		fill(p)
	case "random-sector-twice": // LZ-compressible, high byte entropy
		fill(p[:n/2])
		copy(p[n/2:], p[:n/2])
	case "random-7/8-zero-tail":
		fill(p[:n-n/8])
	case "random-3/4-text-tail":
		fill(p[:n*3/4])
		copy(p[n*3/4:], data(rng, "text", n/4))
	case "text":
		copy(p, data(rng, "text", n))
	case "zero":
	case "half":
		fill(p[:n/2])
	case "base64": // 6 bits per byte: entropy coding saves 1/4
		const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
		for i := range p {
			p[i] = alphabet[rng.IntN(64)]
		}
	case "hex": // 4 bits per byte
		for i := range p {
			p[i] = "0123456789abcdef"[rng.IntN(16)]
		}
	case "lanes": // random but for less random byte lanes at fixed
		// strides, with the per-lane entropies measured on fio's default
		// write buffers: the first byte of every 8-byte word about 7 bits,
		// the first 8 bytes of every 128 about 6 (the first 4); 7.9 bits
		// per byte over all, which zstd cannot use (it saves ~1 %)
		fill(p)
		for i := 0; i < n; i += 8 {
			p[i] = byte(rng.IntN(128))
		}
		for i := 0; i < n; i += 128 {
			p[i] = byte(rng.IntN(16))
			for j := 1; j < 8; j++ {
				p[i+j] = byte(rng.IntN(64))
			}
		}
	case "sector-headers": // random sectors behind a 24-byte header of
		// mostly zero bytes, like fio's 4 KiB buffers: 7.5 bits per byte
		fill(p)
		for s := 0; s+SectorSize <= n; s += SectorSize {
			clear(p[s+3 : s+8])
			clear(p[s+48 : s+56])
			clear(p[s+60 : s+64])
		}
	case "7-bit": // bytes below 128: order-0 coding saves 1/8 at best
		for i := range p {
			p[i] = byte(rng.IntN(128))
		}
	case "skewed": // bytes from a small-ish, uneven alphabet: ~7 bits
		for i := range p {
			p[i] = byte(rng.IntN(200) * rng.IntN(200) / 160)
		}
	default:
		panic(kind)
	}
	return p
}

// TestProbeAgreesWithZstd: wherever zstd at the inline level would save
// the 1/8 Encode needs, worthCompressing must say yes (a wrong "no" loses
// compression); on random data it must say no (that is its point).
func TestProbeAgreesWithZstd(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	kinds := []string{"random", "random-sector-twice", "random-7/8-zero-tail", "random-3/4-text-tail", "text", "zero", "half", "base64", "hex", "skewed", "lanes", "sector-headers", "7-bit"}
	for _, kind := range kinds {
		for _, sectors := range []int{1, 2, 8, 16, 64} {
			t.Run(fmt.Sprintf("%s/%d", kind, sectors), func(t *testing.T) {
				for trial := range 20 {
					p := probeCase(rng, kind, sectors*SectorSize)
					z, err := zstd.CompressLevel(nil, p, Level)
					if err != nil {
						t.Fatal(err)
					}
					pays := len(z) <= len(p)-len(p)/8
					got := worthCompressing(p)
					if pays && !got {
						t.Fatalf("trial %d: zstd saves %d of %d bytes but the probe says not worth it", trial, len(p)-len(z), len(p))
					}
					if kind == "random" && sectors >= probeMinSectors && got {
						t.Fatalf("trial %d: random data judged worth compressing", trial)
					}
					// Random-looking data with structure zstd cannot use
					// (it saves under 1/16) must not cost a zstd call.
					if (kind == "lanes" || kind == "sector-headers") && sectors >= probeMinSectors && got && len(z) > len(p)-len(p)/16 {
						t.Fatalf("trial %d: zstd saves only %d of %d bytes but the probe says worth it", trial, len(p)-len(z), len(p))
					}
				}
			})
		}
	}
}

func BenchmarkProbe(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{4096, MaxLogical} {
		p := probeCase(rng, "random", n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				worthCompressing(p)
			}
		})
	}
}

// TestProbeNoise: on uniformly random data the estimated saving stays far
// below probeMinSaving, so random data is never sent to zstd by chance
// (the probe's whole point).
func TestProbeNoise(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, sectors := range []int{8, 9, 16, 33, 64} {
		for trial := range 500 {
			p := probeCase(rng, "random", sectors*SectorSize)
			if worthCompressing(p) {
				t.Fatalf("%d sectors, trial %d: random data judged worth compressing", sectors, trial)
			}
		}
	}
}
