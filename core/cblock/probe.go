package cblock

import (
	"encoding/binary"
	"math"
	"math/bits"
)

// Deciding not to compress.
//
// zstd at the inline level costs about 22 µs per 4 KiB of random data and
// finds nothing to save, and random-looking data (encrypted, already
// compressed: media, archives, database pages of compressed tables) is
// common. worthCompressing looks at a sample instead: four 16-byte chunks
// of every 512-byte sector, 128 bytes apart, one eighth of the data,
// spread over it. The chunks' phase within their 128 bytes turns with the
// sector (probePhase), so the eight sectors of a region sample every
// 16-byte lane once: data whose bytes are less random at some fixed
// strides (fio's default buffers: the first bytes of every 128) are not
// over-sampled there and mistaken for compressible. Cblocks under
// probeMinSectors are compressed without asking: zstd is cheap on them and
// a sample of a few sectors says little. It says no only when all hold:
//
//   - fewer than 1/probeNarrowShare of the sectors are narrow: nearly all
//     bytes of their sample are below 0x80, and
//
//   - entropy coding could save less than probeMinSaving: the sample's
//     order-0 entropy, estimated per region of a few sectors (so a
//     compressible head or tail shows) and corrected for the small-sample
//     bias (Miller–Madow), is close to 8 bits per byte everywhere, and
//
//   - no 8-byte window at fixed offsets of each sector (0, 128, 256, 384)
//     repeats: repeats are what LZ matching finds in high-entropy data,
//     e.g. a random sector written twice.
//
// A wrong "no" costs compression ratio, never correctness; a wrong "yes"
// costs one zstd call, as before. TestProbeAgreesWithZstd measures both
// against zstd itself on several kinds of data.
const (
	probeMinSectors  = 8
	probeChunks      = 4   // chunks sampled per sector
	probeChunkBytes  = 16  // bytes per chunk
	probeChunkStride = 128 // offset between a sector's chunks
	probeSampleBytes = probeChunks * probeChunkBytes
	// probeRegionSectors sectors share a histogram (512 sampled bytes:
	// fewer make the entropy estimate of random data too noisy).
	probeRegionSectors = 8
	// probeMinSaving: the estimated saving (a fraction) above which zstd
	// is tried. Uniform random bytes estimate about 1 %, at most 3 % in
	// 2000 trials (TestProbeNoise); fio's default 4 KiB buffers (zero
	// bytes in a header per sector) 7.5 %, which zstd turns into 8–10 %;
	// zstd needs 12.5 % to be kept. Data that order-0 coding alone would
	// not bring near 12.5 % needs LZ matches, which hasRepeats looks for.
	probeMinSaving = 0.10
	probeTableSize = 512 // ≥ 2 × probeChunks × MaxSectors windows
	// A sector is narrow when at most probeNarrowHigh of its 64 sampled
	// bytes have the top bit set: text, UTF-16, small numbers, sparse
	// structures. Random bytes give 32 ± 4, fio's default buffers about
	// as many. When two and 1/probeNarrowShare of the sectors are narrow,
	// zstd is tried: a few narrow sectors among random ones (a text tail)
	// hardly move the region's order-0 estimate, yet zstd saves on them.
	probeNarrowHigh  = 8
	probeNarrowShare = 8
)

// topBits selects the top bit of each byte of a word.
const topBits = 0x8080808080808080

// xlog2x[c] is c·log2(c), for c up to a whole sample of MaxSectors.
var xlog2x = func() (t [MaxSectors*probeSampleBytes + 1]float64) {
	for c := 1; c < len(t); c++ {
		t[c] = float64(c) * math.Log2(float64(c))
	}
	return
}()

// worthCompressing reports whether zstd may save 1/8 of logical (see
// above). len(logical) is a whole number of sectors, at most MaxLogical.
func worthCompressing(logical []byte) bool {
	sectors := len(logical) / SectorSize
	if sectors < probeMinSectors {
		return true
	}
	// Per region of probeRegionSectors, an order-0 estimate of what
	// entropy coding saves; a compressible tail or head shows in its
	// region even when the whole block's byte histogram looks random.
	saved := 0.0
	narrow := 0 // sectors whose sample is nearly all bytes below 0x80
	for r := 0; r < sectors; r += probeRegionSectors {
		var hist [256]uint32
		end := min(sectors, r+probeRegionSectors)
		for s := r; s < end; s++ {
			high := 0 // sampled bytes of sector s with the top bit set
			for c := range probeChunks {
				at := s*SectorSize + c*probeChunkStride + probePhase(s)
				chunk := logical[at : at+probeChunkBytes]
				high += bits.OnesCount64(binary.LittleEndian.Uint64(chunk)&topBits) +
					bits.OnesCount64(binary.LittleEndian.Uint64(chunk[8:])&topBits)
				for _, b := range chunk {
					hist[b]++
				}
			}
			if high <= probeNarrowHigh {
				narrow++
			}
		}
		if narrow >= 2 && narrow*probeNarrowShare >= sectors {
			return true
		}
		n := (end - r) * probeSampleBytes
		// Two sums, so the additions of the 256 counts overlap.
		var sum0, sum1 float64
		k := 0 // distinct byte values sampled
		for i := 0; i < len(hist); i += 2 {
			c0, c1 := hist[i], hist[i+1]
			sum0 += xlog2x[c0]
			sum1 += xlog2x[c1]
			k += int(min(c0, 1) + min(c1, 1))
		}
		sum := sum0 + sum1
		// Plug-in entropy H = log2(n) − Σ c·log2(c)/n, corrected for its
		// small-sample bias (Miller–Madow: + (k−1)/(2n·ln 2), k the
		// symbols seen), so uniform bytes estimate about 8 bits.
		h := math.Log2(float64(n)) - sum/float64(n) + float64(k-1)/(2*float64(n)*math.Ln2)
		saved += float64(end-r) * max(0, 8-h) / 8
		if saved >= probeMinSaving*float64(sectors) {
			return true // compressible data usually stops at the first region
		}
	}
	return hasRepeats(logical, sectors)
}

// probePhase is the offset of sector s's chunks within their 128 bytes:
// a multiple of probeChunkBytes, each of the eight once in any eight
// consecutive sectors.
func probePhase(s int) int { return (s * 5 % 8) * probeChunkBytes }

// hasRepeats reports whether two 8-byte windows at fixed offsets of their
// sectors are equal. The offsets do not turn with the sector, unlike the
// entropy sample's: a sector copied to another sector must show.
func hasRepeats(logical []byte, sectors int) bool {
	// Open addressing over the window values; a window of all zeros is a
	// value like any other, marked by used.
	var table [probeTableSize]uint64
	var used [probeTableSize]bool
	for s := range sectors {
		for c := range probeChunks {
			v := binary.LittleEndian.Uint64(logical[s*SectorSize+c*probeChunkStride:])
			i := int((v * 0x9e3779b97f4a7c15) >> (64 - 9))
			for used[i] {
				if table[i] == v {
					return true
				}
				i = (i + 1) & (probeTableSize - 1)
			}
			used[i], table[i] = true, v
		}
	}
	return false
}
