package ram

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"syscall"
	"testing"
)

var ctx = context.Background()

func mustNew(t testing.TB, size int64, opts Options) *Volume {
	t.Helper()
	v, err := New(size, opts)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSparseHugeVolume(t *testing.T) {
	v := mustNew(t, 1<<40, Options{})
	if v.AllocatedBytes() != 0 {
		t.Fatal("fresh volume holds pages")
	}
	buf := make([]byte, 8192)
	if err := v.ReadAt(ctx, buf, 1<<40-8192); err != nil || !bytes.Equal(buf, make([]byte, 8192)) {
		t.Fatalf("read of unwritten end: %v", err)
	}
	buf[100] = 1
	if err := v.WriteAt(ctx, buf, 1<<39+100, false); err != nil {
		t.Fatal(err)
	}
	if v.AllocatedBytes() != PageSize {
		t.Errorf("allocated %d after one dirty page", v.AllocatedBytes())
	}
	ext, err := v.Extents(ctx, 0, 1<<40, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []Extent{{1 << 39, ExtentHole | ExtentZero}, {4096, 0}, {1<<39 - 4096, ExtentHole | ExtentZero}}
	if len(ext) != 3 || ext[0] != want[0] || ext[1] != want[1] || ext[2] != want[2] {
		t.Errorf("extents %v, want %v", ext, want)
	}
	// Zeroing a terabyte is quick and frees the page.
	if err := v.WriteZeroes(ctx, 0, 1<<40, ZeroFlags{}); err != nil {
		t.Fatal(err)
	}
	if v.AllocatedBytes() != 0 {
		t.Errorf("allocated %d after zeroing", v.AllocatedBytes())
	}
}

func TestZeroDetection(t *testing.T) {
	v := mustNew(t, 1<<20, Options{})
	data := bytes.Repeat([]byte{7}, 3*PageSize)
	v.WriteAt(ctx, data, 0, false)
	if v.AllocatedBytes() != 3*PageSize {
		t.Fatalf("allocated %d", v.AllocatedBytes())
	}
	// A full page of zeros frees it.
	v.WriteAt(ctx, make([]byte, PageSize), PageSize, false)
	// Partial zero writes free a page once it is all zeros.
	v.WriteAt(ctx, make([]byte, 100), 2*PageSize, false)
	if v.AllocatedBytes() != 2*PageSize {
		t.Fatalf("allocated %d", v.AllocatedBytes())
	}
	v.WriteAt(ctx, make([]byte, PageSize-100), 2*PageSize+100, false)
	if v.AllocatedBytes() != PageSize {
		t.Fatalf("allocated %d", v.AllocatedBytes())
	}
	// Zeros over a hole allocate nothing.
	v.WriteAt(ctx, make([]byte, 64<<10), 128<<10, false)
	if v.AllocatedBytes() != PageSize {
		t.Fatalf("allocated %d", v.AllocatedBytes())
	}
	// Trim of part of a page zeroes that part.
	v.Trim(ctx, 10, 20, false)
	got := make([]byte, 40)
	v.ReadAt(ctx, got, 0)
	if !bytes.Equal(got[:10], data[:10]) || !bytes.Equal(got[10:30], make([]byte, 20)) || !bytes.Equal(got[30:], data[30:40]) {
		t.Errorf("partial trim: %v", got)
	}
}

func TestBounds(t *testing.T) {
	v := mustNew(t, 10000, Options{})
	buf := make([]byte, 100)
	for _, err := range []error{
		v.ReadAt(ctx, buf, 9901),
		v.WriteAt(ctx, buf, 9901, false),
		v.ReadAt(ctx, buf, -1),
		v.Trim(ctx, 0, 10001, false),
		v.WriteZeroes(ctx, 1<<62, 1<<62, ZeroFlags{}),
		v.Cache(ctx, 10000, 1),
	} {
		if !errors.Is(err, ErrOutOfRange) || !errors.Is(err, syscall.EINVAL) {
			t.Errorf("out of range: %v", err)
		}
	}
	// The last partial page works.
	if err := v.WriteAt(ctx, buf, 9900, false); err != nil {
		t.Error(err)
	}
	if _, err := New(-1, Options{}); err == nil {
		t.Error("negative size accepted")
	}
}

func TestMaxBytes(t *testing.T) {
	v := mustNew(t, 1<<20, Options{MaxBytes: 2 * PageSize})
	one := []byte{1}
	if err := v.WriteAt(ctx, one, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, one, PageSize, false); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, one, 2*PageSize, false); !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write over the limit: %v", err)
	}
	// Overwriting allocated pages never fails.
	if err := v.WriteAt(ctx, []byte{2}, 1, false); err != nil {
		t.Fatal(err)
	}
	// NoHole keeps pages allocated; without it they are freed.
	v.WriteZeroes(ctx, 0, PageSize, ZeroFlags{NoHole: true})
	if v.AllocatedBytes() != 2*PageSize {
		t.Errorf("NoHole freed a page")
	}
	v.WriteZeroes(ctx, 0, PageSize, ZeroFlags{})
	if v.AllocatedBytes() != PageSize {
		t.Errorf("zeroing kept the page")
	}
}

