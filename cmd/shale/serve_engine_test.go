package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shalestore/shale/admin"
	"github.com/shalestore/shale/config"
	"github.com/shalestore/shale/core"
)

// smallEngineConfig is a configuration of drives of the given backend
// small enough for a unit test: geometry 2+1 on three 32 MiB drives
// (backed by files in DIR/data), the default NVRAM file, an NBD Unix
// socket, and the engine volume vol0 plus the RAM volume ramv.
func smallEngineConfig(t *testing.T, dir, backend string) *config.Config {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "listen: \"\"\nsocket: %s\ndata_dir: %s\nlog: {level: warn}\n", filepath.Join(dir, "nbd.sock"), filepath.Join(dir, "data"))
	b.WriteString("geometry: {data: 2, parity: 1, au_size: 1M, write_unit: 128K}\ndrives:\n")
	for i := range 3 {
		switch backend {
		case "file":
			fmt.Fprintf(&b, "  - {backend: file, path: %s, size: 32M}\n", filepath.Join(dir, "data", fmt.Sprintf("d%d", i)))
		case "sim":
			fmt.Fprintf(&b, "  - {backend: sim, path: %s, size: 32M, zero_latency: true}\n", filepath.Join(dir, "data", fmt.Sprintf("d%d", i)))
		case "nvme":
			fmt.Fprintf(&b, "  - {backend: nvme, path: %s}\n", loopDevice(t, 32<<20))
		}
	}
	b.WriteString("volumes:\n  - {name: vol0, size: 16M}\n  - {name: ramv, size: 1M, ram: true}\n")
	cfg, err := config.Load(config.New(), writeConfig(t, b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// runServe starts serve in process and returns a function that stops it
// and checks it exited cleanly.
func runServe(t *testing.T, cfg *config.Config) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, 10*time.Second) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("unix", cfg.AdminSocket())
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-done:
			t.Fatalf("serve exited at start: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("no admin socket after 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
}

func dialNBD(t *testing.T, cfg *config.Config) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestServeEngineInProcess: serve creates the array on blank drives,
// serves the configured volume, volumes and snapshots made through the
// admin API at once, and everything is back after a restart; on file
// drives, on simulated SSDs kept in files, and on block devices (loop
// devices, where the test may make them).
func TestServeEngineInProcess(t *testing.T) {
	for _, backend := range []string{"file", "sim", "nvme"} {
		t.Run(backend, func(t *testing.T) { testServeEngine(t, backend) })
	}
}

func testServeEngine(t *testing.T, backend string) {
	dir := t.TempDir()
	cfg := smallEngineConfig(t, dir, backend)
	stop := runServe(t, cfg)
	c := admin.NewClient(cfg.AdminSocket())
	defer c.Close()
	ctx := context.Background()

	conn := dialNBD(t, cfg)
	nbdRoundTrip(t, conn, "vol0", 8192)
	conn.Close()
	if _, err := c.CreateVolume(ctx, "made", 4<<20); err != nil {
		t.Fatal(err)
	}
	conn = dialNBD(t, cfg)
	nbdRoundTrip(t, conn, "made", 1<<20)
	conn.Close()
	if _, err := c.CreateSnapshot(ctx, "made", "s"); err != nil {
		t.Fatal(err)
	}
	conn = dialNBD(t, cfg)
	nbdReadBack(t, conn, "made@s", 1<<20)
	conn.Close()
	// The RAM volume's name is taken for the engine.
	if _, err := c.CreateVolume(ctx, "ramv", 1<<20); !errors.Is(err, core.ErrExists) {
		t.Errorf("creating a volume named like a RAM volume: %v", err)
	}
	stop()
	if _, err := os.Stat(cfg.AdminSocket()); !os.IsNotExist(err) {
		t.Errorf("admin socket left behind: %v", err)
	}

	stop = runServe(t, cfg)
	defer stop()
	for _, e := range []struct {
		name string
		off  uint64
	}{{"vol0", 8192}, {"made", 1 << 20}, {"made@s", 1 << 20}} {
		conn = dialNBD(t, cfg)
		nbdReadBack(t, conn, e.name, e.off)
		conn.Close()
	}
	vols, err := c.Volumes(ctx)
	if err != nil || len(vols) != 2 || vols[0].Name != "made" || vols[1].Name != "vol0" || vols[1].Size != 16<<20 {
		t.Errorf("volumes after restart: %+v, %v", vols, err)
	}
}

// loopDevice attaches a loop device (4 KiB sectors, direct I/O) over a
// sparse file of size bytes and detaches it when the test ends. It skips
// the test where loop devices cannot be made (not root, no losetup).
func loopDevice(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("not root: cannot make loop devices for nvme drives")
	}
	backing := filepath.Join(t.TempDir(), "backing")
	if err := os.WriteFile(backing, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(backing, size); err != nil {
		t.Fatal(err)
	}
	var out []byte
	var err error
	for try := 0; try < 5; try++ { // another test may take the device losetup found
		out, err = exec.Command("losetup", "--find", "--show", "--sector-size", "4096", "--direct-io=on", backing).CombinedOutput()
		if err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Skipf("cannot make a loop device (losetup: %v): %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev
}
