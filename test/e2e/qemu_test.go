package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// qemuIO runs qemu-io on uri (raw format) with the given cache mode and
// commands; every command must succeed and any "read -P" must match.
func qemuIO(t *testing.T, uri, cache string, cmds ...string) string {
	t.Helper()
	args := []string{"-f", "raw", "-t", cache}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out := run(t, "qemu-io", append(args, uri)...)
	// qemu-io exits 0 even when a command fails; failures are printed.
	for _, bad := range []string{"Pattern verification failed", "failed:", "error", "Error"} {
		if strings.Contains(out, bad) {
			t.Fatalf("qemu-io -t %s %s: %q in output:\n%s", cache, quoteArgs(cmds), bad, out)
		}
	}
	return out
}

// TestQemuIO writes and verifies patterns, zeroes (with and without
// unmap), discards and flushes with qemu-io, in writethrough mode (FUA on
// every write) and in writeback mode (no FUA unless write -f).
func TestQemuIO(t *testing.T) {
	need(t, "qemu-io")
	testQemuIO(t, startServer(t, stdVolumes))
}

func testQemuIO(t *testing.T, s *server) {
	uri := s.URI("vol0")
	const K, M = 1 << 10, 1 << 20
	for i, cache := range []string{"writethrough", "writeback", "none", "directsync"} {
		t.Run(cache, func(t *testing.T) {
			base := int64(i) * 8 * M // this case's 8 MiB
			at := func(format string, off int64, args ...any) string {
				return fmt.Sprintf(format, append([]any{base + off}, args...)...)
			}
			qemuIO(t, uri, cache,
				at("write -P 0xab %d 1M", 0),
				at("read -P 0xab %d 1M", 0),
				at("write -f -P 0xcd %d 1M", 1*M), // FUA flag on this write
				at("write -z %d 1M", 2*M),         // WRITE_ZEROES with NO_HOLE
				at("write -P 0x5a %d 1M", 3*M),
				at("write -z -u %d 1M", 3*M), // WRITE_ZEROES that may unmap
				at("write -P 0x5a %d 1M", 4*M),
				at("discard %d 512k", 4*M), // TRIM
				"flush",
				at("aio_write -P 0x11 %d 64k", 5*M),
				at("aio_write -P 0x22 %d 64k", 6*M),
				"aio_flush",
			)
			// A second process reads it all back.
			qemuIO(t, uri, cache,
				at("read -P 0xab %d 1M", 0),
				at("read -P 0xcd %d 1M", 1*M),
				at("read -P 0 %d 2M", 2*M),
				at("read -P 0 %d 512k", 4*M), // a trimmed range reads as zeros
				at("read -P 0x5a %d 512k", 4*M+512*K),
				at("read -P 0x11 %d 64k", 5*M),
				at("read -P 0 %d 960k", 5*M+64*K),
				at("read -P 0x22 %d 64k", 6*M),
				at("read -P 0 %d 1M", 7*M),
			)
		})
	}
}

// TestQemuImg: info, convert into and out of the export, compare, and map
// (block status).
func TestQemuImg(t *testing.T) {
	need(t, "qemu-img", "qemu-io")
	testQemuImg(t, startServer(t, stdVolumes), false)
}

