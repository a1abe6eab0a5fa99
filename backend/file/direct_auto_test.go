//go:build linux

package file

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/shalestore/shale/backend"
	"golang.org/x/sys/unix"
)

// directSupported reports whether dir's filesystem accepts O_DIRECT opens.
func directSupported(t *testing.T, dir string) bool {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, "probe"), os.O_RDWR|os.O_CREATE|unix.O_DIRECT, 0o600)
	if err != nil {
		return false
	}
	f.Close()
	os.Remove(filepath.Join(dir, "probe"))
	return true
}

// TestDirectAuto: `direct: auto` does direct I/O where the filesystem
// allows it and falls back to the page cache where it does not (tmpfs on
// kernels without O_DIRECT for it), and the drive works either way,
// across a reopen.
func TestDirectAuto(t *testing.T) {
	dirs := map[string]string{"tempdir": t.TempDir()}
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		shm, err := os.MkdirTemp("/dev/shm", "shale-direct-auto-")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(shm) })
			dirs["shm"] = shm
		}
	}
	for name, dir := range dirs {
		t.Run(name, func(t *testing.T) {
			want := directSupported(t, dir)
			path := filepath.Join(dir, "nvram.img")
			spec := backend.Spec{Name: "nvram", Backend: "file", Path: path, Size: 1 << 20, Kind: backend.NVRAM,
				Options: map[string]any{"direct": "auto", "preallocate": true}}
			ctx := context.Background()
			for round := range 2 {
				d, err := Open(spec)
				if err != nil {
					t.Fatalf("round %d: open: %v", round, err)
				}
				if d.Direct() != want {
					t.Errorf("round %d: Direct() = %v, the filesystem %s O_DIRECT", round, d.Direct(), map[bool]string{true: "accepts", false: "refuses"}[want])
				}
				buf := backend.AlignedBuffer(4096)
				if round == 0 {
					copy(buf, bytes.Repeat([]byte("nvram!"), 680))
					if err := d.WriteAt(ctx, buf, 8192); err != nil {
						t.Fatal(err)
					}
					if err := d.Sync(ctx); err != nil {
						t.Fatal(err)
					}
				} else {
					if err := d.ReadAt(ctx, buf, 8192); err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(buf[:4080], bytes.Repeat([]byte("nvram!"), 680)) {
						t.Error("data written before the reopen not read back")
					}
				}
				if err := d.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestParseDirectAuto(t *testing.T) {
	o, err := ParseOptions(map[string]any{"direct": "auto"})
	if err != nil || !o.DirectAuto || o.Direct {
		t.Errorf("direct: auto parsed as %+v, %v", o, err)
	}
	if _, err := ParseOptions(map[string]any{"direct": "sometimes"}); err == nil {
		t.Error("direct: sometimes accepted")
	}
}
