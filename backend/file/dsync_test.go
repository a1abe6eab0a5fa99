//go:build linux

package file

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/shalestore/shale/backend"
	"golang.org/x/sys/unix"
)

// TestDSync: with dsync the descriptor is O_DSYNC, a Sync after writes
// alone has nothing to flush (every write was durable when it returned),
// and a Sync after a Discard flushes; without dsync every Sync flushes.
func TestDSync(t *testing.T) {
	ctx := context.Background()
	for _, dsync := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "nvram")
		d := mustOpen(t, spec(path, 1<<20, map[string]any{"dsync": dsync, "direct": "auto"}))
		if got := openFlags(t, path)&unix.O_DSYNC == unix.O_DSYNC; got != dsync {
			t.Errorf("dsync %v: descriptor O_DSYNC = %v", dsync, got)
		}
		buf := backend.AlignedBuffer(8192)
		for i := range 3 {
			if err := d.WriteAt(ctx, buf, int64(i)*8192); err != nil {
				t.Fatal(err)
			}
			if err := d.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.Discard(ctx, 0, 8192); err != nil {
			t.Fatal(err)
		}
		if err := d.Sync(ctx); err != nil { // flushes the discard
			t.Fatal(err)
		}
		if err := d.Sync(ctx); err != nil { // nothing left
			t.Fatal(err)
		}
		st := d.Stats()
		want := uint64(0)
		if dsync {
			want = 4 // the three after writes and the last one
		}
		if st.Syncs != 5 || st.SyncsElided != want {
			t.Errorf("dsync %v: %d syncs, %d elided; want 5, %d", dsync, st.Syncs, st.SyncsElided, want)
		}
	}
}

// openFlags returns the open flags of this process's descriptor for path,
// from /proc/self/fdinfo.
func openFlags(t *testing.T, path string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || target != path {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				flags, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
				if err != nil {
					t.Fatal(err)
				}
				return int(flags)
			}
		}
	}
	t.Fatalf("no descriptor open on %s", path)
	return 0
}
