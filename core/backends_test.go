package core

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shalestore/shale/backend"
	_ "github.com/shalestore/shale/backend/file"
	_ "github.com/shalestore/shale/backend/nvme"
	_ "github.com/shalestore/shale/backend/sim"
)

// TestRestartOnBackends writes, closes, reopens the devices and the
// array, and reads back, on each backend.
func TestRestartOnBackends(t *testing.T) {
	const drives, driveBytes, nvramBytes = 7, 48 << 20, 16 << 20
	for _, be := range []string{"file", "nvme", "sim"} {
		t.Run(be, func(t *testing.T) {
			dir := t.TempDir()
			paths := make([]string, drives+1)
			for i := range paths {
				size := int64(driveBytes)
				if i == drives {
					size = nvramBytes
				}
				switch be {
				case "nvme":
					paths[i] = loopDevice(t, size)
				default:
					paths[i] = filepath.Join(dir, fmt.Sprintf("dev%d", i))
				}
			}
			var devs []backend.Device
			openDevs := func() Options {
				devs = devs[:0]
				for i, p := range paths {
					sp := backend.Spec{Name: fmt.Sprintf("drives[%d]", i), Backend: be, Path: p, Size: driveBytes, Kind: backend.SSD}
					if i == drives {
						sp.Name, sp.Size, sp.Kind = "nvram", nvramBytes, backend.NVRAM
					}
					if be == "nvme" {
						sp.Size = 0
					}
					if be == "sim" {
						sp.Options = map[string]any{"zero_latency": true}
					}
					d, err := backend.Open(sp)
					if err != nil {
						t.Fatal(err)
					}
					devs = append(devs, d)
				}
				return Options{Drives: devs[:drives], NVRAM: devs[drives], Geometry: testGeometry,
					CacheBytes: 4 << 20, MetaCacheBytes: 4 << 20, Logger: testLogger()}
			}
			closeDevs := func() {
				for _, d := range devs {
					if err := d.Close(); err != nil {
						t.Fatal(err)
					}
				}
			}
			ctx := context.Background()
			a, err := Create(ctx, openDevs())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.CreateVolume(ctx, "vol", 4<<20); err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(3, 3))
			model := make([]byte, 4<<20)
			write := func(a *Array, n int) {
				v, err := a.Volume("vol")
				if err != nil {
					t.Fatal(err)
				}
				for i := range n {
					off := int64(rng.IntN(len(model)/512-128)) * 512
					p := make([]byte, (1+rng.IntN(128))*512)
					fillData(rng, p, i%2 == 0)
					if err := v.WriteAt(ctx, p, off); err != nil {
						t.Fatal(err)
					}
					copy(model[off:], p)
				}
			}
			check := func(a *Array, stage string) {
				v, err := a.Volume("vol")
				if err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(model))
				if err := v.ReadAt(ctx, got, 0); err != nil {
					t.Fatalf("%s: %v", stage, err)
				}
				if !bytes.Equal(got, model) {
					t.Fatalf("%s: data differs", stage)
				}
			}
			write(a, 100)
			if _, err := a.CreateSnapshot(ctx, "vol", "s1"); err != nil {
				t.Fatal(err)
			}
			check(a, "before restart")
			for round := range 2 {
				if err := a.Close(ctx); err != nil {
					t.Fatal(err)
				}
				closeDevs()
				if a, err = Open(ctx, openDevs()); err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				check(a, fmt.Sprintf("round %d", round))
				if got := a.Snapshots("vol"); len(got) != 1 {
					t.Fatalf("round %d: snapshots %v", round, got)
				}
				write(a, 50)
			}
			if err := a.Close(ctx); err != nil {
				t.Fatal(err)
			}
			closeDevs()
		})
	}
}

// loopDevice attaches a loop device over a sparse file (as backend/nvme's
// tests do), or skips the test where that cannot be done.
func loopDevice(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("not root: no loop devices")
	}
	losetup, err := exec.LookPath("losetup")
	if err != nil {
		t.Skip("losetup not installed")
	}
	backing := filepath.Join(t.TempDir(), "backing")
	if err := os.WriteFile(backing, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(backing, size); err != nil {
		t.Fatal(err)
	}
	var out []byte
	for try := 0; ; try++ {
		out, err = exec.Command(losetup, "--find", "--show", "--direct-io=on", backing).CombinedOutput()
		if err == nil || try == 4 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Skipf("cannot create a loop device: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command(losetup, "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev
}
