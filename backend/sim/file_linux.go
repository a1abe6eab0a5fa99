package sim

import (
	"errors"
	"io"
	"os"
	"syscall"
)

const (
	fallocKeepSize  = 0x1 // FALLOC_FL_KEEP_SIZE
	fallocPunchHole = 0x2 // FALLOC_FL_PUNCH_HOLE
	seekData        = 3   // SEEK_DATA
	seekHole        = 4   // SEEK_HOLE
)

// punchHole deallocates [off, off+n) of f so it reads as zeros and takes
// no space.
func punchHole(f *os.File, off, n int64) error {
	return syscall.Fallocate(int(f.Fd()), fallocPunchHole|fallocKeepSize, off, n)
}

// dataExtents calls fn for each allocated extent [off, end) of f, which
// holds size bytes.
func dataExtents(f *os.File, size int64, fn func(off, end int64)) error {
	fd := int(f.Fd())
	for off := int64(0); off < size; {
		d, err := syscall.Seek(fd, off, seekData)
		if errors.Is(err, syscall.ENXIO) {
			return nil
		}
		if err != nil {
			if errors.Is(err, syscall.EINVAL) { // no SEEK_DATA: all data
				fn(off, size)
				return nil
			}
			return err
		}
		h, err := syscall.Seek(fd, d, seekHole)
		if err != nil {
			return err
		}
		if h > size {
			h = size
		}
		fn(d, h)
		off = h
	}
	_, err := f.Seek(0, io.SeekStart)
	return err
}
