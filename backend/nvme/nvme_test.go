//go:build linux

package nvme

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shalestore/shale/backend"
	"github.com/shalestore/shale/backend/backendtest"
	"golang.org/x/sys/unix"
)

var (
	benchDev  = flag.String("bench.dev", "", "benchmark on this block device (filled, not mounted) instead of a temporary loop device")
	benchSize = flag.Int64("bench.size", 256<<20, "size of the temporary benchmark loop device")
)

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

// loopDevice attaches a new loop device over a sparse backing file of size
// bytes in a temporary directory and detaches it when the test ends. It
// skips the test where loop devices cannot be made (not root, no
// losetup, no loop driver).
func loopDevice(tb testing.TB, size int64, sectorSize int, directIO bool) (dev, backing string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("not root: cannot create loop devices for the nvme backend's tests")
	}
	losetup, err := exec.LookPath("losetup")
	if err != nil {
		tb.Skip("losetup not installed: cannot create loop devices for the nvme backend's tests")
	}
	backing = filepath.Join(tb.TempDir(), "backing")
	if err := os.WriteFile(backing, nil, 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.Truncate(backing, size); err != nil {
		tb.Fatal(err)
	}
	dio := "off"
	if directIO {
		dio = "on"
	}
	args := []string{"--find", "--show", "--sector-size", fmt.Sprint(sectorSize), "--direct-io=" + dio, backing}
	var out []byte
	// Other tests on the machine may grab the free device losetup picked
	// between its lookup and its attach; try again.
	for try := 0; ; try++ {
		out, err = exec.Command(losetup, args...).CombinedOutput()
		if err == nil || try == 4 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		tb.Skipf("cannot create a loop device (losetup %s: %v): %s", strings.Join(args, " "), err, out)
	}
	dev = strings.TrimSpace(string(out))
	tb.Cleanup(func() {
		if out, err := exec.Command(losetup, "--detach", dev).CombinedOutput(); err != nil {
			tb.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev, backing
}

func spec(path string, size int64) backend.Spec {
	return backend.Spec{Name: "drives[2]", Backend: Name, Path: path, Size: size}
}

func factory(sectorSize int, directIO bool) backendtest.Factory {
	open := func(t testing.TB, path string) backend.Device {
		dev, err := backend.Open(spec(path, 0))
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		return dev
	}
	return backendtest.Factory{
		Open: func(t testing.TB) backend.Device {
			path, _ := loopDevice(t, 16<<20, sectorSize, directIO)
			return open(t, path)
		},
		Reopen: func(t testing.TB, old backend.Device) backend.Device {
			path := old.(*Device).Path()
			if err := old.Close(); err != nil {
				t.Fatalf("close before reopen: %v", err)
			}
			return open(t, path)
		},
		NeedsAlignedBuffers: true,
	}
}

func TestConformance(t *testing.T) {
	for _, c := range []struct {
		name       string
		sectorSize int
		directIO   bool
	}{
		{"loop-4096-dio", 4096, true},
		{"loop-512", 512, false},
	} {
		t.Run(c.name, func(t *testing.T) { backendtest.Run(t, factory(c.sectorSize, c.directIO)) })
	}
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

// TestGeometry: size and alignment come from the device; Spec.Size limits
// the usable size and may not exceed the device's.
func TestGeometry(t *testing.T) {
	dev, _ := loopDevice(t, 16<<20, 4096, true)
	d := mustOpen(t, spec(dev, 0))
	if d.Size() != 16<<20 || d.DeviceSize() != 16<<20 || d.Alignment() != 4096 || d.PhysicalBlockSize() < 4096 || d.Kind() != backend.SSD {
		t.Errorf("size %d device size %d alignment %d physical %d kind %v", d.Size(), d.DeviceSize(), d.Alignment(), d.PhysicalBlockSize(), d.Kind())
	}
	d.Close()
	d = mustOpen(t, backend.Spec{Backend: Name, Path: dev, Size: 8 << 20, Kind: backend.NVRAM})
	if d.Size() != 8<<20 || d.DeviceSize() != 16<<20 || d.Kind() != backend.NVRAM {
		t.Errorf("limited: size %d device size %d kind %v", d.Size(), d.DeviceSize(), d.Kind())
	}
	err := d.WriteAt(context.Background(), backend.AlignedBuffer(4096), 8<<20)
	if !errors.Is(err, backend.ErrOutOfRange) {
		t.Errorf("write past the limited size: %v, want ErrOutOfRange", err)
	}
	d.Close()

	dev512, _ := loopDevice(t, 4<<20, 512, false)
	d = mustOpen(t, spec(dev512, 0))
	if d.Alignment() != 512 || d.Size() != 4<<20 {
		t.Errorf("512-byte sectors: alignment %d size %d", d.Alignment(), d.Size())
	}
}

// TestOpenErrors: what is not a usable block device is refused, saying why.
func TestOpenErrors(t *testing.T) {
	dev, _ := loopDevice(t, 16<<20, 4096, true)
	dir := t.TempDir()
	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		spec backend.Spec
		want []string
	}{
		{"regular file", spec(regular, 0), []string{"drives[2]", regular, "regular file", "file backend"}},
		{"character device", spec("/dev/null", 0), []string{"/dev/null", "character device"}},
		{"directory", spec(dir, 0), []string{dir, "directory"}},
		{"missing", spec(filepath.Join(dir, "nope"), 0), []string{"nope", "no such file"}},
		{"no path", spec("", 0), []string{"path: required"}},
		{"size too large", spec(dev, 32<<20), []string{"size:", "33554432", "larger than device " + dev}},
		{"size misaligned", spec(dev, 8<<20+512), []string{"size:", "not a multiple", "4096"}},
		{"unknown option", backend.Spec{Name: "drives[2]", Backend: Name, Path: dev, Options: map[string]any{"direct": true}}, []string{"unknown option", "direct"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, err := backend.Open(c.spec)
			if err == nil {
				d.Close()
				t.Fatalf("Open succeeded, want an error containing %q", c.want)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestInUse: a device opened exclusively elsewhere, or mounted, is refused
// with ErrInUse and the message operators see.
func TestInUse(t *testing.T) {
	dev, _ := loopDevice(t, 16<<20, 4096, true)
	want := fmt.Sprintf("device %s is in use (mounted or opened by another program)", dev)
	check := func(what string) {
		t.Helper()
		d, err := Open(spec(dev, 0))
		if err == nil {
			d.Close()
			t.Fatalf("%s: Open succeeded, want ErrInUse", what)
		}
		if !errors.Is(err, ErrInUse) || err.Error() != want {
			t.Errorf("%s: %q, want ErrInUse and %q", what, err, want)
		}
	}

	d := mustOpen(t, spec(dev, 0))
	check("second open of the backend")
	d.Close()

	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s O_EXCL: %v", dev, err)
	}
	check("opened O_EXCL by someone else")
	unix.Close(fd)
	mustOpen(t, spec(dev, 0)).Close()

	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("mkfs.ext4 not installed: cannot test a mounted device")
	}
	if out, err := exec.Command(mkfs, "-q", "-F", dev).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %s: %v: %s", dev, err, out)
	}
	mnt := t.TempDir()
	if err := unix.Mount(dev, mnt, "ext4", 0, ""); err != nil {
		t.Skipf("cannot mount %s here (%v): mounted case not tested", dev, err)
	}
	defer func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	}()
	check("mounted")
}

// TestDiscardReachesDevice: BLKDISCARD reaches the loop device, which
// punches a hole in its backing file; the range then reads as zeros.
func TestDiscardReachesDevice(t *testing.T) {
	ctx := context.Background()
	dev, backing := loopDevice(t, 8<<20, 4096, true)
	d := mustOpen(t, spec(dev, 0))
	buf := backend.AlignedBuffer(1 << 20)
	for i := range buf {
		buf[i] = 0x5a
	}
	for off := int64(0); off < 8<<20; off += 1 << 20 {
		if err := d.WriteAt(ctx, buf, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var before, after unix.Stat_t
	if err := unix.Stat(backing, &before); err != nil {
		t.Fatal(err)
	}
	if err := d.Discard(ctx, 2<<20, 4<<20); err != nil {
		t.Fatal(err)
	}
	if st := d.Stats(); st.DiscardsIgnored > 0 {
		t.Skipf("loop device does not discard here: %+v", st)
	}
	if err := unix.Stat(backing, &after); err != nil {
		t.Fatal(err)
	}
	if freed := (before.Blocks - after.Blocks) * 512; freed < 4<<20 {
		t.Errorf("discard of 4 MiB freed %d bytes of the backing file", freed)
	}
	if err := d.ReadAt(ctx, buf, 3<<20); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, make([]byte, len(buf))) {
		t.Errorf("discarded range does not read as zeros")
	}
	if st := d.Stats(); st.Discards != 1 || st.Writes != 8 || st.Syncs != 1 || st.Reads != 1 || st.Errors != 0 {
		t.Errorf("stats %+v", st)
	}
}

// BenchmarkNvmeLoop runs backendtest's device benchmarks on a block device:
// a filled temporary loop device (4096-byte sectors, direct I/O to its
// backing file), or the device -bench.dev names.
func BenchmarkNvmeLoop(b *testing.B) {
	path := *benchDev
	if path == "" {
		path, _ = loopDevice(b, *benchSize, 4096, true)
	}
	d, err := Open(spec(path, 0))
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	if *benchDev == "" {
		backendtest.Fill(b, d)
	}
	backendtest.Bench(b, d)
}
