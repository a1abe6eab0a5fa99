package page

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/bits"
	"slices"
)

// MinPageBytes is the smallest page size limit Fit accepts: one tuple of
// MaxFields full-width fields always fits in it.
const MinPageBytes = 1024

// Encoder builds pages. It keeps scratch space between calls, so reuse one
// per goroutine; an Encoder is not safe for concurrent use.
//
// Tuples are passed row-major in a flat slice: tuple i's field f is
// rows[i·F+f]. The encoder never keeps a reference to rows.
type Encoder struct {
	resid []uint64
	bases []uint64
	plans [MaxFields]plan
	guess int // tuples in the last page Fit chose, the first guess of the next

	// What plans describe: the rows plan was last called with.
	lastRows        *uint64
	lastLen, lastNF int
	lastSize        int
}

// plan is the chosen encoding of one field.
type plan struct {
	stride    uint64
	hasStride bool
	width     uint8
	nbases    int
	base0     uint64 // b_0 when nbases is 1
	dictBytes int
	bases     []uint64 // filled by encode only
}

func uvlen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

// greedy covers the sorted residuals r with intervals [b, b+2^w) and
// returns the number of bases and the bytes their uvarints take.
func greedy(r []uint64, w uint) (nb, nbytes int) {
	b := r[0]
	nb, nbytes = 1, uvlen(b)
	if w >= 64 {
		return
	}
	for _, v := range r[1:] {
		if (v-b)>>w != 0 {
			nb++
			nbytes += uvlen(v - b)
			b = v
		}
	}
	return
}

// planResiduals picks the width for the sorted residuals r of n tuples and
// returns the plan and its cost in bits (tuples and dictionary entry).
//
// The greedy cover is exact but costs a pass over r per width, so widths are
// pruned by a lower bound on the number of bases C(w) first. Consecutive
// greedy bases are less than 2^w plus one neighbour gap apart, so the span
// of r is less than C·2^w plus the sum of the C-1 largest gaps; and each
// base takes a dictionary byte.
func (e *Encoder) planResiduals(r []uint64, n int, stride uint64, hasStride bool) (plan, int) {
	fixed := 2 // width and flags bytes
	if hasStride {
		fixed += uvlen(stride)
	}
	span := r[len(r)-1] - r[0]
	// The full width of the span needs a single base: a first exact cost.
	wFull := uint(bits.Len64(span))
	best := plan{stride: stride, hasStride: hasStride, width: uint8(wFull), nbases: 1, dictBytes: fixed + 1 + uvlen(r[0])}
	bestCost := n*int(wFull) + 8*best.dictBytes
	if wFull == 0 {
		return best, bestCost
	}
	// Gaps bucketed by bit length, with their counts and sums: enough to
	// bound the sum of the k largest gaps from above without sorting.
	var cnt [65]int
	var sum [65]uint64
	for i := 1; i < len(r); i++ {
		if d := r[i] - r[i-1]; d != 0 {
			k := bits.Len64(d)
			cnt[k]++
			sum[k] += d // no overflow: disjoint gaps sum to at most the span
		}
	}
	// topSum(k) ≥ the sum of the k largest gaps.
	topSum := func(k int) uint64 {
		var s uint64
		for b := 64; b >= 1 && k > 0; b-- {
			if cnt[b] <= k {
				s += sum[b]
				k -= cnt[b]
				continue
			}
			// Part of bucket b: each of its gaps is < 2^b, and together
			// they are at most the bucket's sum.
			part := uint64(k) * (1<<uint(b) - 1)
			if b == 64 {
				part = ^uint64(0)
			}
			s += min(part, sum[b])
			break
		}
		return s
	}
	ngaps := 0
	for _, c := range cnt {
		ngaps += c
	}
	// exceeds reports whether c bases could cover the span at width w.
	exceeds := func(c int, w uint) bool {
		if c > ngaps {
			return true
		}
		if uint64(c) > (^uint64(0))>>w {
			return true
		}
		t := uint64(c) << w
		s := topSum(c - 1)
		return t+s < t || t+s > span
	}
	for w := uint(0); w < wFull; w++ {
		lo, hi := 1, ngaps+1
		for lo < hi {
			m := (lo + hi) / 2
			if exceeds(m, w) {
				hi = m
			} else {
				lo = m + 1
			}
		}
		lbIdx := uint(bits.Len64(uint64(lo - 1)))
		if lbIdx+w > 64 || n*int(lbIdx+w)+8*(fixed+uvlen(uint64(lo))+lo) >= bestCost {
			continue
		}
		nb, nbytes := greedy(r, w)
		ib := uint(bits.Len64(uint64(nb - 1)))
		if ib+w > 64 {
			continue
		}
		db := fixed + uvlen(uint64(nb)) + nbytes
		if cost := n*int(ib+w) + 8*db; cost < bestCost {
			best = plan{stride: stride, hasStride: hasStride, width: uint8(w), nbases: nb, dictBytes: db}
			bestCost = cost
		}
	}
	return best, bestCost
}