// TestModel runs random operations against a byte-slice model.
func TestModel(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		const size = 3<<20 + 1000 // not a multiple of the page size
		v := mustNew(t, size, Options{})
		model := make([]byte, size)
		rng := rand.New(rand.NewPCG(seed, 42))
		// Leases held open across later operations, with what their
		// views showed when taken: writes meanwhile must not show.
		type held struct {
			l    *Lease
			iov  [][]byte
			want []byte
		}
		var leases []held
		checkLeases := func(i int) {
			for _, h := range leases {
				if got := bytes.Join(h.iov, nil); !bytes.Equal(got, h.want) {
					t.Fatalf("seed %d op %d: pinned views changed", seed, i)
				}
			}
		}
		span := func() (int64, int64) {
			off := rng.Int64N(size)
			n := rng.Int64N(min(size-off, 3*PageSize)) + 1
			if rng.IntN(4) == 0 { // page aligned
				off &^= PageSize - 1
				n = min(int64(1+rng.IntN(8))*PageSize, size-off)
			}
			return off, n
		}
		for i := 0; i < 3000; i++ {
			off, n := span()
			switch rng.IntN(8) {
			case 0, 1:
				p := make([]byte, n)
				if rng.IntN(3) > 0 {
					for k := range p {
						p[k] = byte(rng.Uint32())
					}
				}
				if err := v.WriteAt(ctx, p, off, false); err != nil {
					t.Fatal(err)
				}
				copy(model[off:], p)
			case 2:
				v.Trim(ctx, off, n, false)
				clear(model[off : off+n])
			case 3:
				v.WriteZeroes(ctx, off, n, ZeroFlags{NoHole: rng.IntN(2) == 0})
				clear(model[off : off+n])
			case 4:
				p := make([]byte, n)
				v.ReadAt(ctx, p, off)
				if !bytes.Equal(p, model[off:off+n]) {
					t.Fatalf("seed %d op %d: read [%d,+%d) differs", seed, i, off, n)
				}
			case 5:
				ext, err := v.Extents(ctx, off, n, nil)
				if err != nil || len(ext) == 0 {
					t.Fatalf("extents: %v %v", ext, err)
				}
				pos := off
				for j, e := range ext {
					if e.Length <= 0 || (j > 0 && ext[j-1].Flags == e.Flags) {
						t.Fatalf("bad extents %v", ext)
					}
					if e.Flags&ExtentZero != 0 && !bytes.Equal(model[pos:pos+e.Length], make([]byte, e.Length)) {
						t.Fatalf("seed %d op %d: extent [%d,+%d) says zero, model disagrees", seed, i, pos, e.Length)
					}
					pos += e.Length
				}
				if pos > off+n {
					t.Fatalf("extents overrun")
				}
			case 6:
				iov, l, err := v.PinRead(ctx, off, n, nil)
				if err != nil {
					t.Fatal(err)
				}
				got := bytes.Join(iov, nil)
				if !bytes.Equal(got, model[off:off+n]) {
					t.Fatalf("seed %d op %d: pinned read [%d,+%d) differs", seed, i, off, n)
				}
				leases = append(leases, held{l, iov, got})
			case 7:
				checkLeases(i)
				if len(leases) > 0 {
					k := rng.IntN(len(leases))
					leases[k].l.Release()
					leases = append(leases[:k], leases[k+1:]...)
				}
			}
		}
		checkLeases(-1)
		for _, h := range leases {
			h.l.Release()
		}
		// Full compare, and every all-zero page is a hole.
		got := make([]byte, size)
		v.ReadAt(ctx, got, 0)
		if !bytes.Equal(got, model) {
			t.Fatalf("seed %d: final contents differ", seed)
		}
		var live int64
		for p := int64(0); p*PageSize < size; p++ {
			end := min((p+1)*PageSize, size)
			if v.loadPage(p) != nil {
				live++
			} else if !bytes.Equal(model[p*PageSize:end], make([]byte, end-p*PageSize)) {
				t.Fatalf("page %d is a hole but holds data", p)
			}
		}
		if live*PageSize != v.AllocatedBytes() {
			t.Errorf("AllocatedBytes %d, pages %d", v.AllocatedBytes(), live)
		}
	}
}

