package backendtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"

	"github.com/shalestore/shale/backend"
)

const mib = 1 << 20

// testGeometry: Size, Alignment and Kind are sane and stable.
func testGeometry(h *harness) {
	t := h.t
	if k := h.dev.Kind(); k != backend.SSD && k != backend.NVRAM {
		t.Errorf("Kind() = %v, want ssd or nvram", k)
	}
	for range 3 {
		if h.dev.Size() != h.size || int64(h.dev.Alignment()) != h.align {
			t.Fatalf("Size/Alignment changed between calls")
		}
	}
	// The whole device is addressable: first and last block.
	h.write(0, h.align)
	h.write(h.size-h.align, h.align)
	h.readCheck(0, h.align)
	h.readCheck(h.size-h.align, h.align)
}

// testReadYourWrites: writes at chosen and random offsets and sizes read
// back at once, and reading in other granules than written returns the same
// bytes; at the end every block written still holds its last write (no
// write spilled into a neighbour).
func testReadYourWrites(h *harness) {
	a, size := h.align, h.size
	mb := min(int64(mib), size/2) / a * a
	fixed := []struct {
		name   string
		off, n int64
	}{
		{"first block", 0, a},
		{"second block", a, a},
		{"8 blocks at 0", 0, 8 * a},
		{"last block", size - a, a},
		{"last 8 blocks", size - 8*a, 8 * a},
		{"1MiB at start", 0, mb},
		{"1MiB at end", size - mb, mb},
		{"straddling 1MiB", mb - a, 2 * a},
		{"odd blocks at odd offset", 7 * a, 3 * a},
		{"middle", size/2/a*a - a, 2 * a},
		{"overwrite inside 1MiB", 5 * a, 2 * a},
		{"overwrite first block", 0, a},
		{"overwrite straddling end", size - 2*a, 2 * a},
	}
	for _, c := range fixed {
		h.t.Logf("%s: %d bytes at %d", c.name, c.n, c.off)
		h.write(c.off, c.n)
		h.readCheck(c.off, c.n)
		// Neighbours of the write are intact.
		h.readCheck(max(0, c.off-a), min(size, c.off+c.n+a)-max(0, c.off-a))
	}
	wins := h.windows(4 * mib)
	for range 150 {
		w := wins[h.rng.IntN(len(wins))]
		maxBlocks := int64(16)
		if h.rng.IntN(16) == 0 {
			maxBlocks = 256
		}
		off, n := h.randRange(w, maxBlocks)
		h.write(off, n)
		h.readCheck(off, n)
		// A read of another range, overlapping earlier writes.
		roff, rn := h.randRange(w, 64)
		h.readCheck(roff, rn)
	}
	h.checkAll()
}

// testMisaligned: offsets and lengths that are not multiples of
// Alignment() fail with ErrMisaligned and change nothing.
func testMisaligned(h *harness) {
	t, a, size := h.t, h.align, h.size
	h.write(0, 8*a)
	h.write(size-8*a, 8*a)
	type io struct {
		off, n int64
	}
	bad := []io{
		{1, a}, {a / 2, a}, {a - 1, a}, {8, a},
		{0, 1}, {0, a / 2}, {0, a + 1}, {0, a + 8}, {a, 2*a - 1},
		{size - a + 1, a - 1}, {size - a/2, a / 2},
		{3, 5},
	}
	for _, c := range bad {
		buf := backend.AlignedBuffer(int(c.n))
		fill(buf, c.off, 999)
		wantErr(t, fmt.Sprintf("WriteAt(%d bytes at %d)", c.n, c.off), h.dev.WriteAt(h.ctx, buf, c.off), backend.ErrMisaligned)
		wantErr(t, fmt.Sprintf("ReadAt(%d bytes at %d)", c.n, c.off), h.dev.ReadAt(h.ctx, buf, c.off), backend.ErrMisaligned)
		wantErr(t, fmt.Sprintf("Discard(%d, %d)", c.off, c.n), h.dev.Discard(h.ctx, c.off, c.n), backend.ErrMisaligned)
	}
	// Zero-length I/O at a misaligned offset is still misaligned.
	wantErr(t, "ReadAt(0 bytes at 1)", h.dev.ReadAt(h.ctx, nil, 1), backend.ErrMisaligned)
	wantErr(t, "WriteAt(0 bytes at 1)", h.dev.WriteAt(h.ctx, []byte{}, 1), backend.ErrMisaligned)
	wantErr(t, "Discard(1, 0)", h.dev.Discard(h.ctx, 1, 0), backend.ErrMisaligned)
	// Negative offsets: aligned ones are out of range; CheckRange classes
	// them as misaligned. Either class is accepted.
	for _, off := range []int64{-1, -a, -8 * a} {
		buf := backend.AlignedBuffer(int(a))
		wantErr(t, fmt.Sprintf("WriteAt at %d", off), h.dev.WriteAt(h.ctx, buf, off), backend.ErrMisaligned, backend.ErrOutOfRange)
		wantErr(t, fmt.Sprintf("ReadAt at %d", off), h.dev.ReadAt(h.ctx, buf, off), backend.ErrMisaligned, backend.ErrOutOfRange)
		wantErr(t, fmt.Sprintf("Discard at %d", off), h.dev.Discard(h.ctx, off, a), backend.ErrMisaligned, backend.ErrOutOfRange)
	}
	wantErr(t, "Discard with negative length", h.dev.Discard(h.ctx, 0, -a), backend.ErrMisaligned, backend.ErrOutOfRange)
	h.checkAll()
}

