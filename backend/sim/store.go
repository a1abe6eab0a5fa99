package sim

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// The store holds the bytes of the logical image, keyed by logical offset,
// in 4 KiB pages: in memory (a sparse two-level table of pages) or in a
// sparse backing file.
//
// Every write and discard since the last Sync is recorded as undo frags:
// one per page touched, holding the page's old bytes in the touched sector
// range (nil when they were zeros). Power loss walks the records backwards
// to rebuild the image a drive would have (see crash.go); Sync releases
// them. In memory, a whole-page overwrite or discard moves the old page into
// the frag instead of copying it.

type page = [PageSize]byte

// frag is the old content of sectors [lo, hi) (byte offsets, sector
// aligned) of logical page pg, before one write or discard.
type frag struct {
	pg     int64
	lo, hi int32
	// old holds the old bytes at [lo, hi) (other bytes are garbage); nil
	// means they were zeros.
	old *page
}

func (f *frag) whole() bool { return f.lo == 0 && f.hi == PageSize }

// pagePool recycles page buffers. Used with the device's content lock held
// exclusively.
type pagePool struct {
	free []*page
}

// maxPooledPages bounds the memory a device's pool hoards (16 MiB).
const maxPooledPages = 4096

func (p *pagePool) get() *page {
	if n := len(p.free); n > 0 {
		pg := p.free[n-1]
		p.free = p.free[:n-1]
		return pg
	}
	return new(page)
}

// getZero returns a zeroed page.
func (p *pagePool) getZero() *page {
	pg := p.get()
	clear(pg[:])
	return pg
}

func (p *pagePool) put(pg *page) {
	if pg != nil && len(p.free) < maxPooledPages {
		p.free = append(p.free, pg)
	}
}

// store is the content of a device.
//
// REQUIRES: read may run concurrently with other reads; every other method
// needs exclusive access (the device's content lock).
type store interface {
	read(p []byte, off int64) error
	// write stores p at off and appends the undo frags to fr (nil fr: no
	// undo wanted).
	write(p []byte, off int64, fr *[]frag) error
	// zero makes [off, off+n) read as zeros (discard), recording undo
	// frags like write.
	zero(off, n int64, fr *[]frag) error
	// restore puts f's old bytes back and takes ownership of f.old.
	restore(f *frag) error
	// release drops f's old bytes (Sync).
	release(f *frag)
	// get copies the sectors of page pg selected by mask (bit i = bytes
	// [i*sector, (i+1)*sector)) into dst; put writes them from src.
	get(pg int64, mask uint8, sector int, dst *page) error
	put(pg int64, mask uint8, sector int, src *page) error
	// flip inverts bit (0-7) of the byte at off.
	flip(off int64, bit uint) error
	pool() *pagePool
	close() error
}

