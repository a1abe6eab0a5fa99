package e2e

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var kill9Iterations = flag.Int("kill9.iterations", 50, "TestKill9: how many times the server is killed")

// kill9VolumeBytes is the size of the volume TestKill9 writes; every
// iteration reads all of it back.
const kill9VolumeBytes = 32 << 20

// kill9Config is an engine array small enough to restart quickly: six
// 48 MiB file drives in 4+2 with 1 MiB AUs, a 32 MiB NVRAM file.
func kill9Config(dir string) string {
	var b strings.Builder
	b.WriteString("drives:\n")
	for i := range 6 {
		fmt.Fprintf(&b, "  - {backend: file, path: %s, size: 48M}\n", filepath.Join(dir, fmt.Sprintf("drive-%d.img", i)))
	}
	fmt.Fprintf(&b, "nvram: {backend: file, path: %s, size: 32M}\n", filepath.Join(dir, "nvram.img"))
	b.WriteString("geometry: {data: 4, parity: 2, au_size: 1M, write_unit: 64K}\n")
	fmt.Fprintf(&b, "volumes:\n  - {name: crash, size: %d}\n", kill9VolumeBytes)
	return b.String()
}

// kill9Write is one write crashwriter.py issued.
type kill9Write struct {
	version      uint64
	first, n     int64
	issued, done int // line numbers of its I and A lines; done -1 if never acknowledged
}

// TestKill9 kills the server with SIGKILL while crashwriter.py keeps
// 16 writes of 512 B to 32 KiB in flight (half compressible, overlapping
// often), restarts it on the same drives and reads the whole volume back
// with nbdcopy, -kill9.iterations times (50 by default). Every sector must
// hold a version some write really put there, and no write the server
// acknowledged may be lost: a sector may show an older value only if no
// acknowledged write to it was issued after that value's write completed
// (writes in flight together have no order in NBD).
func TestKill9(t *testing.T) {
	need(t, "nbdcopy")
	needPythonNBD(t)
	bin := shaleBinary(t)
	dir := t.TempDir()
	cfg := fmt.Sprintf("listen: 127.0.0.1:0\ndata_dir: %s\nlog: {level: info, format: text}\n%s",
		filepath.Join(dir, "data"), kill9Config(dir))
	cfgPath := filepath.Join(dir, "shale.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	sectors := int64(kill9VolumeBytes / 512)
	old := make([]uint64, sectors) // the version each sector held at the last check; 0 = zeros
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	script := filepath.Join(repoRoot(t), "test", "e2e", "testdata", "crashwriter.py")
	var acked, issued int
	var last []kill9Write // the writes of the run just killed
	for it := 0; it <= *kill9Iterations; it++ {
		s := startServerConfig(t, bin, dir, cfgPath)
		// What survived the last kill (nothing was written the first time).
		if !checkKill9Image(t, it, s, dir, old, last) {
			return
		}
		if it == *kill9Iterations {
			s.stop()
			break
		}
		cmd := exec.Command("/usr/bin/python3", script, s.URI("crash"), strconv.Itoa(it+1), strconv.FormatUint(uint64(it+1)*1_000_000_000, 10))
		var out bytes.Buffer
		cmd.Stdout = &out
		cmd.Stderr = &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(200+rng.IntN(1300)) * time.Millisecond)
		s.kill9(t)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("iteration %d: crashwriter: %v\n%s", it, err, tail(out.String(), 20))
		}
		var err error
		if last, err = parseKill9Writer(out.Bytes()); err != nil {
			t.Fatalf("iteration %d: %v", it, err)
		}
		for _, w := range last {
			issued++
			if w.done >= 0 {
				acked++
			}
		}
	}
	t.Logf("%d kills, %d writes issued, %d acknowledged before the kill, none lost", *kill9Iterations, issued, acked)
}

