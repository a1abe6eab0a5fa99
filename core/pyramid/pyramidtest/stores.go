// Package pyramidtest implements the pyramid's storage interfaces (page
// store, root store, committer) over backend.Device, for tests and
// benchmarks of core/pyramid.
//
// These are stand-ins, not the production parts: core/store (pages as log
// records in segios, roots in the boot region) and core/nvlog replace them
// in the engine. They are real in the sense that matters for crash tests:
// everything goes through a Device as aligned writes and syncs, so on
// backend/sim a power loss keeps exactly what was synced plus whatever the
// simulated drive kept, dropped, tore or garbled of the rest.
package pyramidtest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"sort"
	"sync"

	"github.com/shalestore/shale/backend"
	"github.com/shalestore/shale/core/pyramid"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func alignUp(n, a int64) int64   { return (n + a - 1) / a * a }
func alignDown(n, a int64) int64 { return n / a * a }

// ---- page store ----

// PageStore is a pyramid.PageStore on a Device. Writers fill private
// chunks; chunks are handed out from extents whose end is recorded in a
// double-buffered superblock (synced) before use, so after a crash the
// store resumes past every chunk it ever handed out. Space is never
// reclaimed: size the device for everything a test writes.
//
// Layout: superblock slots at 0 and 4096 (magic "PGSB", generation,
// reserved end, crc32c), chunks from 8192 on. An address is the page's
// byte offset (8 bytes, big-endian) and length (4 bytes), then 4 zero
// bytes.
type PageStore struct {
	dev backend.Device

	mu       sync.Mutex
	cursor   int64 // next chunk to hand out
	reserved int64 // end of the recorded extent
	gen      uint64
}

const (
	superSlot   = 4096
	dataStart   = 2 * superSlot
	writerChunk = 256 << 10
	extentBytes = 16 << 20
)

// OpenPageStore opens (or formats, when no superblock is valid) a page
// store on dev.
func OpenPageStore(ctx context.Context, dev backend.Device) (*PageStore, error) {
	s := &PageStore{dev: dev, cursor: dataStart, reserved: dataStart}
	buf := backend.AlignedBuffer(superSlot)
	for slot := int64(0); slot < 2; slot++ {
		if err := dev.ReadAt(ctx, buf, slot*superSlot); err != nil {
			return nil, err
		}
		if string(buf[:4]) != "PGSB" || crc32.Checksum(buf[:20], castagnoli) != binary.LittleEndian.Uint32(buf[20:]) {
			continue
		}
		if gen := binary.LittleEndian.Uint64(buf[4:]); gen >= s.gen {
			s.gen = gen
			s.reserved = int64(binary.LittleEndian.Uint64(buf[12:]))
			s.cursor = s.reserved
		}
	}
	return s, nil
}

// reserve hands out a chunk.
func (s *PageStore) reserve(ctx context.Context) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cursor+writerChunk > s.reserved {
		end := s.cursor + extentBytes
		if end > s.dev.Size() {
			return 0, fmt.Errorf("page store: full (%d bytes)", s.dev.Size())
		}
		buf := backend.AlignedBuffer(superSlot)
		copy(buf, "PGSB")
		binary.LittleEndian.PutUint64(buf[4:], s.gen+1)
		binary.LittleEndian.PutUint64(buf[12:], uint64(end))
		binary.LittleEndian.PutUint32(buf[20:], crc32.Checksum(buf[:20], castagnoli))
		if err := s.dev.WriteAt(ctx, buf, int64((s.gen+1)%2)*superSlot); err != nil {
			return 0, err
		}
		if err := s.dev.Sync(ctx); err != nil {
			return 0, err
		}
		s.gen++
		s.reserved = end
	}
	off := s.cursor
	s.cursor += writerChunk
	return off, nil
}

// NewWriter implements pyramid.PageStore.
func (s *PageStore) NewWriter(ctx context.Context, tag pyramid.PatchTag) (pyramid.PageWriter, error) {
	return &pageWriter{s: s, buf: backend.AlignedBuffer(writerChunk), base: -1}, nil
}

// ReadPage implements pyramid.PageStore.
func (s *PageStore) ReadPage(ctx context.Context, addr pyramid.Addr, dst []byte) ([]byte, error) {
	off := int64(binary.BigEndian.Uint64(addr[:8]))
	n := int64(binary.BigEndian.Uint32(addr[8:12]))
	a := int64(s.dev.Alignment())
	if n == 0 || n > writerChunk || off < dataStart || off+n > s.dev.Size() {
		return nil, fmt.Errorf("page store: bad address %s", addr)
	}
	lo, hi := alignDown(off, a), alignUp(off+n, a)
	buf := backend.AlignedBuffer(int(hi - lo))
	if err := s.dev.ReadAt(ctx, buf, lo); err != nil {
		return nil, err
	}
	return buf[off-lo : off-lo+n], nil
}

type pageWriter struct {
	s    *PageStore
	buf  []byte
	base int64 // device offset of buf; -1 before the first chunk
	used int
}