// TestConcurrent writes disjoint ranges from many goroutines, with
// readers, trims and extent scans racing, under -race.
func TestConcurrent(t *testing.T) {
	const workers = 8
	const region = 256 << 10
	v := mustNew(t, workers*region, Options{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			base := int64(w * region)
			model := make([]byte, region)
			buf := make([]byte, 16<<10)
			for i := 0; i < 500; i++ {
				off := rng.Int64N(region - int64(len(buf)))
				n := rng.Int64N(int64(len(buf))) + 1
				switch rng.IntN(4) {
				case 0:
					for k := range buf[:n] {
						buf[k] = byte(rng.Uint32())
					}
					v.WriteAt(ctx, buf[:n], base+off, false)
					copy(model[off:], buf[:n])
				case 1:
					v.WriteZeroes(ctx, base+off, n, ZeroFlags{})
					clear(model[off : off+n])
				case 2:
					v.ReadAt(ctx, buf[:n], base+off)
					if !bytes.Equal(buf[:n], model[off:off+n]) {
						t.Errorf("worker %d: read differs", w)
						return
					}
				case 3:
					// Reads across the neighbours' regions race with their writes.
					v.Extents(ctx, 0, v.Size(), nil)
					v.ReadAt(ctx, buf, rng.Int64N(v.Size()-int64(len(buf))))
				}
			}
		}()
	}
	wg.Wait()
}

// TestPinReadStable pins pages while writers overwrite, zero and trim
// them and other writers churn the page pool; every view must keep what it
// showed when pinned (under -race, an in-place write to a pinned page or
// the reuse of one for other data is also a reported race).
func TestPinReadStable(t *testing.T) {
	const pinReadsPerReader = 300
	const region = 64 * PageSize
	v := mustNew(t, 2*region, Options{})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// Writer: whole pages of one byte value each, so a page is uniform at
	// every moment; zeroes and trims free pages for reuse.
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 3))
			buf := make([]byte, 8*PageSize)
			for gen := 1; ; gen++ {
				select {
				case <-stop:
					return
				default:
				}
				base := int64(w) * region // writer 1 churns the other region
				off := rng.Int64N(region/PageSize-8) * PageSize
				n := int64(1+rng.IntN(8)) * PageSize
				switch rng.IntN(4) {
				case 0:
					v.WriteZeroes(ctx, base+off, n, ZeroFlags{})
				case 1:
					v.Trim(ctx, base+off, n, false)
				default:
					buf[0] = byte(gen%255 + 1)
					for k := 1; k < int(n); k *= 2 {
						copy(buf[k:n], buf[:k])
					}
					v.WriteAt(ctx, buf[:n], base+off, false)
				}
			}
		}()
	}
	var bad sync.Once
	var readers sync.WaitGroup
	for r := range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 9))
			var iov [][]byte
			var snap []byte
			for range pinReadsPerReader {
				off := rng.Int64N(region/PageSize-16) * PageSize
				var l *Lease
				var err error
				iov, l, err = v.PinRead(ctx, off, 16*PageSize, iov[:0])
				if err != nil {
					t.Error(err)
					return
				}
				snap = bytes.Join(iov, nil)
				for k := range 16 {
					pg := snap[k*PageSize : (k+1)*PageSize]
					if !bytes.Equal(pg, bytes.Repeat(pg[:1], PageSize)) {
						bad.Do(func() { t.Errorf("page %d of a pinned read is not uniform: torn by a write", k) })
					}
				}
				for range 1 + rng.IntN(3) {
					runtime.Gosched()
				}
				if !bytes.Equal(bytes.Join(iov, nil), snap) {
					bad.Do(func() { t.Errorf("pinned views changed") })
				}
				l.Release()
			}
		}()
	}
	readers.Wait()
	close(stop)
	wg.Wait()
	st := v.Stats()
	if st.PinnedReads != 2*pinReadsPerReader {
		t.Errorf("PinnedReads %d, want 2*pinReadsPerReader", st.PinnedReads)
	}
	if st.COWPages == 0 {
		t.Errorf("no copy-on-write happened: the test did not exercise pins")
	}
	t.Logf("stats %+v", st)
}