// planField chooses the encoding of field f over the first n rows. It
// considers three shapes and keeps the cheapest:
//
//   - one base b_0 = min and the width of the span (every field);
//   - a stride s = (v_{n-1}-v_0)/(n-1) with one base, for fields that
//     advance steadily with the tuple index (run starts, packed offsets);
//   - several bases chosen by planResiduals over the sorted values, for
//     clustered fields. This needs a sort, so it runs only when the values
//     are already sorted or look clustered: at most 3/4 of the aligned
//     sixteenths of 2^W that the span touches hold a value.
func (e *Encoder) planField(rows []uint64, nf, f, n int) (plan, int) {
	lo, hi := rows[f], rows[f]
	sorted := true
	prev := lo
	for i := 1; i < n; i++ {
		v := rows[i*nf+f]
		if v < prev {
			sorted = false
		}
		prev = v
		lo, hi = min(lo, v), max(hi, v)
	}
	span := hi - lo
	w := uint(bits.Len64(span))
	p := plan{width: uint8(w), nbases: 1, base0: lo, dictBytes: 3 + uvlen(lo)}
	cost := n*int(w) + 8*p.dictBytes
	if span == 0 {
		return p, cost // constant: nothing beats it
	}
	v0, vl := rows[f], rows[(n-1)*nf+f]
	if n >= 3 && vl > v0 {
		if s := (vl - v0) / uint64(n-1); s > 0 {
			// Residuals relative to the first one, as signed: residuals that
			// wrap below zero are still close together modulo 2^64.
			var dlo, dhi int64
			for i := 1; i < n; i++ {
				d := int64(rows[i*nf+f] - s*uint64(i) - v0)
				dlo, dhi = min(dlo, d), max(dhi, d)
			}
			sw := uint(bits.Len64(uint64(dhi - dlo)))
			b0 := v0 + uint64(dlo)
			sp := plan{stride: s, hasStride: true, width: uint8(sw), nbases: 1, base0: b0, dictBytes: 3 + uvlen(s) + uvlen(b0)}
			if sc := n*int(sw) + 8*sp.dictBytes; sc < cost {
				p, cost = sp, sc
			}
		}
	}
	if w <= 4 || p.width == 0 {
		return p, cost // too narrow for several bases to pay
	}
	if !sorted {
		var occupied [16]bool
		k := 0
		for i := 0; i < n && k < 16; i++ {
			if b := (rows[i*nf+f] - lo) >> (w - 4); !occupied[b] {
				occupied[b] = true
				k++
			}
		}
		if possible := int((span >> (w - 4)) + 1); 4*k > 3*possible {
			return p, cost // dense: several bases would save at most a bit
		}
	}
	r := e.resid[:0]
	for i := 0; i < n; i++ {
		r = append(r, rows[i*nf+f])
	}
	e.resid = r
	if !sorted {
		slices.Sort(r)
	}
	if mp, mc := e.planResiduals(r, n, 0, false); mc < cost && mp.nbases > 1 {
		p, cost = mp, mc
	}
	return p, cost
}

