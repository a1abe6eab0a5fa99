package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Engine volumes: the shale binary with its storage engine on small file
// drives (7+2 as by default, with small AUs and write units so a test
// writes few bytes), administered with the shale CLI as a subprocess.

// engineConfig is the configuration of a test's engine: nine 64 MiB drive
// files and a 64 MiB NVRAM file in DIR/data, geometry 7+2 with 1 MiB AUs
// and 128 KiB write units, and the engine volume vol0.
func engineConfig(dir string) string {
	var b strings.Builder
	b.WriteString("drives:\n")
	for i := range 9 {
		fmt.Fprintf(&b, "  - {backend: file, path: %s, size: 64M}\n", filepath.Join(dir, "data", fmt.Sprintf("drive-%d.img", i)))
	}
	fmt.Fprintf(&b, "nvram: {backend: file, path: %s, size: 64M}\n", filepath.Join(dir, "data", "nvram.img"))
	b.WriteString("geometry: {data: 7, parity: 2, au_size: 1M, write_unit: 128K}\n")
	b.WriteString("volumes:\n  - {name: vol0, size: 64M, description: \"engine volume\"}\n")
	return b.String()
}

// startEngine starts shale serve with engineConfig in a fresh directory.
func startEngine(t *testing.T) *server {
	t.Helper()
	dir := t.TempDir()
	s := startServerIn(t, dir, engineConfig(dir))
	return s
}

// startServerIn starts shale serve in dir with the standard header
// (listen, data_dir DIR/data, log) and extra, writing DIR/shale.yaml; a
// second call with the same dir restarts on the same drives.
func startServerIn(t *testing.T, dir, extra string) *server {
	t.Helper()
	cfg := fmt.Sprintf("listen: 127.0.0.1:0\ndata_dir: %s\nlog: {level: info, format: text}\n%s\n",
		filepath.Join(dir, "data"), extra)
	cfgPath := filepath.Join(dir, "shale.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return startServerConfig(t, shaleBinary(t), dir, cfgPath)
}

// shale runs the shale CLI against s's admin socket; it must succeed.
func (s *server) shale(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, shaleBinary(t), append(args, "--data-dir", filepath.Join(s.dir, "data"))...)
}

// shaleFail runs the shale CLI against s; it must fail. It returns stderr.
func (s *server) shaleFail(t *testing.T, args ...string) string {
	t.Helper()
	r := runFail(t, shaleBinary(t), append(args, "--data-dir", filepath.Join(s.dir, "data"))...)
	return r.stderr
}

// exportNames lists the server's exports with nbdinfo --list.
func exportNames(t *testing.T, s *server) []string {
	t.Helper()
	var names []string
	for _, e := range nbdinfo(t, "--list", "nbd://"+s.addr).Exports {
		names = append(names, e.Name)
	}
	slices.Sort(names)
	return names
}

