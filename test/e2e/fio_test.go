package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestFio writes with fio's nbd engine (libnbd, one connection per job,
// requests in flight up to iodepth) and verifies every block with crc32c,
// with one job and with two jobs on two connections.
func TestFio(t *testing.T) {
	need(t, "fio")
	testFio(t, startServer(t, "volumes:\n  - {name: vol0, size: 128M, ram: true}\n"))
}

// testFio runs TestFio on s, which serves a 128 MiB volume vol0.
func testFio(t *testing.T, s *server) {
	for _, tc := range []struct {
		name    string
		numjobs int
		args    []string
	}{
		{"randwrite-4k-qd32", 1, []string{"--rw=randwrite", "--bs=4k", "--iodepth=32", "--size=32M"}},
		{"randwrite-mixed-bs-qd16", 1, []string{"--rw=randwrite", "--bssplit=4k/50:16k/25:64k/15:1m/10", "--iodepth=16", "--size=32M"}},
		{"write-1m-qd8-numjobs2", 2, []string{"--rw=write", "--bs=1m", "--iodepth=8", "--size=32M", "--offset_increment=32M"}},
		{"randwrite-4k-qd32-numjobs2", 2, []string{"--rw=randwrite", "--bs=4k", "--iodepth=32", "--size=16M", "--offset_increment=32M", "--fsync=64"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			jsonPath := filepath.Join(t.TempDir(), "fio.json")
			args := []string{
				"--name=" + tc.name, "--ioengine=nbd", "--uri=" + s.URI("vol0"),
				fmt.Sprintf("--numjobs=%d", tc.numjobs),
				"--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--randrepeat=0",
				"--output-format=json", "--output=" + jsonPath,
				// No verify state files left in the package directory.
				"--verify_state_save=0",
			}
			run(t, "fio", append(args, tc.args...)...)
			out, err := os.ReadFile(jsonPath)
			if err != nil {
				t.Fatal(err)
			}
			var res struct {
				Jobs []struct {
					Name  string `json:"jobname"`
					Error int    `json:"error"`
					Read  struct {
						IOBytes int64 `json:"io_bytes"`
					} `json:"read"`
					Write struct {
						IOBytes int64 `json:"io_bytes"`
					} `json:"write"`
				} `json:"jobs"`
			}
			if err := json.Unmarshal(out, &res); err != nil {
				t.Fatalf("fio JSON: %v\n%s", err, out)
			}
			if len(res.Jobs) != tc.numjobs {
				t.Fatalf("fio ran %d jobs, want %d", len(res.Jobs), tc.numjobs)
			}
			for _, j := range res.Jobs {
				// The verify phase reads back everything written.
				if j.Error != 0 || j.Write.IOBytes == 0 || j.Read.IOBytes < j.Write.IOBytes/2 {
					t.Errorf("fio job %s: error %d, wrote %d bytes, verified %d", j.Name, j.Error, j.Write.IOBytes, j.Read.IOBytes)
				}
			}
		})
	}
}