// plan chooses every field's encoding for the first n rows and returns the
// page size in bytes. It remembers what it planned, so Encode right after
// Fit or Size of the same rows does not plan again (Encode checks every code
// against the plan, so rows changed in between give an error, not a bad
// page).
func (e *Encoder) plan(rows []uint64, nf, n int) int {
	defer func() {
		e.lastRows, e.lastLen, e.lastNF = nil, n*nf, nf
		if n > 0 {
			e.lastRows = &rows[0]
		}
	}()
	size := HeaderSize
	var tbits int
	for f := 0; f < nf; f++ {
		if n == 0 {
			e.plans[f] = plan{nbases: 1, dictBytes: 4} // W, flags, B=1, b_0=0
		} else {
			e.plans[f], _ = e.planField(rows, nf, f, n)
		}
		p := &e.plans[f]
		size += p.dictBytes
		tbits += bits.Len64(uint64(p.nbases-1)) + int(p.width)
	}
	size += (n*tbits + 7) / 8
	e.lastSize = size
	return size
}

func checkShape(rows []uint64, nf, nk int) (int, error) {
	if nf < 1 || nf > MaxFields || nk < 1 || nk > nf {
		return 0, fmt.Errorf("page: %d fields, %d keys", nf, nk)
	}
	if len(rows)%nf != 0 {
		return 0, fmt.Errorf("page: %d values is not a whole number of %d-field tuples", len(rows), nf)
	}
	n := len(rows) / nf
	if n > MaxTuples {
		return 0, fmt.Errorf("page: %d tuples, more than %d", n, MaxTuples)
	}
	return n, nil
}

// Size returns the size in bytes of the page Encode would build for rows.
func (e *Encoder) Size(rows []uint64, nf int) int {
	return e.plan(rows, nf, len(rows)/nf)
}

// Fit returns how many leading tuples of rows to put in one page of at most
// maxBytes: the largest count it finds that fits, filling the page to within
// a few percent; at least 1 when rows is not empty.
// REQUIRES: maxBytes ≥ MinPageBytes.
func (e *Encoder) Fit(rows []uint64, nf, maxBytes int) int {
	m := len(rows) / nf
	if m == 0 {
		return 0
	}
	best, worst := 0, m+1 // largest count known to fit, smallest known not to
	n := e.guess
	if n < 1 || n > m {
		n = min(m, max(1, maxBytes/(nf*4)))
	}
	for iter := 0; iter < 10 && worst > best+1; iter++ {
		sz := e.plan(rows, nf, n)
		if sz <= maxBytes {
			best = n
			if n == m || sz*32 >= maxBytes*31 {
				break
			}
		} else {
			worst = n
		}
		// Aim proportionally at 99% of the limit, inside the bracket.
		next := int(int64(n) * int64(maxBytes) * 99 / (100 * int64(sz)))
		if next > m {
			next = m
		}
		if next >= worst || next <= best {
			next = best + (worst-best)/2 // bisect when the aim misses
		}
		n = next
	}
	if best == 0 {
		best = 1 // a single tuple always fits in MinPageBytes
	}
	e.guess = best
	return best
}

