//go:build linux

package file

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shalestore/shale/backend"
	"github.com/shalestore/shale/backend/backendtest"
	"golang.org/x/sys/unix"
)

var (
	benchPath = flag.String("bench.path", "", "benchmark on this existing, filled file instead of a temporary one (its size is the device size)")
	benchSize = flag.Int64("bench.size", 256<<20, "size of the temporary benchmark file")
)

// factory opens drives in fresh temporary files through backend.Open, the
// way the engine does.
func factory(t *testing.T, opts map[string]any) backendtest.Factory {
	const size = 16 << 20
	parsed, err := ParseOptions(opts)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	specs := map[backend.Device]backend.Spec{}
	open := func(t testing.TB, spec backend.Spec) backend.Device {
		dev, err := backend.Open(spec)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		mu.Lock()
		specs[dev] = spec
		mu.Unlock()
		return dev
	}
	return backendtest.Factory{
		Open: func(t testing.TB) backend.Device {
			return open(t, backend.Spec{Name: "drives[0]", Backend: Name, Path: filepath.Join(t.TempDir(), "drive"), Size: size, Options: opts})
		},
		Reopen: func(t testing.TB, old backend.Device) backend.Device {
			mu.Lock()
			spec := specs[old]
			mu.Unlock()
			if err := old.Close(); err != nil {
				t.Fatalf("close before reopen: %v", err)
			}
			return open(t, spec)
		},
		NeedsAlignedBuffers: parsed.Direct,
	}
}

func TestConformance(t *testing.T) {
	for _, c := range []struct {
		name string
		opts map[string]any
	}{
		{"buffered", nil},
		{"direct", map[string]any{"direct": true}},
		{"preallocated", map[string]any{"preallocate": true, "direct": "true"}},
		{"dsync", map[string]any{"dsync": true, "direct": true, "preallocate": true}},
	} {
		t.Run(c.name, func(t *testing.T) { backendtest.Run(t, factory(t, c.opts)) })
	}
}

// TestMain raises GOMAXPROCS as cmd/shale does (backend.SetIOProcs), so
// the benchmarks measure the backend the way the server runs it; an
// explicit -test.cpu list (or the GOMAXPROCS environment variable) still
// wins, for sweeps.
func TestMain(m *testing.M) {
	flag.Parse()
	backend.SetIOProcs()
	if !testing.Verbose() {
		slog.SetDefault(slog.New(slog.DiscardHandler))
	}
	os.Exit(m.Run())
}

func spec(path string, size int64, opts map[string]any) backend.Spec {
	return backend.Spec{Name: "drives[1]", Backend: Name, Path: path, Size: size, Options: opts}
}

func mustOpen(t *testing.T, s backend.Spec) *Device {
	t.Helper()
	d, err := Open(s)
	if err != nil {
		t.Fatalf("Open(%+v): %v", s, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestOpenErrors covers the ways a drive file is refused, each error naming
// what is wrong.
func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string, size int64) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, size); err != nil {
			t.Fatal(err)
		}
		return p
	}
	small := mk("small", 1<<20)
	big := mk("big", 4<<20)
	cases := []struct {
		name string
		spec backend.Spec
		want []string // substrings of the error
	}{
		{"smaller file", spec(small, 2<<20, nil), []string{"drives[1]", small, "1048576 bytes", "2097152", "grow: true"}},
		{"larger file", spec(big, 2<<20, nil), []string{big, "larger", "never shrunk"}},
		{"larger file with grow", spec(big, 2<<20, map[string]any{"grow": true}), []string{big, "larger"}},
		{"unknown option", spec(filepath.Join(dir, "x"), 1<<20, map[string]any{"directt": true, "grow": true}), []string{"drives[1]", "unknown option", "directt", "known: [direct preallocate grow dsync]"}},
		{"bad option value", spec(filepath.Join(dir, "x"), 1<<20, map[string]any{"direct": "maybe"}), []string{"option direct", "maybe"}},
		{"bad option type", spec(filepath.Join(dir, "x"), 1<<20, map[string]any{"preallocate": 3}), []string{"option preallocate", "int"}},
		{"no path", spec("", 1<<20, nil), []string{"path: required"}},
		{"no size", spec(filepath.Join(dir, "x"), 0, nil), []string{"size: required"}},
		{"misaligned size", spec(filepath.Join(dir, "misaligned"), 1<<20+512, nil), []string{"size:", "1049088", "alignment 4096"}},
		{"missing directory", spec(filepath.Join(dir, "nodir", "x"), 1<<20, nil), []string{filepath.Join(dir, "nodir", "x"), "no such file"}},
		{"directory", spec(dir, 1<<20, nil), []string{dir}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dev, err := backend.Open(c.spec)
			if err == nil {
				dev.Close()
				t.Fatalf("Open succeeded, want an error containing %q", c.want)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	// Failed opens leave no file behind and do not touch existing ones.
	for _, p := range []string{filepath.Join(dir, "x"), filepath.Join(dir, "misaligned")} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: left behind by a failed open (stat: %v)", p, err)
		}
	}
	for p, size := range map[string]int64{small: 1 << 20, big: 4 << 20} {
		if st, err := os.Stat(p); err != nil || st.Size() != size {
			t.Errorf("%s: changed by a refused open (size %d, %v)", p, st.Size(), err)
		}
	}
}

