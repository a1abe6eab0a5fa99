package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestUnixSocket serves on a Unix socket as well as TCP: nbdinfo, nbdcopy
// and qemu-io reach the export through nbd+unix:// URIs.
func TestUnixSocket(t *testing.T) {
	need(t, "nbdinfo", "nbdcopy", "qemu-io")
	// Socket paths are limited to 107 bytes; keep this one short.
	dir, err := os.MkdirTemp("", "shale-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "nbd.sock")
	s := startServer(t, fmt.Sprintf("socket: %s\n%s", sock, stdVolumes))
	uri := func(export string) string { return fmt.Sprintf("nbd+unix:///%s?socket=%s", export, sock) }

	info := nbdinfo(t, uri("vol0"))
	if got, want := info.Exports[0], rwExport("vol0", "scratch volume", 64<<20, 1); !reflect.DeepEqual(got, want) {
		t.Errorf("nbdinfo over the Unix socket:\n got %+v\nwant %+v", got, want)
	}
	list := nbdinfo(t, "--list", fmt.Sprintf("nbd+unix://?socket=%s", sock))
	if len(list.Exports) != 3 {
		t.Errorf("nbdinfo --list over the Unix socket: %+v", list.Exports)
	}
	// Write over the socket, read back over TCP and the socket.
	out := run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x42 0 8M", "-c", "read -P 0x42 0 8M", uri("vol0"))
	if strings.Contains(out, "failed") {
		t.Fatalf("qemu-io over the Unix socket:\n%s", out)
	}
	run(t, "qemu-io", "-f", "raw", "-c", "read -P 0x42 0 8M", "-c", "read -P 0 8M 56M", s.URI("vol0"))
	in, sum := writeRandomFile(t, dir, "in.img", 64<<20, 3)
	run(t, "nbdcopy", in, uri("vol0"))
	outFile := filepath.Join(dir, "out.img")
	run(t, "nbdcopy", uri("vol0"), outFile)
	if got := sha256File(t, outFile); got != sum {
		t.Fatalf("nbdcopy through the Unix socket: sha256 %s, want %s", got, sum)
	}
	s.stop()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket file left after exit: %v", err)
	}
}
