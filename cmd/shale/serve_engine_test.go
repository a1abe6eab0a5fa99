package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shalestore/shale/admin"
	"github.com/shalestore/shale/config"
	"github.com/shalestore/shale/core"
)

// smallEngineConfig is a configuration of file drives small enough for a
// unit test: geometry 2+1 on three 32 MiB drives, a 32 MiB NVRAM file, an
// NBD Unix socket, and the engine volume vol0 plus the RAM volume ramv.
func smallEngineConfig(t *testing.T, dir string) *config.Config {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "listen: \"\"\nsocket: %s\ndata_dir: %s\nlog: {level: warn}\n", filepath.Join(dir, "nbd.sock"), filepath.Join(dir, "data"))
	b.WriteString("geometry: {data: 2, parity: 1, au_size: 1M, write_unit: 128K}\ndrives:\n")
	for i := range 3 {
		fmt.Fprintf(&b, "  - {backend: file, path: %s, size: 32M}\n", filepath.Join(dir, "data", fmt.Sprintf("d%d", i)))
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
// admin API at once, and everything is back after a restart.
func TestServeEngineInProcess(t *testing.T) {
	dir := t.TempDir()
	cfg := smallEngineConfig(t, dir)
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