// TestEngineAdminCLI drives every admin command against a running server
// and checks what NBD clients then see.
func TestEngineAdminCLI(t *testing.T) {
	need(t, "nbdinfo", "qemu-io")
	s := startEngine(t)
	if n := s.countAtLeast(`msg="shale array open"`, 1); n != 1 {
		t.Fatalf("%d start lines naming the array, want 1", n)
	}
	log := s.Log()
	for _, want := range []string{"geometry=\"7+2 au=1048576 wu=131072\"", "drives=9", "volumes=vol0", "capacity="} {
		if !strings.Contains(log, want) {
			t.Errorf("start log lacks %s:\n%s", want, log)
		}
	}

	if out := s.shale(t, "volume", "list"); !regexpMatch(`(?m)^vol0 +64 MiB +- +`, out) {
		t.Errorf("volume list:\n%s", out)
	}
	if out := s.shale(t, "volume", "create", "data", "1G"); out != "created volume data (1 GiB)\n" {
		t.Errorf("volume create: %q", out)
	}
	s.shale(t, "volume", "resize", "data", "2G")
	s.shale(t, "snapshot", "create", "data", "s1")
	s.shale(t, "clone", "data@s1", "copy")
	if got, want := exportNames(t, s), []string{"copy", "data", "data@s1", "vol0"}; !reflect.DeepEqual(got, want) {
		t.Errorf("exports %v, want %v", got, want)
	}
	info := nbdinfo(t, s.URI("data"))
	if len(info.Exports) != 1 || info.Exports[0].Size != 2<<30 {
		t.Errorf("resized volume: %+v", info.Exports)
	}
	var vols []struct {
		Name   string `json:"name"`
		Size   int64  `json:"size"`
		Origin string `json:"origin"`
	}
	if err := json.Unmarshal([]byte(s.shale(t, "volume", "list", "--json")), &vols); err != nil {
		t.Fatal(err)
	}
	if len(vols) != 3 || vols[0].Name != "copy" || vols[0].Origin != "data@s1" || vols[1].Size != 2<<30 {
		t.Errorf("volume list --json: %+v", vols)
	}
	if out := s.shale(t, "snapshot", "list", "data"); !regexpMatch(`(?m)^data@s1 +2 GiB +`, out) {
		t.Errorf("snapshot list:\n%s", out)
	}

	// Snapshots are served read-only with every feature a volume has.
	snap := nbdinfo(t, s.URI("data@s1")).Exports[0]
	if !snap.ReadOnly || !snap.CanMultiConn || !snap.CanFlush || snap.BlockMin != 512 || snap.BlockPref != 4096 || snap.BlockMax != 32<<20 {
		t.Errorf("snapshot export: %+v", snap)
	}
	vol := nbdinfo(t, s.URI("vol0")).Exports[0]
	if want := rwExport("vol0", "engine volume", 64<<20, 512); !reflect.DeepEqual(vol, want) {
		t.Errorf("engine volume export:\n got %+v\nwant %+v", vol, want)
	}

	// Errors: non-zero exit and the server's message.
	if e := s.shaleFail(t, "volume", "create", "data", "1G"); !strings.Contains(e, "already exists") {
		t.Errorf("duplicate create: %q", e)
	}
	if e := s.shaleFail(t, "snapshot", "delete", "data@nope"); !strings.Contains(e, "not found") {
		t.Errorf("delete missing snapshot: %q", e)
	}

	// Deleting a volume takes its snapshots; the clone stays.
	s.shale(t, "volume", "delete", "data")
	if got, want := exportNames(t, s), []string{"copy", "vol0"}; !reflect.DeepEqual(got, want) {
		t.Errorf("exports after delete %v, want %v", got, want)
	}
	s.shale(t, "volume", "delete", "copy")
	if n := s.countAtLeast(`msg="admin delete volume"`, 2); n != 2 {
		t.Errorf("%d log lines for the two deletes", n)
	}
}

// TestEngineStats writes data and checks stats --json.
func TestEngineStats(t *testing.T) {
	need(t, "qemu-io")
	s := startEngine(t)
	qemuIO(t, s.URI("vol0"), "none", "write -P 0x61 0 4M", "write -z 4M 4M")
	var st struct {
		Logical   int64   `json:"logical_bytes"`
		Physical  int64   `json:"physical_bytes"`
		Reduction float64 `json:"data_reduction"`
		Free      int64   `json:"free_bytes"`
		Capacity  int64   `json:"capacity_bytes"`
		Volumes   map[string]struct {
			Logical  int64 `json:"logical_bytes"`
			Physical int64 `json:"physical_bytes"`
		} `json:"volumes"`
	}
	out := s.shale(t, "stats", "--json")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("stats --json: %v\n%s", err, out)
	}
	// 4 MiB of one repeated byte compresses far below 4 MiB; zeroes are
	// not logical data.
	if st.Logical != 4<<20 || st.Physical <= 0 || st.Physical >= st.Logical || st.Reduction <= 1 ||
		st.Free <= 0 || st.Free > st.Capacity || st.Volumes["vol0"].Logical != 4<<20 {
		t.Errorf("stats after writing 4 MiB of 'a':\n%s", out)
	}
	if human := s.shale(t, "stats"); !regexpMatch(`(?m)^logical +4 MiB$`, human) || !regexpMatch(`(?m)^vol0 +4 MiB +`, human) {
		t.Errorf("stats:\n%s", human)
	}
}

