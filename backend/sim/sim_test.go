package sim

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"sync"
	"testing"
	"time"

	"github.com/shalestore/shale/backend"
)

var ctx = context.Background()

// long selects the long versions of the randomized tests (soak runs).
var long = flag.Bool("long", false, "run long versions of the randomized tests")

// newDev is New with t.Fatal on error and Close at cleanup.
func newDev(t testing.TB, o Options) *Device {
	t.Helper()
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func fill(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

func mustRead(t testing.TB, d *Device, off int64, n int) []byte {
	t.Helper()
	buf := make([]byte, n)
	if err := d.ReadAt(ctx, buf, off); err != nil {
		t.Fatalf("read %d+%d: %v", off, n, err)
	}
	return buf
}

func mustWrite(t testing.TB, d *Device, off int64, p []byte) {
	t.Helper()
	if err := d.WriteAt(ctx, p, off); err != nil {
		t.Fatalf("write %d+%d: %v", off, len(p), err)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, path := range []string{"", "file"} {
		t.Run("path="+path, func(t *testing.T) {
			o := Options{Size: 1 << 20}
			if path != "" {
				o.Path = t.TempDir() + "/img"
			}
			d := newDev(t, o)
			mustWrite(t, d, 512, fill(1024, 7))
			mustWrite(t, d, 8192, fill(8192, 9))
			if got := mustRead(t, d, 0, 2048); !bytes.Equal(got[512:1536], fill(1024, 7)) || !bytes.Equal(got[:512], fill(512, 0)) || !bytes.Equal(got[1536:], fill(512, 0)) {
				t.Fatal("sub-page write read back wrong")
			}
			if err := d.Discard(ctx, 8192, 4096); err != nil {
				t.Fatal(err)
			}
			got := mustRead(t, d, 8192, 8192)
			if !bytes.Equal(got[:4096], fill(4096, 0)) || !bytes.Equal(got[4096:], fill(4096, 9)) {
				t.Fatal("discard")
			}
			if err := d.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			if err := d.WriteAt(ctx, fill(100, 1), 0); !errors.Is(err, backend.ErrMisaligned) {
				t.Fatalf("misaligned write: %v", err)
			}
			if err := d.ReadAt(ctx, make([]byte, 512), 1<<20); !errors.Is(err, backend.ErrOutOfRange) {
				t.Fatalf("out of range read: %v", err)
			}
			d2, err := d.Reopen()
			if err != nil {
				t.Fatal(err)
			}
			if got := mustRead(t, d2, 8192, 8192); !bytes.Equal(got[4096:], fill(4096, 9)) {
				t.Fatal("reopen lost data")
			}
			if err := d.ReadAt(ctx, make([]byte, 512), 0); !errors.Is(err, backend.ErrClosed) {
				t.Fatalf("read after close: %v", err)
			}
			st := d2.Stats()
			t.Logf("%+v", st)
			if err := d2.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestPowerLossSmoke(t *testing.T) {
	d := newDev(t, Options{Size: 1 << 20, Seed: 1})
	mustWrite(t, d, 0, fill(4096, 1))
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 16; i++ {
		mustWrite(t, d, 4096*int64(1+i), fill(4096, byte(i+2)))
	}
	d2, err := d.PowerLoss()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.ReadAt(ctx, make([]byte, 512), 0); !errors.Is(err, backend.ErrFailed) {
		t.Fatalf("read after cut: %v", err)
	}
	if got := mustRead(t, d2, 0, 4096); !bytes.Equal(got, fill(4096, 1)) {
		t.Fatal("synced data lost")
	}
	kept := 0
	for i := 0; i < 16; i++ {
		got := mustRead(t, d2, 4096*int64(1+i), 4096)
		for s := 0; s < 8; s++ {
			sec := got[s*512 : (s+1)*512]
			switch {
			case bytes.Equal(sec, fill(512, byte(i+2))):
				kept++
			case bytes.Equal(sec, fill(512, 0)):
			default:
				t.Fatalf("page %d sector %d holds garbage", i, s)
			}
		}
	}
	t.Logf("kept %d of 128 sectors", kept)
	if kept == 0 || kept == 128 {
		t.Fatalf("kept %d of 128 sectors: expected a mix", kept)
	}
}

func TestReuseBackingFile(t *testing.T) {
	path := t.TempDir() + "/img"
	d := newDev(t, Options{Size: 4 << 20, Path: path})
	mustWrite(t, d, 1<<20, fill(8192, 3))
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); !errors.Is(err, backend.ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
	// A new process opens the same file: contents kept, pages mapped.
	d2 := newDev(t, Options{Size: 4 << 20, Path: path})
	if got := mustRead(t, d2, 1<<20, 8192); !bytes.Equal(got, fill(8192, 3)) {
		t.Fatal("contents lost")
	}
	if st := d2.Stats(); st.MappedPages < 2 || st.Programs != 0 {
		t.Fatalf("reused file: %d mapped pages, %d programs", st.MappedPages, st.Programs)
	}
	d2.Close()
	if _, err := New(Options{Size: 8 << 20, Path: path}); err == nil {
		t.Fatal("opened a file of the wrong size")
	}
}

// TestConcurrent runs readers, writers, syncs, discards and stats at once,
// then cuts power mid-flight, for the race detector and to check that
// calls fail cleanly after the cut.
func TestConcurrent(t *testing.T) {
	for _, path := range []string{"", "file"} {
		o := Options{Size: 8 << 20, Seed: 3, Profile: testProfile()}
		if path != "" {
			o.Path = t.TempDir() + "/img"
		}
		d := newDev(t, o)
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for g := 0; g < 6; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 8192)
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					off := int64((g*131+i*17)%1000) * 8192 % (8 << 20)
					var err error
					switch (g + i) % 5 {
					case 0, 1:
						err = d.WriteAt(ctx, buf, off)
					case 2:
						err = d.ReadAt(ctx, buf, off)
					case 3:
						err = d.Sync(ctx)
					case 4:
						err = d.Discard(ctx, off, 4096)
						_ = d.Stats()
					}
					if err != nil && !errors.Is(err, backend.ErrFailed) {
						t.Errorf("unexpected error %v", err)
						return
					}
				}
			}()
		}
		time.Sleep(50 * time.Millisecond)
		d2, err := d.PowerLoss()
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
		close(stop)
		wg.Wait()
		mustWrite(t, d2, 0, fill(4096, 1))
		if err := d2.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