// Encode appends to dst the page holding rows (nf fields per tuple, the
// first nk of them keys) with the given tag, and returns the extended
// slice. Keys must be strictly increasing; Encode checks (one side of the
// disk) and returns an error otherwise.
func (e *Encoder) Encode(dst []byte, rows []uint64, nf, nk int, tag uint64) ([]byte, error) {
	n, err := checkShape(rows, nf, nk)
	if err != nil {
		return dst, err
	}
	for i := 1; i < n; i++ {
		if c := slices.Compare(rows[(i-1)*nf:(i-1)*nf+nk], rows[i*nf:i*nf+nk]); c >= 0 {
			return dst, fmt.Errorf("page: tuple %d key %v not greater than tuple %d key %v",
				i, rows[i*nf:i*nf+nk], i-1, rows[(i-1)*nf:(i-1)*nf+nk])
		}
	}
	size := e.lastSize
	if len(rows) == 0 || &rows[0] != e.lastRows || len(rows) != e.lastLen || nf != e.lastNF {
		size = e.plan(rows, nf, n)
	}
	e.lastRows = nil
	if size > MaxPageBytes {
		return dst, fmt.Errorf("page: %d bytes, more than %d", size, MaxPageBytes)
	}
	start := len(dst)
	dst = slices.Grow(dst, size)[:start+size]
	buf := dst[start:]
	clear(buf)
	buf[0], buf[1], buf[2], buf[3], buf[4] = magic0, magic1, Version, byte(nf), byte(nk)
	binary.LittleEndian.PutUint32(buf[8:], uint32(size))
	binary.LittleEndian.PutUint32(buf[12:], uint32(n))
	binary.LittleEndian.PutUint64(buf[16:], tag)

	// Dictionary, and the bases of each field for the tuple pass.
	pos := HeaderSize
	e.bases = e.bases[:0]
	var offs [MaxFields]uint64
	var tbits uint64
	for f := 0; f < nf; f++ {
		p := &e.plans[f]
		buf[pos] = p.width
		if p.hasStride {
			buf[pos+1] = flagStride
		}
		pos += 2
		pos += binary.PutUvarint(buf[pos:], uint64(p.nbases))
		if p.hasStride {
			pos += binary.PutUvarint(buf[pos:], p.stride)
		}
		from := len(e.bases)
		if p.nbases == 1 {
			e.bases = append(e.bases, p.base0)
		} else {
			r := e.resid[:0]
			for i := 0; i < n; i++ {
				r = append(r, rows[i*nf+f]-p.stride*uint64(i))
			}
			e.resid = r
			slices.Sort(r)
			b := r[0]
			e.bases = append(e.bases, b)
			if p.width < 64 {
				for _, v := range r[1:] {
					if (v-b)>>p.width != 0 {
						b = v
						e.bases = append(e.bases, b)
					}
				}
			}
		}
		p.bases = e.bases[from:len(e.bases):len(e.bases)]
		if len(p.bases) != p.nbases {
			return dst[:start], fmt.Errorf("page: field %d: planned %d bases, built %d", f, p.nbases, len(p.bases))
		}
		prev := uint64(0)
		for _, b := range p.bases {
			pos += binary.PutUvarint(buf[pos:], b-prev)
			prev = b
		}
		offs[f] = tbits
		tbits += uint64(bits.Len64(uint64(p.nbases-1))) + uint64(p.width)
	}
	if want := uint64(size-pos) * 8; want < uint64(n)*tbits || want >= uint64(n)*tbits+8 {
		return dst[:start], fmt.Errorf("page: planned %d bytes of tuples, need %d bits", size-pos, uint64(n)*tbits)
	}
	area := buf[pos:]
	for f := 0; f < nf; f++ {
		p := &e.plans[f]
		w := uint(p.width)
		ib := uint(bits.Len64(uint64(p.nbases - 1)))
		at := offs[f]
		for i := 0; i < n; i++ {
			r := rows[i*nf+f] - p.stride*uint64(i)
			x := 0
			if len(p.bases) > 1 {
				// Last base ≤ r.
				if x = sortSearchGT(p.bases, r) - 1; x < 0 {
					return dst[:start], fmt.Errorf("page: tuple %d field %d: value %d below the planned dictionary", i, f, rows[i*nf+f])
				}
			}
			o := r - p.bases[x]
			code := o
			if w < 64 {
				if o>>w != 0 {
					return dst[:start], fmt.Errorf("page: tuple %d field %d: value %d outside the planned dictionary", i, f, rows[i*nf+f])
				}
				code = uint64(x)<<w | o
			}
			putBits(area, at, ib+w, code)
			at += tbits
		}
	}
	sum := crc32.Update(crc32.Checksum(buf[:24], castagnoli), castagnoli, buf[28:])
	binary.LittleEndian.PutUint32(buf[24:], sum)
	return dst, nil
}

// sortSearchGT returns the index of the first element of the sorted s
// greater than v.
func sortSearchGT(s []uint64, v uint64) int {
	lo, hi := 0, len(s)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s[m] <= v {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}
