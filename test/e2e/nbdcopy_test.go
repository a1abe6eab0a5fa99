package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// writeRandomFile writes size pseudo-random bytes (seeded, incompressible)
// to a new file in dir and returns its path and SHA-256.
func writeRandomFile(t *testing.T, dir, name string, size int64, seed uint64) (string, string) {
	t.Helper()
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 's', 'h', 'a', 'l', 'e'})
	if _, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(rng, size)); err != nil {
		t.Fatal(err)
	}
	return path, hex.EncodeToString(h.Sum(nil))
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestNbdcopy copies 64 MiB of random data into a volume and out again
// with nbdcopy, which opens several connections when the export advertises
// multi-conn, then from volume to volume.
func TestNbdcopy(t *testing.T) {
	need(t, "nbdcopy")
	testNbdcopy(t, startServer(t, `volumes:
  - {name: vol0, size: 64M, ram: true}
  - {name: vol1, size: 64M, ram: true}
`))
}

// testNbdcopy runs TestNbdcopy on s, which serves 64 MiB volumes vol0 and
// vol1.
func testNbdcopy(t *testing.T, s *server) {
	const size = 64 << 20
	in, sum := writeRandomFile(t, s.dir, "in.img", size, 1)

	opened := s.idle()
	run(t, "nbdcopy", "--connections=4", "--threads=4", "--flush", in, s.URI("vol0"))
	if n := s.countAtLeast(`msg="nbd connection open"`, opened+2) - opened; n < 2 {
		t.Errorf("nbdcopy into vol0 opened %d connection(s); want several (multi-conn)", n)
	}
	out := filepath.Join(s.dir, "out.img")
	opened = s.idle()
	run(t, "nbdcopy", "--connections=4", "--threads=4", s.URI("vol0"), out)
	if n := s.countAtLeast(`msg="nbd connection open"`, opened+2) - opened; n < 2 {
		t.Errorf("nbdcopy out of vol0 opened %d connection(s); want several (multi-conn)", n)
	}
	if got := sha256File(t, out); got != sum {
		t.Fatalf("data copied out of vol0 differs: sha256 %s, want %s", got, sum)
	}

	// Volume to volume, then out again (default connection settings).
	run(t, "nbdcopy", s.URI("vol0"), s.URI("vol1"))
	out1 := filepath.Join(s.dir, "out1.img")
	run(t, "nbdcopy", s.URI("vol1"), out1)
	if got := sha256File(t, out1); got != sum {
		t.Fatalf("data copied vol0 -> vol1 -> file differs: sha256 %s, want %s", got, sum)
	}
}
