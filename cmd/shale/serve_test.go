package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shalestore/shale/config"
)

// TestMain lets the tests run this binary's main as a child process.
func TestMain(m *testing.M) {
	if os.Getenv("SHALE_TEST_RUN_MAIN") == "1" {
		os.Args = append([]string{"shale"}, strings.Fields(os.Getenv("SHALE_TEST_ARGS"))...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "shale.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// roundTripPayload is what nbdRoundTrip writes.
var roundTripPayload = bytes.Repeat([]byte("shale!"), 4096/6+1)[:4096]

// nbdRoundTrip does a minimal NBD session on conn: GO on export, WRITE
// 4 KiB at off, READ it back, DISC.
func nbdRoundTrip(t *testing.T, conn net.Conn, export string, off uint64) {
	t.Helper()
	nbdSession(t, conn, export, off, true)
}

// nbdReadBack does GO on export, READs 4 KiB at off and checks it holds
// what nbdRoundTrip writes, then DISC.
func nbdReadBack(t *testing.T, conn net.Conn, export string, off uint64) {
	t.Helper()
	nbdSession(t, conn, export, off, false)
}

func nbdSession(t *testing.T, conn net.Conn, export string, off uint64, write bool) {
	t.Helper()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	be := binary.BigEndian
	g := make([]byte, 18)
	if _, err := io.ReadFull(br, g); err != nil || string(g[:8]) != "NBDMAGIC" {
		t.Fatalf("greeting %q %v", g, err)
	}
	var out []byte
	out = be.AppendUint32(out, 3)
	out = be.AppendUint64(out, 0x49484156454F5054)
	out = be.AppendUint32(out, 7) // GO
	out = be.AppendUint32(out, uint32(4+len(export)+2))
	out = be.AppendUint32(out, uint32(len(export)))
	out = append(out, export...)
	out = be.AppendUint16(out, 0)
	conn.Write(out)
	for {
		h := make([]byte, 20)
		if _, err := io.ReadFull(br, h); err != nil {
			t.Fatal(err)
		}
		data := make([]byte, be.Uint32(h[16:]))
		io.ReadFull(br, data)
		typ := be.Uint32(h[12:])
		if typ == 1 {
			break
		}
		if typ != 3 {
			t.Fatalf("GO reply %#x %q", typ, data)
		}
	}
	req := func(typ uint16, cookie uint64, length uint32) []byte {
		var b []byte
		b = be.AppendUint32(b, 0x25609513)
		b = be.AppendUint16(b, 0)
		b = be.AppendUint16(b, typ)
		b = be.AppendUint64(b, cookie)
		b = be.AppendUint64(b, off)
		return be.AppendUint32(b, length)
	}
	// One request at a time: the server may run requests of a connection
	// concurrently, so a READ sent behind a WRITE could overtake it.
	reply := func(cookie uint64) {
		h := make([]byte, 16)
		if _, err := io.ReadFull(br, h); err != nil {
			t.Fatal(err)
		}
		if be.Uint32(h[4:]) != 0 {
			t.Fatalf("error %d", be.Uint32(h[4:]))
		}
		if be.Uint64(h[8:]) != cookie {
			t.Fatalf("reply to %d, want %d", be.Uint64(h[8:]), cookie)
		}
	}
	if write {
		conn.Write(append(req(1, 1, 4096), roundTripPayload...))
		reply(1)
	}
	conn.Write(req(0, 2, 4096))
	reply(2)
	got := make([]byte, 4096)
	if _, err := io.ReadFull(br, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, roundTripPayload) {
		t.Fatalf("read back differs")
	}
	conn.Write(req(2, 3, 0))
}

func TestServeInProcess(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "nbd.sock")
	cfgFile := writeConfig(t, fmt.Sprintf(`
listen: 127.0.0.1:0
socket: %s
log: {level: warn}
volumes:
  - {name: small, size: 1M, ram: true, description: tiny}
  - {name: big, size: 1T, ram: true}
`, sock))
	v := config.New()
	cfg, err := config.Load(v, cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, 5*time.Second) }()
	var conn net.Conn
	for i := 0; i < 100; i++ {
		if conn, err = net.Dial("unix", sock); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	nbdRoundTrip(t, conn, "big", 1<<39)
	conn.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

// TestServeBadDriveNamesKey: a drive that cannot be opened fails serve
// with an error naming its configuration key, before any array code runs.
func TestServeBadDriveNamesKey(t *testing.T) {
	dir := t.TempDir()
	cfgFile := writeConfig(t, fmt.Sprintf(`listen: 127.0.0.1:0
data_dir: %s
geometry: {data: 1, parity: 1}
drives:
  - {backend: file, path: %s/d0, size: 1M}
  - {backend: file, path: %s/no/such/dir/d1, size: 1M}
volumes:
  - {name: v, size: 1G}
`, dir, dir, dir))
	cfg, err := config.Load(config.New(), cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	err = serve(context.Background(), cfg, time.Second)
	if err == nil || !strings.Contains(err.Error(), "drives[1]") {
		t.Fatalf("serve: %v; want an error naming drives[1]", err)
	}
	// The drive opened before the bad one was closed again: it can be
	// opened (locked) once more.
	cfg.Drives[1].Path = filepath.Join(dir, "d1")
	cfg.Drives[1].Backend = "tape"
	err = serve(context.Background(), cfg, time.Second)
	if err == nil || !strings.Contains(err.Error(), "drives[1]") || strings.Contains(err.Error(), "drives[0]") {
		t.Fatalf("serve after a failed start: %v; want an error naming drives[1] only", err)
	}
}

// TestBinarySIGTERM runs main as a child process: it must log a
// "listening" line with the address, serve, and exit 0 on SIGTERM.
func TestBinarySIGTERM(t *testing.T) {
	cfgFile := writeConfig(t, "listen: 127.0.0.1:0\nlog: {format: text}\nvolumes:\n  - {name: vol0, size: 64M, ram: true}\n")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "SHALE_TEST_RUN_MAIN=1", "SHALE_TEST_ARGS=serve --config "+cfgFile)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(stderr)
	re := regexp.MustCompile(`msg="shale listening".* addr=(\S+)`)
	var addr string
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			addr = m[1]
			break
		}
	}
	if addr == "" {
		t.Fatal("no listening line")
	}
	go io.Copy(io.Discard, stderr)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	nbdRoundTrip(t, conn, "", 4096)
	conn.Close()
	cmd.Process.Signal(syscall.SIGTERM)
	errc := make(chan error, 1)
	go func() { errc <- cmd.Wait() }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
}

func TestVersion(t *testing.T) {
	if s := versionString(); !strings.HasPrefix(s, "shale ") {
		t.Errorf("version %q", s)
	}
}

// TestSocketActivation passes a listening socket as fd 3 with LISTEN_PID
// and LISTEN_FDS, the way systemd and libnbd's "nbdinfo [ CMD ]" do.
func TestSocketActivation(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The configured listen address is unusable: only fd 3 may be served.
	cfgFile := writeConfig(t, "listen: 192.0.2.1:1\nlog: {level: warn}\nvolumes:\n  - {name: v, size: 1M, ram: true}\n")
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" -test.run='^$'`, os.Args[0])
	cmd.Env = append(os.Environ(), "SHALE_TEST_RUN_MAIN=1", "SHALE_TEST_ARGS=serve --config "+cfgFile)
	cmd.ExtraFiles = []*os.File{f}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	nbdRoundTrip(t, conn, "v", 0)
	conn.Close()
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, stderr.String())
	}
}

func TestBuildExportsVolumeKeys(t *testing.T) {
	cfgFile := writeConfig(t, `
listen: 127.0.0.1:0
volumes:
  - {name: rw, size: 1M, ram: true}
  - {name: ro, size: 1M, ram: true, read_only: true, min_block_size: 512}
`)
	cfg, err := config.Load(config.New(), cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	set, err := buildExports(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		readOnly bool
		min      uint32
	}{{"rw", false, 1}, {"ro", true, 512}} {
		exp, _, ok := set.Lookup(tc.name)
		if !ok {
			t.Fatalf("no export %s", tc.name)
		}
		f := exp.Features()
		if f.ReadOnly != tc.readOnly || f.BlockSize.Min != tc.min {
			t.Errorf("%s: ReadOnly %v BlockSize %+v; want %v, min %d", tc.name, f.ReadOnly, f.BlockSize, tc.readOnly, tc.min)
		}
	}
}