// testQemuImg runs TestQemuImg on s's vol0 (64 MiB). keepsZeros says the
// volume maps zeroed ranges as allocated zeros (engine volumes: a zero
// block-map run, not a hole).
func testQemuImg(t *testing.T, s *server, keepsZeros bool) {
	uri := s.URI("vol0")
	const M = 1 << 20

	out := run(t, "qemu-img", "info", "--output=json", uri)
	var info struct {
		VirtualSize int64  `json:"virtual-size"`
		Format      string `json:"format"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("qemu-img info: %v\n%s", err, out)
	}
	if info.VirtualSize != 64*M || info.Format != "raw" {
		t.Errorf("qemu-img info: %+v", info)
	}

	// A sparse 64 MiB source: random data at 0-2M and 10M-11M, a 1 MiB
	// block of zeros written at 20M, the rest never written.
	src := filepath.Join(s.dir, "src.img")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(64 * M)
	rnd, _ := writeRandomFile(t, s.dir, "rnd", 3*M, 2)
	data, err := os.ReadFile(rnd)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(data[:2*M], 0)
	f.WriteAt(data[2*M:], 10*M)
	f.WriteAt(make([]byte, M), 20*M)
	f.Close()

	// Dirty the export first so convert has to zero what the source lacks.
	qemuIO(t, uri, "writeback", "write -P 0x77 30M 1M")

	run(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, uri)
	if out := run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, uri); !strings.Contains(out, "identical") {
		t.Errorf("qemu-img compare: %s", out)
	}
	dst := filepath.Join(s.dir, "dst.img")
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", uri, dst)
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(src)
	if !bytes.Equal(got, want) {
		t.Fatalf("image converted out of the export differs from the source")
	}
	if out := run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", dst, uri); !strings.Contains(out, "identical") {
		t.Errorf("qemu-img compare: %s", out)
	}
	// compare must notice a difference.
	qemuIO(t, uri, "writeback", "write -P 0x01 40M 4k")
	r := runFail(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, uri)
	if !strings.Contains(r.stdout, "Content mismatch at offset 41943040") {
		t.Errorf("qemu-img compare after a change: %s", r)
	}
	qemuIO(t, uri, "writeback", "write -z 40M 4k")

	// map: data where the source had data; the zeros written at 20M and
	// everything else read as zero holes (the RAM volume keeps no zero pages).
	out = run(t, "qemu-img", "map", "--output=json", uri)
	type ext struct {
		Start  int64 `json:"start"`
		Length int64 `json:"length"`
		Data   bool  `json:"data"`
		Zero   bool  `json:"zero"`
	}
	var m []ext
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("qemu-img map: %v\n%s", err, out)
	}
	wantMap := []ext{
		{0, 2 * M, true, false},
		{2 * M, 8 * M, false, true},
		{10 * M, M, true, false},
		{11 * M, 53 * M, false, true},
	}
	if keepsZeros {
		// convert -n zeroed every range the source lacks (WRITE_ZEROES),
		// and the engine keeps zeroed ranges as zero runs of the block
		// map (allocated, reading as zeros), never as holes: on a clone a
		// hole would expose the snapshot underneath.
		wantMap = []ext{
			{0, 2 * M, true, false},
			{2 * M, 8 * M, true, true},
			{10 * M, M, true, false},
			{11 * M, 53 * M, true, true},
		}
	}
	if !reflect.DeepEqual(m, wantMap) {
		t.Errorf("qemu-img map:\n got %+v\nwant %+v", m, wantMap)
	}
}

// TestQemuNbdList lists the exports the way qemu does (LIST, INFO per
// export, LIST_META_CONTEXT).
func TestQemuNbdList(t *testing.T) {
	need(t, "qemu-nbd")
	s := startServer(t, stdVolumes)
	out := run(t, "qemu-nbd", "--list", "-b", "127.0.0.1", "-p", itoa(s.port))
	for _, want := range []string{
		"exports available: 3",
		" export: 'vol0'\n  description: scratch volume\n  size:  67108864\n  flags: 0xded ( flush fua trim zeroes df multi cache fast-zero )\n  min block: 1\n  opt block: 4096\n  max block: 33554432\n  available meta contexts: 1\n   base:allocation\n",
		" export: 'ro'\n  description: read-only volume\n  size:  1048576\n  flags: 0x58f ( readonly flush fua df multi cache )\n  min block: 512\n",
		" export: 'blk4k'\n  description: 4 KiB blocks\n  size:  4194304\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("qemu-nbd --list lacks %q:\n%s", want, out)
		}
	}
}