// parseKill9Writer reads crashwriter.py's output.
func parseKill9Writer(out []byte) ([]kill9Write, error) {
	var writes []kill9Write
	byVersion := map[uint64]int{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for line := 0; sc.Scan(); line++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch {
		case f[0] == "I" && len(f) == 4:
			v, err1 := strconv.ParseUint(f[1], 10, 64)
			first, err2 := strconv.ParseInt(f[2], 10, 64)
			n, err3 := strconv.ParseInt(f[3], 10, 64)
			if err1 != nil || err2 != nil || err3 != nil {
				return nil, fmt.Errorf("crashwriter line %d: %q", line, sc.Text())
			}
			byVersion[v] = len(writes)
			writes = append(writes, kill9Write{version: v, first: first, n: n, issued: line, done: -1})
		case f[0] == "A" && len(f) == 2:
			v, err := strconv.ParseUint(f[1], 10, 64)
			i, ok := byVersion[v]
			if err != nil || !ok {
				return nil, fmt.Errorf("crashwriter line %d: acknowledgement of unknown write: %q", line, sc.Text())
			}
			writes[i].done = line
		case f[0] == "E":
			// The connection died: the kill.
		default:
			// A traceback means the script itself failed.
			return nil, fmt.Errorf("crashwriter line %d: unexpected output %q\n%s", line, sc.Text(), tail(string(out), 20))
		}
	}
	return writes, nil
}

// checkKill9Image copies the volume out with nbdcopy and checks every
// sector against old (the versions found by the previous check) and the
// writes issued since, then sets old to what it found. It reports whether
// the image was right.
func checkKill9Image(t *testing.T, it int, s *server, dir string, old []uint64, writes []kill9Write) bool {
	t.Helper()
	img := filepath.Join(dir, "image")
	defer os.Remove(img)
	run(t, "nbdcopy", s.URI("crash"), img)
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != len(old)*512 {
		t.Fatalf("iteration %d: nbdcopy gave %d bytes, want %d", it, len(data), len(old)*512)
	}
	// Writes covering each sector, in issue order.
	cover := make(map[int64][]int)
	for i, w := range writes {
		for s := w.first; s < w.first+w.n; s++ {
			cover[s] = append(cover[s], i)
		}
	}
	bad := 0
	report := func(format string, args ...any) {
		if bad < 10 {
			t.Errorf("iteration %d: "+format, append([]any{it}, args...)...)
		}
		bad++
	}
	for sec := range int64(len(old)) {
		got, err := decodeKill9Sector(data[sec*512:(sec+1)*512], sec)
		if err != nil {
			report("sector %d: %v", sec, err)
			continue
		}
		// When did the write that put got there complete? The value from
		// before the kill completed before any of these writes was issued.
		done := -1
		if got != old[sec] {
			found := false
			for _, i := range cover[sec] {
				if writes[i].version == got {
					found, done = true, writes[i].done
					if done < 0 {
						done = math.MaxInt // in flight at the kill: may have landed last
					}
				}
			}
			if !found {
				report("sector %d holds version %d, which no write put there (before: %d)", sec, got, old[sec])
				continue
			}
		}
		for _, i := range cover[sec] {
			if w := writes[i]; w.done >= 0 && w.issued > done {
				report("sector %d holds version %d but acknowledged write %d (sectors %d+%d), issued after that one completed, is lost",
					sec, got, w.version, w.first, w.n)
				break
			}
		}
		old[sec] = got
	}
	if bad > 0 {
		t.Errorf("iteration %d: %d bad sectors", it, bad)
		return false
	}
	return true
}

// decodeKill9Sector returns the version a crashwriter.py sector holds (0
// for a sector of zeros), checking its magic, index and checksum.
func decodeKill9Sector(b []byte, sec int64) (uint64, error) {
	if bytes.Equal(b, make([]byte, 512)) {
		return 0, nil
	}
	if string(b[:8]) != "SHALECRS" {
		return 0, fmt.Errorf("neither zeros nor a written sector (starts %x)", b[:16])
	}
	if idx := int64(binary.LittleEndian.Uint64(b[8:])); idx != sec {
		return 0, fmt.Errorf("holds sector %d's data", idx)
	}
	v := binary.LittleEndian.Uint64(b[16:])
	if crc32.ChecksumIEEE(b[28:]) != binary.LittleEndian.Uint32(b[24:]) {
		return 0, fmt.Errorf("version %d: body checksum mismatch (torn or corrupt)", v)
	}
	return v, nil
}
