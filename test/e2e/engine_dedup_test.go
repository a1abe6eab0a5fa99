package e2e

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestEngineDedup: through the real binary, a 1 MiB block written twice
// with qemu-io, the second copy 3 sectors off the first's alignment, is
// stored once with dedup on (the default) and twice with `dedup:
// {enabled: false}`; nbdcopy reads the volume back exact either way. (The
// copies are written one after the other: inline dedup finds data already
// acknowledged, not a copy in flight at the same moment.)
func TestEngineDedup(t *testing.T) {
	need(t, "nbdcopy", "qemu-io")
	block := make([]byte, 1<<20)
	rand.Read(block)
	img := make([]byte, 64<<20)
	copy(img, block)
	const second = 8<<20 + 3*512
	copy(img[second:], block)
	for _, on := range []bool{true, false} {
		t.Run(map[bool]string{true: "on", false: "off"}[on], func(t *testing.T) {
			dir := t.TempDir()
			extra := engineConfig(dir)
			if !on {
				extra += "dedup: {enabled: false}\n"
			}
			s := startServerIn(t, dir, extra)
			in, src := filepath.Join(dir, "in.img"), filepath.Join(dir, "block.bin")
			if err := os.WriteFile(in, img, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(src, block, 0o644); err != nil {
				t.Fatal(err)
			}
			qemuIO(t, s.URI("vol0"), "none", "write -s "+src+" 0 1M", fmt.Sprintf("write -s %s %d 1M", src, second))
			var st struct {
				Physical int64            `json:"physical_bytes"`
				Counters map[string]int64 `json:"counters"`
			}
			out := s.shale(t, "stats", "--json")
			if err := json.Unmarshal([]byte(out), &st); err != nil {
				t.Fatalf("stats --json: %v\n%s", err, out)
			}
			dup := st.Counters["dedup_sectors"]
			if on && (dup < 2048*9/10 || st.Physical > (1<<20)*11/10) {
				t.Errorf("dedup on: %d duplicate sectors, %d physical bytes for two copies of 1 MiB of random data", dup, st.Physical)
			}
			if !on && (dup != 0 || st.Physical < 2<<20) {
				t.Errorf("dedup off: %d duplicate sectors, %d physical bytes", dup, st.Physical)
			}
			if idx := st.Counters["dedup_index_bytes"]; on != (idx > 0) {
				t.Errorf("dedup %v: index of %d bytes", on, idx)
			}
			back := filepath.Join(dir, "out.img")
			run(t, "nbdcopy", s.URI("vol0"), back)
			if fileHash(t, back) != fileHash(t, in) {
				t.Error("volume reads back different from what was written")
			}
		})
	}
}