// testBufferAddress: with NeedsAlignedBuffers, buffers at addresses that
// are not multiples of Alignment() are refused with ErrMisaligned;
// otherwise they work like any other buffer.
func testBufferAddress(h *harness) {
	t, a := h.t, h.align
	h.write(0, 4*a)
	for _, shift := range []int64{1, 8, 64, a / 2} {
		raw := backend.AlignedBuffer(int(4*a + a))
		buf := raw[shift : shift+2*a]
		off := a * (1 + shift%2)
		if h.f.NeedsAlignedBuffers {
			fill(buf, off, 999)
			wantErr(t, fmt.Sprintf("WriteAt from buffer at address+%d", shift), h.dev.WriteAt(h.ctx, buf, off), backend.ErrMisaligned)
			wantErr(t, fmt.Sprintf("ReadAt into buffer at address+%d", shift), h.dev.ReadAt(h.ctx, buf, off), backend.ErrMisaligned)
			continue
		}
		g := h.nextGen()
		fill(buf, off, g)
		if err := h.dev.WriteAt(h.ctx, buf, off); err != nil {
			t.Fatalf("WriteAt from buffer at address+%d: %v", shift, err)
		}
		h.m.wrote(off, 2*a, g)
		clear(buf)
		if err := h.dev.ReadAt(h.ctx, buf, off); err != nil {
			t.Fatalf("ReadAt into buffer at address+%d: %v", shift, err)
		}
		if !holds(buf, off, g) {
			t.Fatalf("ReadAt into buffer at address+%d: want generation %d, have %s", shift, g, describe(buf, off, []uint32{g}, h.gen.Load()))
		}
	}
	h.checkAll()
}

// testOutOfRange: I/O reaching past Size() fails with ErrOutOfRange,
// including when off+len overflows int64, and changes nothing.
func testOutOfRange(h *harness) {
	t, a, size := h.t, h.align, h.size
	h.write(size-4*a, 4*a)
	h.write(0, 4*a)
	type io struct {
		off, n int64
	}
	bad := []io{
		{size, a}, {size - a, 2 * a}, {size - 4*a, 8 * a}, {size + a, a},
		{2 * size, a}, {size / a * a * 4, a},
		{maxAlignedInt64, a}, {maxAlignedInt64 - a, 2 * a}, {maxAlignedInt64, 0},
	}
	for _, c := range bad {
		if c.n > 0 {
			buf := backend.AlignedBuffer(int(c.n))
			fill(buf, c.off, 999)
			wantErr(t, fmt.Sprintf("WriteAt(%d bytes at %d)", c.n, c.off), h.dev.WriteAt(h.ctx, buf, c.off), backend.ErrOutOfRange)
			wantErr(t, fmt.Sprintf("ReadAt(%d bytes at %d)", c.n, c.off), h.dev.ReadAt(h.ctx, buf, c.off), backend.ErrOutOfRange)
		}
		wantErr(t, fmt.Sprintf("Discard(%d, %d)", c.off, c.n), h.dev.Discard(h.ctx, c.off, c.n), backend.ErrOutOfRange)
	}
	// Discard lengths that overflow or exceed the device.
	for _, c := range []io{{size - a, maxAlignedInt64}, {a, maxAlignedInt64}, {0, size + a}, {maxAlignedInt64, maxAlignedInt64}} {
		wantErr(t, fmt.Sprintf("Discard(%d, %d)", c.off, c.n), h.dev.Discard(h.ctx, c.off, c.n), backend.ErrOutOfRange)
	}
	h.checkAll()
}

