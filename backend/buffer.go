package backend

import (
	"sync"
	"sync/atomic"
	"unsafe"
)

// HugeBufferMin is the smallest AlignedBuffer that is placed in memory the
// kernel is asked to back with transparent huge pages.
//
// Why: for direct I/O the kernel pins every page of the buffer and, on a
// virtual machine, hands the device one descriptor per physically
// contiguous piece. A 1 MiB buffer in 4 KiB pages is 256 pieces; inside one
// 2 MiB huge page it is one. Measured on the development VM (virtio disk,
// host page cache): 1 MiB O_DIRECT reads at queue depth 1 went from
// 0.94–1.14 GB/s to 2.2–2.5 GB/s. Below 128 KiB the saving per I/O is too
// small to pay for the memory a huge page may hold on to.
const HugeBufferMin = 128 << 10

// hugePageSize is the size of a transparent huge page on amd64 and arm64
// with 4 KiB base pages, the platforms shale runs on.
const hugePageSize = 2 << 20

// AlignedBuffer returns a zeroed buffer of n bytes whose address is a
// multiple of MaxAlignment, usable with every device including those that do
// direct I/O. Its capacity is n, so appending never spills past it.
//
// Buffers of HugeBufferMin bytes or more lie in memory advised for
// transparent huge pages (on Linux; elsewhere, or when the kernel refuses,
// they are ordinary memory): those of up to 2 MiB are carved from shared
// 2 MiB slabs, larger ones get huge-page-aligned memory of their own. A slab
// is ordinary Go memory and stays alive while any buffer carved from it
// does, so buffers are dropped, never freed. Allocate I/O buffers once and
// reuse them (pools): this is not a per-I/O allocator.
func AlignedBuffer(n int) []byte {
	if n == 0 {
		return []byte{}
	}
	if n < HugeBufferMin {
		return alignIn(make([]byte, n+MaxAlignment), MaxAlignment, n)
	}
	size := roundUp(n, MaxAlignment)
	if size > hugePageSize {
		region := alignIn(make([]byte, roundUp(size, hugePageSize)+hugePageSize), hugePageSize, roundUp(size, hugePageSize))
		adviseHuge(region)
		return region[:n:n]
	}
	return slabs.carve(n, size)
}

// slabs is the process's source of huge-page buffers of up to 2 MiB.
var slabs slabAllocator

// slabAllocator carves buffers from 2 MiB huge-page-aligned slabs, first
// fit in the current slab, a new slab when it is full. Carved pieces are
// never handed out twice; the unused tail of a full slab is wasted, at most
// just under one buffer's size per slab.
type slabAllocator struct {
	mu   sync.Mutex
	cur  []byte // the unused rest of the current slab, MaxAlignment-aligned
	made atomic.Int64
}

func (s *slabAllocator) carve(n, size int) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.cur) < size {
		slab := alignIn(make([]byte, 2*hugePageSize), hugePageSize, hugePageSize)
		adviseHuge(slab)
		s.made.Add(1)
		s.cur = slab
	}
	buf := s.cur[:n:n]
	s.cur = s.cur[size:]
	return buf
}

// alignIn returns the n bytes of raw that start at its first address that
// is a multiple of align (a power of two); raw must have room for them.
func alignIn(raw []byte, align, n int) []byte {
	shift := 0
	if r := int(uintptr(unsafe.Pointer(&raw[0])) & uintptr(align-1)); r != 0 {
		shift = align - r
	}
	return raw[shift : shift+n : shift+n]
}

func roundUp(n, to int) int { return (n + to - 1) / to * to }