// TestEngineRestart: data written with qemu-io reads back after shale is
// stopped and started again on the same drives, and a snapshot export
// still reads the data it froze.
func TestEngineRestart(t *testing.T) {
	need(t, "qemu-io", "nbdinfo")
	dir := t.TempDir()
	s := startServerIn(t, dir, engineConfig(dir))
	qemuIO(t, s.URI("vol0"), "none",
		"write -P 0xab 0 1M",
		"write -P 0xcd 4M 64k",
		"write -P 0x11 8M 512", // one sector
		"write -P 0x22 9M 4k",
	)
	s.shale(t, "snapshot", "create", "vol0", "before")
	qemuIO(t, s.URI("vol0"), "none",
		"write -P 0xef 0 1M",
		"discard 4M 64k",
		"write -z 9M 4k",
	)
	s.shale(t, "volume", "create", "extra", "8M")
	qemuIO(t, s.URI("extra"), "none", "write -P 0x77 4096 8k")
	// A write to the snapshot export is refused.
	if r := execTool("qemu-io", "-f", "raw", "-c", "write -P 1 0 4k", s.URI("vol0@before")); r.err == nil &&
		!strings.Contains(r.stdout+r.stderr, "failed") {
		t.Errorf("write to a snapshot export did not fail:\n%s", r)
	}
	s.stop()
	if !strings.Contains(s.Log(), `msg="shale array closed"`) {
		t.Errorf("no log line saying the array was closed:\n%s", tail(s.Log(), 20))
	}

	s = startServerIn(t, dir, engineConfig(dir))
	if strings.Contains(s.Log(), "creating a new array") {
		t.Fatalf("the restart created a new array over the old one:\n%s", s.Log())
	}
	qemuIO(t, s.URI("vol0"), "none",
		"read -P 0xef 0 1M",
		"read -P 0 4M 64k",
		"read -P 0x11 8M 512",
		"read -P 0 8389120 512", // the sector after it
		"read -P 0 9M 4k",
	)
	qemuIORead(t, s.URI("vol0@before"),
		"read -P 0xab 0 1M",
		"read -P 0xcd 4M 64k",
		"read -P 0x11 8M 512",
		"read -P 0x22 9M 4k",
		"read -P 0 10M 1M",
	)
	qemuIO(t, s.URI("extra"), "none", "read -P 0 0 4k", "read -P 0x77 4096 8k")
	if got, want := exportNames(t, s), []string{"extra", "vol0", "vol0@before"}; !reflect.DeepEqual(got, want) {
		t.Errorf("exports after restart %v, want %v", got, want)
	}
}

// TestEngineDefaults runs shale serve with nothing configured but the
// listening address: it must make ./shale-data with nine sparse 8 GiB
// drive files and an NVRAM file, create the array and serve the 16 GiB
// volume vol0, and the CLI run in the same directory must find it.
func TestEngineDefaults(t *testing.T) {
	need(t, "nbdinfo")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "shale.yaml")
	if err := os.WriteFile(cfgPath, []byte("listen: 127.0.0.1:0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startServerConfig(t, shaleBinary(t), dir, cfgPath)
	data := filepath.Join(dir, "shale-data")
	fi, err := os.Stat(data)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir: %v %v; want a 0700 directory", fi, err)
	}
	var allocated int64
	for i := range 10 {
		name, size := fmt.Sprintf("drive-%d.img", i), int64(8<<30)
		if i == 9 {
			name, size = "nvram.img", 256<<20
		}
		fi, err := os.Stat(filepath.Join(data, name))
		if err != nil || fi.Size() != size {
			t.Errorf("%s: %v, %v; want %d bytes", name, fi, err, size)
			continue
		}
		allocated += fi.Sys().(*syscall.Stat_t).Blocks * 512
	}
	if allocated > 2<<30 {
		t.Errorf("the default drives use %d bytes on disk; they should be sparse", allocated)
	}
	if fi, err := os.Stat(filepath.Join(data, "admin.sock")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("admin socket: %v %v; want mode 0600", fi, err)
	}
	info := nbdinfo(t, s.URI("vol0"))
	if len(info.Exports) != 1 || info.Exports[0].Size != 16<<30 || info.Exports[0].ReadOnly {
		t.Errorf("vol0: %+v", info.Exports)
	}
	r := execToolIn(dir, shaleBinary(t), "volume", "list")
	if r.err != nil || !regexpMatch(`(?m)^vol0 +16 GiB +`, r.stdout) {
		t.Errorf("shale volume list in the server's directory:\n%s", r)
	}
}