// testZeroLength: zero-length reads, writes and discards anywhere in
// [0, Size()] succeed and do nothing; past Size() they are out of range.
func testZeroLength(h *harness) {
	t, a, size := h.t, h.align, h.size
	h.write(0, 2*a)
	h.write(size-2*a, 2*a)
	for _, off := range []int64{0, a, size - a, size} {
		if err := h.dev.ReadAt(h.ctx, nil, off); err != nil {
			t.Errorf("ReadAt(nil at %d): %v", off, err)
		}
		if err := h.dev.ReadAt(h.ctx, []byte{}, off); err != nil {
			t.Errorf("ReadAt(empty at %d): %v", off, err)
		}
		if err := h.dev.WriteAt(h.ctx, nil, off); err != nil {
			t.Errorf("WriteAt(nil at %d): %v", off, err)
		}
		if err := h.dev.WriteAt(h.ctx, backend.AlignedBuffer(int(a))[:0], off); err != nil {
			t.Errorf("WriteAt(empty at %d): %v", off, err)
		}
		if err := h.dev.Discard(h.ctx, off, 0); err != nil {
			t.Errorf("Discard(%d, 0): %v", off, err)
		}
	}
	wantErr(t, "ReadAt(nil past end)", h.dev.ReadAt(h.ctx, nil, size+a), backend.ErrOutOfRange)
	wantErr(t, "WriteAt(nil past end)", h.dev.WriteAt(h.ctx, nil, size+a), backend.ErrOutOfRange)
	wantErr(t, "Discard(past end, 0)", h.dev.Discard(h.ctx, size+a, 0), backend.ErrOutOfRange)
	h.checkAll()
}

