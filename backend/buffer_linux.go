package backend

import (
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// hugeAdviceRefused counts regions for which the kernel refused
// MADV_HUGEPAGE (transparent huge pages disabled or unsupported); such
// buffers work, as ordinary pages.
var hugeAdviceRefused atomic.Int64

// adviseHuge asks the kernel to back region (huge-page-aligned, a multiple
// of the huge page size) with transparent huge pages. It does so before the
// region is first touched where it can: a fresh Go allocation of this size
// comes straight from the OS untouched, so its first fault (often the
// kernel pinning it for direct I/O) maps a whole huge page. Best effort.
func adviseHuge(region []byte) {
	if err := unix.Madvise(region, unix.MADV_HUGEPAGE); err != nil {
		hugeAdviceRefused.Add(1)
	}
}