func (w *pageWriter) flushChunk(ctx context.Context) error {
	if w.base < 0 || w.used == 0 {
		return nil
	}
	n := alignUp(int64(w.used), int64(w.s.dev.Alignment()))
	clear(w.buf[w.used:n])
	return w.s.dev.WriteAt(ctx, w.buf[:n], w.base)
}

// Append implements pyramid.PageWriter.
func (w *pageWriter) Append(ctx context.Context, page []byte) (pyramid.Addr, error) {
	var a pyramid.Addr
	if len(page) == 0 || len(page) > writerChunk {
		return a, fmt.Errorf("page store: page of %d bytes", len(page))
	}
	if w.base < 0 || w.used+len(page) > writerChunk {
		if err := w.flushChunk(ctx); err != nil {
			return a, err
		}
		base, err := w.s.reserve(ctx)
		if err != nil {
			return a, err
		}
		w.base, w.used = base, 0
	}
	copy(w.buf[w.used:], page)
	binary.BigEndian.PutUint64(a[:8], uint64(w.base+int64(w.used)))
	binary.BigEndian.PutUint32(a[8:12], uint32(len(page)))
	w.used += len(page)
	return a, nil
}

// Finish implements pyramid.PageWriter.
func (w *pageWriter) Finish(ctx context.Context) error {
	if err := w.flushChunk(ctx); err != nil {
		return err
	}
	w.base = -1
	return w.s.dev.Sync(ctx)
}

// Abort implements pyramid.PageWriter.
func (w *pageWriter) Abort() { w.base = -1 }

// ---- root store ----

// RootStore is a pyramid.RootStore on a Device: all roots in one blob,
// written alternately to two 64 KiB slots (magic "RTSB", generation,
// length, crc32c, then the roots), synced on every SetRoot.
type RootStore struct {
	dev   backend.Device
	mu    sync.Mutex
	roots map[string][]byte
	gen   uint64
}

const rootSlot = 64 << 10

// OpenRootStore opens (or formats) a root store on dev.
func OpenRootStore(ctx context.Context, dev backend.Device) (*RootStore, error) {
	s := &RootStore{dev: dev, roots: map[string][]byte{}}
	buf := backend.AlignedBuffer(rootSlot)
	for slot := int64(0); slot < 2; slot++ {
		if err := dev.ReadAt(ctx, buf, slot*rootSlot); err != nil {
			return nil, err
		}
		n := int(binary.LittleEndian.Uint32(buf[12:]))
		if string(buf[:4]) != "RTSB" || n > rootSlot-20 {
			continue
		}
		if crc32.Checksum(buf[20:20+n], castagnoli) != binary.LittleEndian.Uint32(buf[16:]) {
			continue
		}
		gen := binary.LittleEndian.Uint64(buf[4:])
		if gen < s.gen {
			continue
		}
		roots, err := decodeRoots(buf[20 : 20+n])
		if err != nil {
			return nil, err
		}
		s.gen, s.roots = gen, roots
	}
	return s, nil
}

func decodeRoots(b []byte) (map[string][]byte, error) {
	m := map[string][]byte{}
	for len(b) > 0 {
		var parts [2][]byte
		for i := range parts {
			l, n := binary.Uvarint(b)
			if n <= 0 || uint64(len(b)-n) < l {
				return nil, errors.New("root store: bad blob")
			}
			parts[i] = slices.Clone(b[n : n+int(l)])
			b = b[n+int(l):]
		}
		m[string(parts[0])] = parts[1]
	}
	return m, nil
}

// SetRoot implements pyramid.RootStore.
func (s *RootStore) SetRoot(ctx context.Context, name string, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.roots)+1)
	for k := range s.roots {
		if k != name {
			names = append(names, k)
		}
	}
	names = append(names, name)
	sort.Strings(names)
	var blob []byte
	for _, k := range names {
		v := s.roots[k]
		if k == name {
			v = value
		}
		blob = binary.AppendUvarint(blob, uint64(len(k)))
		blob = append(blob, k...)
		blob = binary.AppendUvarint(blob, uint64(len(v)))
		blob = append(blob, v...)
	}
	if len(blob) > rootSlot-20 {
		return fmt.Errorf("root store: %d bytes of roots, slot holds %d", len(blob), rootSlot-20)
	}
	buf := backend.AlignedBuffer(rootSlot)
	copy(buf, "RTSB")
	binary.LittleEndian.PutUint64(buf[4:], s.gen+1)
	binary.LittleEndian.PutUint32(buf[12:], uint32(len(blob)))
	binary.LittleEndian.PutUint32(buf[16:], crc32.Checksum(blob, castagnoli))
	copy(buf[20:], blob)
	if err := s.dev.WriteAt(ctx, buf, int64((s.gen+1)%2)*rootSlot); err != nil {
		return err
	}
	if err := s.dev.Sync(ctx); err != nil {
		return err
	}
	s.gen++
	s.roots[name] = slices.Clone(value)
	return nil
}

// GetRoot implements pyramid.RootStore.
func (s *RootStore) GetRoot(ctx context.Context, name string) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.roots[name]
	return slices.Clone(v), ok, nil
}