// testConcurrent: many goroutines write, read back, discard and sync
// disjoint ranges at once while others read a shared range; everything
// reads back. Meant for -race.
func testConcurrent(h *harness) {
	const writers, readers, opsPerWriter = 16, 4, 40
	t, a := h.t, h.align
	area := min(h.size, 8*mib) / a * a
	slab := area / (writers + 1) / a * a
	if slab < 4*a {
		t.Fatalf("device too small for %d writers", writers)
	}
	// The shared range readers read: the last slab, written up front.
	shared := [2]int64{writers * slab, slab}
	h.write(shared[0], shared[1])
	sharedGen := h.m.cur[shared[0]/a]

	models := make([]*model, writers)
	parallel(writers+readers, func(i int) {
		buf := backend.AlignedBuffer(int(min(slab, 16*a)))
		if i >= writers {
			rng := rand.New(rand.NewPCG(uint64(i), 2))
			for range opsPerWriter {
				nb := 1 + rng.Int64N(min(shared[1], int64(len(buf)))/a)
				off := shared[0] + rng.Int64N(shared[1]/a-nb+1)*a
				p := buf[:nb*a]
				if err := h.dev.ReadAt(h.ctx, p, off); err != nil {
					t.Errorf("reader %d: ReadAt(%d at %d): %v", i, len(p), off, err)
					return
				}
				if !holds(p, off, sharedGen) {
					t.Errorf("reader %d: ReadAt(%d at %d): want generation %d, have %s", i, len(p), off, sharedGen, describe(p, off, []uint32{sharedGen}, h.gen.Load()))
					return
				}
			}
			return
		}
		m := newModel(int(a))
		models[i] = m
		rng := rand.New(rand.NewPCG(uint64(i), 1))
		base := int64(i) * slab
		pick := func() (int64, []byte) {
			nb := 1 + rng.Int64N(int64(len(buf))/a)
			off := base + rng.Int64N(slab/a-nb+1)*a
			return off, buf[:nb*a]
		}
		for op := range opsPerWriter {
			off, p := pick()
			switch {
			case op%10 == 9:
				if err := h.dev.Sync(h.ctx); err != nil {
					t.Errorf("writer %d: Sync: %v", i, err)
					return
				}
			case op%7 == 6:
				if err := h.dev.Discard(h.ctx, off, int64(len(p))); err != nil {
					t.Errorf("writer %d: Discard(%d, %d): %v", i, off, len(p), err)
					return
				}
				m.forget(off, int64(len(p)))
			default:
				g := h.nextGen()
				fill(p, off, g)
				if err := h.dev.WriteAt(h.ctx, p, off); err != nil {
					t.Errorf("writer %d: WriteAt(%d at %d): %v", i, len(p), off, err)
					return
				}
				m.wrote(off, int64(len(p)), g)
				off2, p2 := pick()
				if err := h.dev.ReadAt(h.ctx, p2, off2); err != nil {
					t.Errorf("writer %d: ReadAt(%d at %d): %v", i, len(p2), off2, err)
					return
				}
				for j := int64(0); j < int64(len(p2)); j += a {
					want, ok := m.cur[(off2+j)/a]
					if ok && want != genAny && !holds(p2[j:j+a], off2+j, want) {
						t.Errorf("writer %d: block at %d: want generation %d, have %s", i, off2+j, want, describe(p2[j:j+a], off2+j, []uint32{want}, h.gen.Load()))
						return
					}
				}
			}
		}
	})
	if t.Failed() {
		return
	}
	for _, m := range models {
		h.m.merge(m)
	}
	h.sync()
	h.checkAll()
}

// testSync: Sync succeeds on a fresh device, repeatedly, and from many
// goroutines at once while others write; data reads back after.
func testSync(h *harness) {
	t, a := h.t, h.align
	for range 3 {
		if err := h.dev.Sync(h.ctx); err != nil {
			t.Fatalf("Sync on an idle device: %v", err)
		}
	}
	h.write(0, 16*a)
	h.sync()
	h.sync()
	const n = 8
	models := make([]*model, n)
	parallel(2*n, func(i int) {
		if i >= n {
			for range 5 {
				if err := h.dev.Sync(h.ctx); err != nil {
					t.Errorf("concurrent Sync: %v", err)
					return
				}
			}
			return
		}
		m := newModel(int(a))
		models[i] = m
		buf := backend.AlignedBuffer(int(4 * a))
		for j := range int64(5) {
			off := (16+int64(i)*20)*a + j*4*a
			g := h.nextGen()
			fill(buf, off, g)
			if err := h.dev.WriteAt(h.ctx, buf, off); err != nil {
				t.Errorf("WriteAt(%d at %d): %v", len(buf), off, err)
				return
			}
			m.wrote(off, int64(len(buf)), g)
		}
	})
	for _, m := range models {
		if m != nil {
			h.m.merge(m)
		}
	}
	h.sync()
	h.checkAll()
}

// testDiscard: a discard leaves its neighbours intact, reads of the
// discarded range succeed, and rewriting it reads back.
func testDiscard(h *harness) {
	t, a, size := h.t, h.align, h.size
	discard := func(off, n int64) {
		t.Helper()
		if err := h.dev.Discard(h.ctx, off, n); err != nil {
			t.Fatalf("Discard(%d, %d): %v", off, n, err)
		}
		h.m.forget(off, n)
	}
	h.write(0, 64*a)
	h.write(size-16*a, 16*a)
	discard(8*a, 16*a)
	h.readCheck(0, 64*a) // neighbours intact, discarded range readable
	h.write(8*a, 16*a)
	h.readCheck(0, 64*a)
	// Discard of a single block, of the last block, of a 1 MiB range.
	discard(40*a, a)
	discard(size-a, a)
	h.readCheck(size-16*a, 16*a)
	h.write(size-a, a)
	h.write(40*a, a)
	mb := min(int64(mib), size/2) / a * a
	h.write(mb, mb)
	discard(mb, mb)
	h.write(mb+mb/2, a)
	h.readCheck(mb, mb)
	// Discarding twice is harmless; discarding everything, then writing.
	discard(8*a, 16*a)
	discard(8*a, 16*a)
	discard(0, size)
	h.write(0, 4*a)
	h.write(size-4*a, 4*a)
	h.write(mb, 8*a)
	h.sync()
	h.checkAll()
}

