package page

import "encoding/binary"

// getBits returns the width-bit value stored LSB-first at bit position pos
// of buf. width is 0..64. REQUIRES: pos+width ≤ 8·len(buf).
func getBits(buf []byte, pos uint64, width uint) uint64 {
	if width == 0 {
		return 0
	}
	i := pos >> 3
	s := uint(pos & 7)
	var x uint64
	if i+8 <= uint64(len(buf)) {
		x = binary.LittleEndian.Uint64(buf[i:]) >> s
		if s+width > 64 {
			x |= uint64(buf[i+8]) << (64 - s)
		}
	} else {
		// Tail of the buffer: assemble what is there, byte by byte.
		var w [9]byte
		copy(w[:], buf[i:])
		x = binary.LittleEndian.Uint64(w[:]) >> s
		if s+width > 64 {
			x |= uint64(w[8]) << (64 - s)
		}
	}
	if width < 64 {
		x &= 1<<width - 1
	}
	return x
}

// putBits ORs the low width bits of v into buf at bit position pos, LSB-first.
// REQUIRES: the bits are zero before, pos+width ≤ 8·len(buf), and v < 2^width.
func putBits(buf []byte, pos uint64, width uint, v uint64) {
	for width > 0 {
		i := pos >> 3
		s := uint(pos & 7)
		n := 8 - s
		if n > width {
			n = width
		}
		buf[i] |= byte((v & (1<<n - 1)) << s)
		v >>= n
		pos += uint64(n)
		width -= n
	}
}