func TestPinReadHolesAndRelease(t *testing.T) {
	v := mustNew(t, 1<<20, Options{MaxBytes: 4 * PageSize})
	// All holes: views of zeros, nothing pinned.
	iov, l, err := v.PinRead(ctx, 100, 3*PageSize, nil)
	if err != nil || l != nil || len(iov) != 4 || !bytes.Equal(bytes.Join(iov, nil), make([]byte, 3*PageSize)) {
		t.Fatalf("hole pin: %d views, lease %v, err %v", len(iov), l, err)
	}
	l.Release() // nil: no-op
	if _, l, err := v.PinRead(ctx, 1<<20-10, 11, nil); !errors.Is(err, ErrOutOfRange) || l != nil {
		t.Fatalf("out of range: %v", err)
	}
	data := bytes.Repeat([]byte{5}, 4*PageSize)
	v.WriteAt(ctx, data, 0, false)
	iov, l, err = v.PinRead(ctx, 0, 4*PageSize, iov[:0])
	if err != nil || l == nil {
		t.Fatal(err)
	}
	// At the limit, overwriting and zeroing pinned pages still works (the
	// copies are not counted against MaxBytes) and frees accounting.
	v.WriteAt(ctx, bytes.Repeat([]byte{6}, 2*PageSize), 0, false)
	v.WriteZeroes(ctx, 2*PageSize, 2*PageSize, ZeroFlags{})
	if got := v.AllocatedBytes(); got != 2*PageSize {
		t.Errorf("allocated %d, want %d", got, 2*PageSize)
	}
	if !bytes.Equal(bytes.Join(iov, nil), data) {
		t.Errorf("pinned views changed")
	}
	cow := v.Stats().COWPages
	if cow != 2 {
		t.Errorf("COWPages %d, want 2 (the overwritten pages; the zeroed ones are dropped)", cow)
	}
	l.Release()
	// Unpinned again: writes go in place.
	v.WriteAt(ctx, data[:PageSize], 0, false)
	if v.Stats().COWPages != cow {
		t.Errorf("write after Release copied the page")
	}
	got := make([]byte, 4*PageSize)
	v.ReadAt(ctx, got, 0)
	want := append(bytes.Repeat([]byte{5}, PageSize), bytes.Repeat([]byte{6}, PageSize)...)
	want = append(want, make([]byte, 2*PageSize)...)
	if !bytes.Equal(got, want) {
		t.Errorf("contents after release differ")
	}
}

func BenchmarkPinRead1M(b *testing.B) {
	v := mustNew(b, 256<<20, Options{})
	p := bytes.Repeat([]byte{1}, 1<<20)
	for off := int64(0); off < 256<<20; off += 1 << 20 {
		v.WriteAt(ctx, p, off, false)
	}
	b.Run("copy", func(b *testing.B) {
		buf := make([]byte, 1<<20)
		b.SetBytes(1 << 20)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			v.ReadAt(ctx, buf, int64(i%256)<<20)
		}
	})
	b.Run("pin", func(b *testing.B) {
		var iov [][]byte
		b.SetBytes(1 << 20)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			var l *Lease
			iov, l, _ = v.PinRead(ctx, int64(i%256)<<20, 1<<20, iov[:0])
			l.Release()
		}
	})
}

func BenchmarkWrite4k(b *testing.B) {
	v := mustNew(b, 1<<30, Options{})
	p := bytes.Repeat([]byte{1}, 4096)
	b.SetBytes(4096)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(rand.Uint64(), 1))
		for pb.Next() {
			v.WriteAt(ctx, p, rng.Int64N(1<<18)*4096, false)
		}
	})
}

func BenchmarkRead4k(b *testing.B) {
	v := mustNew(b, 1<<30, Options{})
	p := bytes.Repeat([]byte{1}, 1<<20)
	for off := int64(0); off < 1<<30; off += 1 << 20 {
		v.WriteAt(ctx, p, off, false)
	}
	b.ResetTimer()
	b.SetBytes(4096)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(rand.Uint64(), 1))
		buf := make([]byte, 4096)
		for pb.Next() {
			v.ReadAt(ctx, buf, rng.Int64N(1<<18)*4096)
		}
	})
}