// maskRuns calls fn for each run of set bits in mask as byte ranges of
// sector size.
func maskRuns(mask uint8, sector int, fn func(lo, hi int) error) error {
	for i := 0; i < 8; {
		if mask&(1<<i) == 0 {
			i++
			continue
		}
		j := i
		for j < 8 && mask&(1<<j) != 0 {
			j++
		}
		if err := fn(i*sector, j*sector); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// rangeMask is the sector mask of bytes [lo, hi) of a page.
func rangeMask(lo, hi int32, sector int) uint8 {
	var m uint8
	for s := int(lo) / sector; s < int(hi)/sector; s++ {
		m |= 1 << s
	}
	return m
}

// ---- memory ----

const (
	memChunkBits = 9
	memChunk     = 1 << memChunkBits
)

type memStore struct {
	chunks [][]*page
	pp     pagePool
}

func newMemStore(size int64) *memStore {
	pages := size / PageSize
	return &memStore{chunks: make([][]*page, (pages+memChunk-1)>>memChunkBits)}
}

func (m *memStore) pool() *pagePool { return &m.pp }

func (m *memStore) page(pg int64) *page {
	c := m.chunks[pg>>memChunkBits]
	if c == nil {
		return nil
	}
	return c[pg&(memChunk-1)]
}

func (m *memStore) setPage(pg int64, p *page) {
	c := m.chunks[pg>>memChunkBits]
	if c == nil {
		if p == nil {
			return
		}
		c = make([]*page, memChunk)
		m.chunks[pg>>memChunkBits] = c
	}
	c[pg&(memChunk-1)] = p
}

func (m *memStore) read(p []byte, off int64) error {
	for len(p) > 0 {
		pg, in := off/PageSize, int(off%PageSize)
		n := min(len(p), PageSize-in)
		if src := m.page(pg); src != nil {
			copy(p[:n], src[in:in+n])
		} else {
			clear(p[:n])
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (m *memStore) write(p []byte, off int64, fr *[]frag) error {
	for len(p) > 0 {
		pg, in := off/PageSize, int(off%PageSize)
		n := min(len(p), PageSize-in)
		cur := m.page(pg)
		f := frag{pg: pg, lo: int32(in), hi: int32(in + n)}
		switch {
		case n == PageSize:
			// Whole page: the old page (if any) becomes the undo copy.
			f.old = cur
			if fr == nil {
				m.pp.put(cur)
			}
			cur = m.pp.get()
			m.setPage(pg, cur)
		case cur == nil:
			cur = m.pp.getZero()
			m.setPage(pg, cur)
		default:
			if fr != nil {
				f.old = m.pp.get()
				copy(f.old[in:in+n], cur[in:in+n])
			}
		}
		copy(cur[in:in+n], p[:n])
		if fr != nil {
			*fr = append(*fr, f)
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (m *memStore) zero(off, length int64, fr *[]frag) error {
	for length > 0 {
		pg, in := off/PageSize, int(off%PageSize)
		n := int(min(length, int64(PageSize-in)))
		cur := m.page(pg)
		f := frag{pg: pg, lo: int32(in), hi: int32(in + n)}
		switch {
		case cur == nil:
			// Zeros over zeros. The frag is still recorded, so that power
			// loss draws the same random choices as with a backing file.
		case n == PageSize:
			m.setPage(pg, nil)
			f.old = cur
			if fr == nil {
				m.pp.put(cur)
			}
		default:
			if fr != nil {
				f.old = m.pp.get()
				copy(f.old[in:in+n], cur[in:in+n])
			}
			clear(cur[in : in+n])
		}
		if fr != nil {
			*fr = append(*fr, f)
		}
		off, length = off+int64(n), length-int64(n)
	}
	return nil
}

func (m *memStore) restore(f *frag) error {
	cur := m.page(f.pg)
	if f.whole() {
		m.setPage(f.pg, f.old)
		m.pp.put(cur)
		f.old = nil
		return nil
	}
	if f.old == nil {
		if cur != nil {
			clear(cur[f.lo:f.hi])
		}
		return nil
	}
	if cur == nil {
		cur = m.pp.getZero()
		m.setPage(f.pg, cur)
	}
	copy(cur[f.lo:f.hi], f.old[f.lo:f.hi])
	m.pp.put(f.old)
	f.old = nil
	return nil
}

func (m *memStore) release(f *frag) {
	m.pp.put(f.old)
	f.old = nil
}

func (m *memStore) get(pg int64, mask uint8, sector int, dst *page) error {
	cur := m.page(pg)
	return maskRuns(mask, sector, func(lo, hi int) error {
		if cur == nil {
			clear(dst[lo:hi])
		} else {
			copy(dst[lo:hi], cur[lo:hi])
		}
		return nil
	})
}

func (m *memStore) put(pg int64, mask uint8, sector int, src *page) error {
	cur := m.page(pg)
	if cur == nil {
		cur = m.pp.getZero()
		m.setPage(pg, cur)
	}
	return maskRuns(mask, sector, func(lo, hi int) error {
		copy(cur[lo:hi], src[lo:hi])
		return nil
	})
}

func (m *memStore) flip(off int64, bit uint) error {
	pg := off / PageSize
	cur := m.page(pg)
	if cur == nil {
		cur = m.pp.getZero()
		m.setPage(pg, cur)
	}
	cur[off%PageSize] ^= 1 << (bit & 7)
	return nil
}

func (m *memStore) close() error { return nil }

// ---- backing file ----

// fileStore keeps the image in a sparse file at the same offsets.
type fileStore struct {
	f  *os.File
	pp pagePool
}

// openFileStore opens or creates path as a sparse file of size bytes. An
// existing non-empty file must have exactly that size; its contents are
// kept.
func openFileStore(path string, size int64) (*fileStore, bool, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, false, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, false, err
	}
	existed := st.Size() != 0
	switch {
	case st.Size() == size:
	case st.Size() == 0:
		if err := f.Truncate(size); err != nil {
			f.Close()
			return nil, false, err
		}
	default:
		f.Close()
		return nil, false, fmt.Errorf("%s holds %d bytes, want %d (remove it or fix size)", path, st.Size(), size)
	}
	return &fileStore{f: f}, existed, nil
}

func (s *fileStore) pool() *pagePool { return &s.pp }

func (s *fileStore) read(p []byte, off int64) error {
	_, err := s.f.ReadAt(p, off)
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// saveOld records the old bytes of [off, off+n) as frags.
func (s *fileStore) saveOld(off, length int64, fr *[]frag) error {
	for length > 0 {
		pg, in := off/PageSize, int(off%PageSize)
		n := int(min(length, int64(PageSize-in)))
		f := frag{pg: pg, lo: int32(in), hi: int32(in + n)}
		old := s.pp.get()
		if _, err := s.f.ReadAt(old[in:in+n], off); err != nil {
			s.pp.put(old)
			return err
		}
		if allZero(old[in : in+n]) {
			s.pp.put(old)
		} else {
			f.old = old
		}
		*fr = append(*fr, f)
		off, length = off+int64(n), length-int64(n)
	}
	return nil
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func (s *fileStore) write(p []byte, off int64, fr *[]frag) error {
	if fr != nil {
		if err := s.saveOld(off, int64(len(p)), fr); err != nil {
			return err
		}
	}
	_, err := s.f.WriteAt(p, off)
	return err
}

var zeroPage page

func (s *fileStore) writeZeros(off, length int64) error {
	for length > 0 {
		n := min(length, PageSize)
		if _, err := s.f.WriteAt(zeroPage[:n], off); err != nil {
			return err
		}
		off, length = off+n, length-n
	}
	return nil
}

func (s *fileStore) zero(off, length int64, fr *[]frag) error {
	if fr != nil {
		if err := s.saveOld(off, length, fr); err != nil {
			return err
		}
	}
	// Punch the whole pages, write zeros over partial ones.
	lo := (off + PageSize - 1) / PageSize * PageSize
	hi := (off + length) / PageSize * PageSize
	if hi <= lo {
		return s.writeZeros(off, length)
	}
	if err := s.writeZeros(off, lo-off); err != nil {
		return err
	}
	if err := punchHole(s.f, lo, hi-lo); err != nil {
		if err := s.writeZeros(lo, hi-lo); err != nil {
			return err
		}
	}
	return s.writeZeros(hi, off+length-hi)
}

func (s *fileStore) restore(f *frag) error {
	off := f.pg*PageSize + int64(f.lo)
	var err error
	if f.old == nil {
		err = s.writeZeros(off, int64(f.hi-f.lo))
	} else {
		_, err = s.f.WriteAt(f.old[f.lo:f.hi], off)
		s.pp.put(f.old)
		f.old = nil
	}
	return err
}

func (s *fileStore) release(f *frag) {
	s.pp.put(f.old)
	f.old = nil
}

func (s *fileStore) get(pg int64, mask uint8, sector int, dst *page) error {
	return maskRuns(mask, sector, func(lo, hi int) error {
		_, err := s.f.ReadAt(dst[lo:hi], pg*PageSize+int64(lo))
		return err
	})
}

func (s *fileStore) put(pg int64, mask uint8, sector int, src *page) error {
	return maskRuns(mask, sector, func(lo, hi int) error {
		_, err := s.f.WriteAt(src[lo:hi], pg*PageSize+int64(lo))
		return err
	})
}

func (s *fileStore) flip(off int64, bit uint) error {
	var b [1]byte
	if _, err := s.f.ReadAt(b[:], off); err != nil {
		return err
	}
	b[0] ^= 1 << (bit & 7)
	_, err := s.f.WriteAt(b[:], off)
	return err
}

func (s *fileStore) close() error { return s.f.Close() }