// TestEngineRefusesData: a drive that holds something other than an array
// is never formatted: serve fails, says why, and leaves every byte alone.
func TestEngineRefusesData(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	junk := bytes.Repeat([]byte("my precious filesystem "), 4096)
	path := filepath.Join(data, "drive-3.img")
	if err := os.WriteFile(path, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 64<<20); err != nil {
		t.Fatal(err)
	}
	before := fileHash(t, path)
	cfg := fmt.Sprintf("listen: 127.0.0.1:0\ndata_dir: %s\n%s", data, engineConfig(dir))
	cfgPath := filepath.Join(dir, "shale.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := execTool(shaleBinary(t), "serve", "--config", cfgPath)
	if r.err == nil {
		t.Fatalf("shale serve started on a drive holding other data\n%s", r)
	}
	if !strings.Contains(r.stderr, "drives[3]") || !strings.Contains(r.stderr, "never formats over data") {
		t.Errorf("the error does not say which drive holds data and that shale will not format it:\n%s", r)
	}
	if fileHash(t, path) != before {
		t.Errorf("shale changed the drive holding other data")
	}
	if time.Since(start) > toolTimeout {
		t.Errorf("refusing took %v", time.Since(start))
	}
}

func fileHash(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// qemuIORead runs qemu-io read-only (-r, as a read-only export needs) on
// uri; every command must succeed and any "read -P" must match.
func qemuIORead(t *testing.T, uri string, cmds ...string) {
	t.Helper()
	args := []string{"-r", "-f", "raw", "-t", "none"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out := run(t, "qemu-io", append(args, uri)...)
	for _, bad := range []string{"Pattern verification failed", "failed:", "error", "Error"} {
		if strings.Contains(out, bad) {
			t.Fatalf("qemu-io -r %s: %q in output:\n%s", quoteArgs(cmds), bad, out)
		}
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }

// execToolIn runs name with args in dir under toolTimeout, with the
// environment the server gets (no SHALE_* settings of the developer's).
func execToolIn(dir, name string, args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = serverEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	return result{stdout.String(), stderr.String(), err}
}

// kill9 kills s with SIGKILL and waits for it to exit; the test's cleanup
// then expects nothing more of it.
func (s *server) kill9(t *testing.T) {
	t.Helper()
	s.stopped = true
	s.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-s.exited:
	case <-time.After(serverStopTimeout):
		t.Fatalf("shale did not die of SIGKILL within %v", serverStopTimeout)
	}
	if log := s.Log(); strings.Contains(log, "DATA RACE") || strings.Contains(log, "panic:") {
		t.Fatalf("shale reported a race or panicked before SIGKILL:\n%s", tail(log, 100))
	}
}

// TestEngineKill9: writes qemu-io saw acknowledged are there after the
// server is killed with SIGKILL (no shutdown, no flush) and started again,
// round after round, along with the volumes and snapshots made through
// the CLI.
func TestEngineKill9(t *testing.T) {
	need(t, "qemu-io")
	dir := t.TempDir()
	const rounds = 4
	for r := range rounds {
		s := startServerIn(t, dir, engineConfig(dir))
		if r > 0 && strings.Contains(s.Log(), "creating a new array") {
			t.Fatalf("round %d: a new array was created over the old one", r)
		}
		// Everything written in earlier rounds is there.
		var checks []string
		for p := range r {
			checks = append(checks, fmt.Sprintf("read -P %d %d 256k", 0x40+p, p<<20), fmt.Sprintf("read -P %d %d 512", 0x60+p, p<<20+256<<10))
		}
		if len(checks) > 0 {
			qemuIO(t, s.URI("vol0"), "none", checks...)
			qemuIORead(t, s.URI(fmt.Sprintf("vol0@r%d", r-1)), checks...)
		}
		// This round's writes, each acknowledged before the next starts;
		// writeback mode: no FUA, no flush.
		qemuIO(t, s.URI("vol0"), "writeback",
			fmt.Sprintf("write -P %d %d 256k", 0x40+r, r<<20),
			fmt.Sprintf("write -P %d %d 512", 0x60+r, r<<20+256<<10),
		)
		s.shale(t, "snapshot", "create", "vol0", fmt.Sprintf("r%d", r))
		s.kill9(t)
	}
}