// testDiscardRange: misaligned and out-of-range discards fail with their
// class and discard nothing.
func testDiscardRange(h *harness) {
	t, a, size := h.t, h.align, h.size
	h.write(0, 8*a)
	h.write(size-8*a, 8*a)
	cases := []struct {
		off, n int64
		class  error
	}{
		{size, a, backend.ErrOutOfRange},
		{size - a, 2 * a, backend.ErrOutOfRange},
		{0, size + a, backend.ErrOutOfRange},
		{size - 4*a, maxAlignedInt64, backend.ErrOutOfRange},
		{maxAlignedInt64, a, backend.ErrOutOfRange},
		{1, a, backend.ErrMisaligned},
		{0, a + 1, backend.ErrMisaligned},
		{size - 8*a + 1, a, backend.ErrMisaligned},
	}
	for _, c := range cases {
		wantErr(t, fmt.Sprintf("Discard(%d, %d)", c.off, c.n), h.dev.Discard(h.ctx, c.off, c.n), c.class)
	}
	h.checkAll()
}

// testCanceledContext: a call with a canceled context either does its work
// or fails with context.Canceled, and the device works afterwards.
func testCanceledContext(h *harness) {
	t, a := h.t, h.align
	ctx, cancel := context.WithCancel(h.ctx)
	cancel()
	h.write(0, 8*a)
	buf := backend.AlignedBuffer(int(4 * a))
	g := h.nextGen()
	fill(buf, 2*a, g)
	switch err := h.dev.WriteAt(ctx, buf, 2*a); {
	case err == nil:
		h.m.wrote(2*a, 4*a, g)
	case errors.Is(err, context.Canceled):
		h.m.forget(2*a, 4*a)
	default:
		t.Errorf("WriteAt with canceled context: %v, want nil or context.Canceled", err)
		h.m.forget(2*a, 4*a)
	}
	if err := h.dev.ReadAt(ctx, buf, 0); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("ReadAt with canceled context: %v, want nil or context.Canceled", err)
	}
	if err := h.dev.Sync(ctx); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Sync with canceled context: %v, want nil or context.Canceled", err)
	}
	if err := h.dev.Discard(ctx, 6*a, a); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Discard with canceled context: %v, want nil or context.Canceled", err)
	}
	h.m.forget(6*a, a)
	h.readCheck(0, 8*a)
	h.write(2*a, 4*a)
	h.sync()
	h.checkAll()
}

// testClosed: Close succeeds once; every call after it fails with
// ErrClosed (a second Close may also return nil).
func testClosed(h *harness) {
	t, a := h.t, h.align
	h.write(0, 4*a)
	if err := h.dev.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	buf := backend.AlignedBuffer(int(a))
	wantErr(t, "ReadAt after Close", h.dev.ReadAt(h.ctx, buf, 0), backend.ErrClosed)
	wantErr(t, "WriteAt after Close", h.dev.WriteAt(h.ctx, buf, 0), backend.ErrClosed)
	wantErr(t, "zero-length ReadAt after Close", h.dev.ReadAt(h.ctx, nil, 0), backend.ErrClosed)
	wantErr(t, "zero-length WriteAt after Close", h.dev.WriteAt(h.ctx, nil, 0), backend.ErrClosed)
	wantErr(t, "Sync after Close", h.dev.Sync(h.ctx), backend.ErrClosed)
	wantErr(t, "Discard after Close", h.dev.Discard(h.ctx, 0, a), backend.ErrClosed)
	if err := h.dev.Close(); err != nil && !errors.Is(err, backend.ErrClosed) {
		t.Errorf("second Close: %v, want nil or ErrClosed", err)
	}
}