// TestCreateAndGrow: a missing or empty file is created at the size, sparse
// unless preallocated; grow extends a smaller file keeping its data.
func TestCreateAndGrow(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	blocks := func(p string) int64 {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks * 512
	}

	sparse := filepath.Join(dir, "sparse")
	d := mustOpen(t, spec(sparse, 8<<20, nil))
	if d.Size() != 8<<20 || d.Alignment() != 4096 || d.Kind() != backend.SSD {
		t.Errorf("size %d alignment %d kind %v", d.Size(), d.Alignment(), d.Kind())
	}
	if b := blocks(sparse); b > 1<<20 {
		t.Errorf("sparse file has %d bytes allocated", b)
	}
	d.Close()

	pre := filepath.Join(dir, "pre")
	d = mustOpen(t, backend.Spec{Backend: Name, Path: pre, Size: 8 << 20, Kind: backend.NVRAM, Options: map[string]any{"preallocate": true}})
	if b := blocks(pre); b < 8<<20 {
		t.Errorf("preallocated file has only %d bytes allocated", b)
	}
	if d.Kind() != backend.NVRAM {
		t.Errorf("Kind() = %v, want nvram", d.Kind())
	}
	d.Close()

	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	mustOpen(t, spec(empty, 1<<20, nil)).Close()
	if st, _ := os.Stat(empty); st.Size() != 1<<20 {
		t.Errorf("empty file sized to %d, want %d", st.Size(), 1<<20)
	}

	// Grow keeps the data.
	d = mustOpen(t, spec(sparse, 8<<20, nil))
	buf := backend.AlignedBuffer(4096)
	copy(buf, "grow keeps this")
	if err := d.WriteAt(ctx, buf, 8<<20-4096); err != nil {
		t.Fatal(err)
	}
	d.Close()
	d = mustOpen(t, spec(sparse, 16<<20, map[string]any{"grow": true, "preallocate": true}))
	got := backend.AlignedBuffer(4096)
	if err := d.ReadAt(ctx, got, 8<<20-4096); err != nil || !bytes.Equal(got, buf) {
		t.Errorf("after grow: %q, %v", got[:16], err)
	}
	if err := d.WriteAt(ctx, buf, 16<<20-4096); err != nil {
		t.Errorf("write at the grown end: %v", err)
	}
	if b := blocks(sparse); b < 8<<20 {
		t.Errorf("grown part not preallocated: %d bytes allocated", b)
	}
}

// TestLock: a second open of the same drive, in this process or another, is
// refused with ErrInUse naming the path, until the first closes.
func TestLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "drive")
	d := mustOpen(t, spec(path, 1<<20, nil))
	for _, opts := range []map[string]any{nil, {"direct": true}} {
		_, err := Open(spec(path, 1<<20, opts))
		if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), path) {
			t.Errorf("second open (%v): %v, want ErrInUse naming %s", opts, err, path)
		}
	}
	d.Close()
	mustOpen(t, spec(path, 1<<20, nil)).Close()

	// Another process holding the lock.
	flock, err := exec.LookPath("flock")
	if err != nil {
		t.Skip("flock(1) not installed: cannot test a lock held by another process")
	}
	cmd := exec.Command(flock, "--exclusive", path, "sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var d *Device
		d, err = Open(spec(path, 1<<20, nil))
		if err != nil {
			break
		}
		d.Close() // flock(1) has not taken the lock yet
		if time.Now().After(deadline) {
			t.Fatal("flock(1) never took the lock")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !errors.Is(err, ErrInUse) {
		t.Errorf("open while another process holds the lock: %v, want ErrInUse", err)
	}
}

// TestDiscardPunchesHole: a discard frees the blocks (the file gets sparse)
// and they read back as zeros.
func TestDiscardPunchesHole(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "drive")
	d := mustOpen(t, spec(path, 4<<20, map[string]any{"direct": true}))
	buf := backend.AlignedBuffer(1 << 20)
	for i := range buf {
		buf[i] = 0xee
	}
	for off := int64(0); off < 4<<20; off += 1 << 20 {
		if err := d.WriteAt(ctx, buf, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var before, after unix.Stat_t
	unix.Stat(path, &before)
	if err := d.Discard(ctx, 1<<20, 2<<20); err != nil {
		t.Fatal(err)
	}
	unix.Stat(path, &after)
	if freed := (before.Blocks - after.Blocks) * 512; freed < 2<<20 {
		t.Errorf("discard of 2 MiB freed %d bytes", freed)
	}
	if err := d.ReadAt(ctx, buf, 1<<20); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, make([]byte, len(buf))) {
		t.Errorf("discarded range does not read as zeros")
	}
	if st := d.Stats(); st.Discards != 1 || st.Writes != 4 || st.WriteBytes != 4<<20 || st.Reads != 1 || st.Syncs != 1 || st.Errors != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestFailureClasses: errors from the kernel carry the right class and the
// path: a file truncated under the drive reads short (ErrFailed).
func TestFailureClasses(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "drive")
	d := mustOpen(t, spec(path, 1<<20, nil))
	if err := os.Truncate(path, 4096); err != nil {
		t.Fatal(err)
	}
	err := d.ReadAt(ctx, backend.AlignedBuffer(4096), 8192)
	if !errors.Is(err, backend.ErrFailed) || !strings.Contains(err.Error(), path) {
		t.Errorf("read past a truncated end: %v, want ErrFailed naming the path", err)
	}
	if d.Stats().Errors != 1 {
		t.Errorf("stats: %+v", d.Stats())
	}
}

// BenchmarkFileDirect runs backendtest's device benchmarks on a file opened
// with O_DIRECT: a filled temporary file, or the file -bench.path names.
func BenchmarkFileDirect(b *testing.B) {
	path, size := *benchPath, *benchSize
	if path == "" {
		path = filepath.Join(b.TempDir(), "drive")
	} else {
		st, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		size = st.Size()
	}
	d, err := Open(spec(path, size, map[string]any{"direct": true}))
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	if *benchPath == "" {
		backendtest.Fill(b, d)
	}
	backendtest.Bench(b, d)
}