// testReopen: what was written and synced reads back after Close and
// reopen, twice, with overwrites and discards in between.
func testReopen(h *harness) {
	a, size := h.align, h.size
	mb := min(int64(mib), size/2) / a * a
	h.write(0, mb)
	h.write(size-mb, mb)
	h.write(size/2/a*a, 8*a)
	h.sync()
	h.reopen()
	h.checkAll()
	h.write(4*a, 4*a)
	h.write(size-a, a)
	if err := h.dev.Discard(h.ctx, 64*a, 64*a); err != nil {
		h.t.Fatalf("Discard: %v", err)
	}
	h.m.forget(64*a, 64*a)
	h.sync()
	h.reopen()
	h.checkAll()
	// A reopened device is fully usable.
	h.write(64*a, 64*a)
	h.readCheck(0, mb)
	h.sync()
	h.reopen()
	h.checkAll()
}

// testPowerLossRounds: rounds of random writes and discards, some synced
// and some not, each ended by a power cut; synced data always survives,
// unsynced blocks hold old or new data, and the device works after.
func testPowerLossRounds(h *harness) {
	a := h.align
	area := min(h.size, 4*mib) / a * a
	w := [2]int64{0, area}
	h.write(0, area)
	h.sync()
	for round := range 6 {
		ops := h.rng.IntN(40)
		syncAt := -1
		if round%2 == 1 {
			syncAt = h.rng.IntN(ops + 1)
		}
		for op := range ops {
			if op == syncAt {
				h.sync()
			}
			off, n := h.randRange(w, 32)
			if h.rng.IntN(8) == 0 {
				if err := h.dev.Discard(h.ctx, off, n); err != nil {
					h.t.Fatalf("round %d: Discard(%d, %d): %v", round, off, n, err)
				}
				h.m.forget(off, n)
				continue
			}
			h.write(off, n)
		}
		if round == 4 {
			h.sync() // a round that ends synced: everything must survive
		}
		h.t.Logf("round %d: %d ops, sync after op %d; power loss", round, ops, syncAt)
		h.powerLoss()
		if err := h.m.checkAfterPowerLoss(h.ctx, h.dev, h.f.PowerLossCorruptsUnsynced); err != nil {
			h.t.Fatalf("round %d: %v", round, err)
		}
		// The device works after the cut: rewrite discarded blocks so the
		// next round checks them too.
		for b, g := range h.m.cur {
			if g == genAny {
				h.write(b*a, a)
			}
		}
		h.sync()
	}
}

// testPowerLossConcurrent: every write that returned before a Sync, from
// any goroutine, survives a power cut right after it.
func testPowerLossConcurrent(h *harness) {
	const writers = 8
	a := h.align
	area := min(h.size, 4*mib) / a * a
	slab := area / writers / a * a
	models := make([]*model, writers)
	parallel(writers, func(i int) {
		m := newModel(int(a))
		models[i] = m
		buf := backend.AlignedBuffer(int(min(slab, 16*a)))
		for off := int64(i) * slab; off+int64(len(buf)) <= int64(i+1)*slab; off += int64(len(buf)) {
			g := h.nextGen()
			fill(buf, off, g)
			if err := h.dev.WriteAt(h.ctx, buf, off); err != nil {
				h.t.Errorf("writer %d: WriteAt(%d at %d): %v", i, len(buf), off, err)
				return
			}
			m.wrote(off, int64(len(buf)), g)
		}
	})
	if h.t.Failed() {
		return
	}
	for _, m := range models {
		h.m.merge(m)
	}
	h.sync()
	h.powerLoss()
	if err := h.m.checkAfterPowerLoss(h.ctx, h.dev, h.f.PowerLossCorruptsUnsynced); err != nil {
		h.t.Fatal(err)
	}
	h.checkAll()
}

// testPowerLossNothingPending: power cuts with nothing written since the
// last Sync lose nothing, even twice in a row.
func testPowerLossNothingPending(h *harness) {
	a := h.align
	h.write(0, 256*a)
	h.write(h.size-64*a, 64*a)
	h.sync()
	for range 2 {
		h.powerLoss()
		if err := h.m.checkAfterPowerLoss(h.ctx, h.dev, h.f.PowerLossCorruptsUnsynced); err != nil {
			h.t.Fatal(err)
		}
		h.checkAll()
	}
}
