package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shalestore/shale/admin"
	"github.com/shalestore/shale/core"
)

// cliArray is a small in-memory admin.Array for the CLI tests.
type cliArray struct {
	mu    sync.Mutex
	vols  map[string]core.VolumeInfo
	stats core.Stats
}

func (a *cliArray) CreateVolume(ctx context.Context, name string, size int64) (core.VolumeInfo, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.vols[name]; ok {
		return core.VolumeInfo{}, fmt.Errorf("volume %q: %w", name, core.ErrExists)
	}
	if size <= 0 || size%512 != 0 {
		return core.VolumeInfo{}, fmt.Errorf("size %d: %w", size, core.ErrInvalid)
	}
	v := core.VolumeInfo{Name: name, Size: size, Created: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	a.vols[name] = v
	return v, nil
}

func (a *cliArray) ResizeVolume(ctx context.Context, name string, size int64) (core.VolumeInfo, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	v, ok := a.vols[name]
	if !ok {
		return v, fmt.Errorf("volume %q: %w", name, core.ErrNotFound)
	}
	v.Size = size
	a.vols[name] = v
	return v, nil
}

func (a *cliArray) DeleteVolume(ctx context.Context, name string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.vols[name]; !ok {
		return fmt.Errorf("volume %q: %w", name, core.ErrNotFound)
	}
	for n := range a.vols {
		if n == name || strings.HasPrefix(n, name+"@") {
			delete(a.vols, n)
		}
	}
	return nil
}

func (a *cliArray) list(snap bool, vol string) []core.VolumeInfo {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []core.VolumeInfo
	for n, v := range a.vols {
		if v.Snapshot == snap && (vol == "" || strings.HasPrefix(n, vol+"@")) {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (a *cliArray) Volumes() []core.VolumeInfo             { return a.list(false, "") }
func (a *cliArray) Snapshots(vol string) []core.VolumeInfo { return a.list(true, vol) }

func (a *cliArray) CreateSnapshot(ctx context.Context, vol, snap string) (core.VolumeInfo, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	v, ok := a.vols[vol]
	if !ok {
		return v, fmt.Errorf("volume %q: %w", vol, core.ErrNotFound)
	}
	s := core.VolumeInfo{Name: vol + "@" + snap, Size: v.Size, Snapshot: true, Origin: vol, Created: v.Created}
	a.vols[s.Name] = s
	return s, nil
}

func (a *cliArray) DeleteSnapshot(ctx context.Context, name string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.vols[name]; !ok {
		return fmt.Errorf("snapshot %q: %w", name, core.ErrNotFound)
	}
	delete(a.vols, name)
	return nil
}

func (a *cliArray) Clone(ctx context.Context, snapshot, vol string) (core.VolumeInfo, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.vols[snapshot]
	if !ok {
		return s, fmt.Errorf("snapshot %q: %w", snapshot, core.ErrNotFound)
	}
	v := core.VolumeInfo{Name: vol, Size: s.Size, Origin: snapshot, Created: s.Created}
	a.vols[vol] = v
	return v, nil
}

func (a *cliArray) Stats() core.Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stats
}

// startAdmin serves a cliArray on DIR/admin.sock and returns it.
func startAdmin(t *testing.T, dir string) *cliArray {
	t.Helper()
	arr := &cliArray{vols: map[string]core.VolumeInfo{}}
	srv, err := admin.NewServer(admin.Options{Array: arr, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := admin.Listen(filepath.Join(dir, "admin.sock"))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return arr
}

// cli runs the shale command tree in process.
func cli(args ...string) (string, error) {
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// TestCLI runs every admin command against a server on a fake array.
func TestCLI(t *testing.T) {
	t.Setenv("SHALE_DATA_DIR", "")
	dir := t.TempDir()
	arr := startAdmin(t, dir)
	d := "--data-dir=" + dir
	steps := []struct {
		args []string
		want string // a regexp the output must match
	}{
		{[]string{"volume", "create", "db", "10G", d}, `^created volume db \(10 GiB\)\n$`},
		{[]string{"volume", "create", "web", "4096", d}, `^created volume web \(4 KiB\)\n$`},
		{[]string{"volume", "create", "big", "1.5T", d}, `NEVER`}, // bad size; checked below
		{[]string{"volume", "list", d}, `^NAME +SIZE +ORIGIN +CREATED\ndb +10 GiB +- +2025-01-02 \d\d:04:05\nweb +4 KiB +- `},
		{[]string{"volume", "resize", "web", "512M", d}, `^resized volume web to 512 MiB\n$`},
		{[]string{"snapshot", "create", "db", "s1", d}, `^created snapshot db@s1\n$`},
		{[]string{"snapshot", "create", "web@s2", d}, `^created snapshot web@s2\n$`},
		{[]string{"snapshot", "list", "db", d}, `^NAME +SIZE +CREATED\ndb@s1 +10 GiB +2025-01-02 \d\d:04:05\n$`},
		{[]string{"snapshot", "list", d}, `(?s)db@s1.*web@s2 +512 MiB`},
		{[]string{"clone", "db@s1", "db2", d}, `^created volume db2 \(10 GiB\) from db@s1\n$`},
		{[]string{"volume", "list", d}, `\ndb2 +10 GiB +db@s1 +`},
		{[]string{"snapshot", "delete", "web@s2", d}, `^deleted snapshot web@s2\n$`},
		{[]string{"volume", "delete", "web", d}, `^deleted volume web\n$`},
	}
	for _, s := range steps {
		out, err := cli(s.args...)
		if s.want == "NEVER" {
			if err == nil || !strings.Contains(err.Error(), `size: "1.5T"`) {
				t.Errorf("%q: %v; want a size error", s.args, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v\n%s", s.args, err, out)
		}
		if !regexp.MustCompile(s.want).MatchString(out) {
			t.Errorf("%q: output\n%s\ndoes not match %s", s.args, out, s.want)
		}
	}
	if _, ok := arr.vols["db"]; !ok || arr.vols["db"].Size != 10<<30 {
		t.Errorf("array state: %+v", arr.vols)
	}
	if _, ok := arr.vols["web"]; ok {
		t.Errorf("web not deleted: %+v", arr.vols)
	}

	// JSON lists.
	out, err := cli("volume", "list", "--json", d)
	var vols []core.VolumeInfo
	if err != nil || json.Unmarshal([]byte(out), &vols) != nil || len(vols) != 2 || vols[0].Name != "db" || vols[1].Origin != "db@s1" {
		t.Errorf("volume list --json: %v %s", err, out)
	}

	// Stats, human and JSON.
	arr.mu.Lock()
	arr.stats = core.Stats{
		SpaceStats:    core.SpaceStats{LogicalBytes: 3 << 30, PhysicalBytes: 1 << 30, DataReduction: 3, FreeBytes: 50 << 30},
		CapacityBytes: 56 << 30,
		Volumes: map[string]core.SpaceStats{
			"db":    {LogicalBytes: 3 << 30, PhysicalBytes: 1 << 30, DataReduction: 3, FreeBytes: 50 << 30},
			"db@s1": {FreeBytes: 50 << 30},
		},
	}
	arr.mu.Unlock()
	out, err = cli("stats", d)
	want := `^capacity +56 GiB\nfree +50 GiB\nlogical +3 GiB\nphysical +1 GiB\nreduction +3.0:1\n\nVOLUME +LOGICAL +PHYSICAL +REDUCTION\ndb +3 GiB +1 GiB +3.0:1\ndb@s1 +0 B +0 B +-\n$`
	if err != nil || !regexp.MustCompile(want).MatchString(out) {
		t.Errorf("stats: %v\n%s", err, out)
	}
	out, err = cli("stats", "--json", d)
	var m map[string]any
	if err != nil || json.Unmarshal([]byte(out), &m) != nil {
		t.Fatalf("stats --json: %v\n%s", err, out)
	}
	for k, v := range map[string]float64{"logical_bytes": 3 << 30, "physical_bytes": 1 << 30, "data_reduction": 3, "free_bytes": 50 << 30, "capacity_bytes": 56 << 30} {
		if m[k] != v {
			t.Errorf("stats --json: %s = %v, want %v", k, m[k], v)
		}
	}
	if db, ok := m["volumes"].(map[string]any)["db"].(map[string]any); !ok || db["logical_bytes"] != float64(3<<30) || db["data_reduction"] != 3.0 {
		t.Errorf("stats --json: per-volume figures: %v", m["volumes"])
	}

	// Server errors come back as clear messages.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"volume", "create", "db", "1G", d}, `volume "db": already exists`},
		{[]string{"volume", "create", "x", "1000", d}, `size 1000: invalid argument`},
		{[]string{"volume", "delete", "nope", d}, `volume "nope": not found`},
		{[]string{"snapshot", "delete", "db", d}, `"db" is not VOLUME@SNAPSHOT`},
		{[]string{"clone", "db", "x", d}, `"db" is not VOLUME@SNAPSHOT`},
		{[]string{"snapshot", "create", "db", d}, `give VOLUME SNAPSHOT or VOLUME@SNAPSHOT`},
		{[]string{"volume", "create", "onlyname", d}, `accepts 2 arg(s)`},
	} {
		if _, err := cli(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.args, err, tc.want)
		}
	}
}

// TestCLIFindsSocket: --data-dir, SHALE_DATA_DIR, the --config file's
// data_dir and --admin-socket all lead to the server; nothing leads to a
// clear "not running" error.
func TestCLIFindsSocket(t *testing.T) {
	dir := t.TempDir()
	startAdmin(t, dir)
	cfg := writeConfig(t, fmt.Sprintf("data_dir: %s\n", dir))
	t.Setenv("SHALE_DATA_DIR", "")
	for _, args := range [][]string{
		{"volume", "list", "--data-dir", dir},
		{"volume", "list", "--config", cfg},
		{"snapshot", "list", "-c", cfg},
		{"stats", "--admin-socket", filepath.Join(dir, "admin.sock")},
		{"clone", "a@b", "c", "--data-dir", dir}, // reaches the server: not found
	} {
		out, err := cli(args...)
		if err != nil && !strings.Contains(err.Error(), "not found") {
			t.Errorf("%q: %v\n%s", args, err, out)
		}
	}
	t.Setenv("SHALE_DATA_DIR", dir)
	if _, err := cli("volume", "list"); err != nil {
		t.Errorf("SHALE_DATA_DIR: %v", err)
	}
	empty := t.TempDir()
	if _, err := cli("volume", "list", "--data-dir", empty); err == nil ||
		err.Error() != "shale is not running: no admin socket at "+filepath.Join(empty, "admin.sock") {
		t.Errorf("no server: %v", err)
	}
	// The flag beats the environment.
	if _, err := cli("stats", "--data-dir", empty); err == nil || !strings.Contains(err.Error(), empty) {
		t.Errorf("--data-dir over SHALE_DATA_DIR: %v", err)
	}
}

// TestCLIExitCode runs the binary: a failed admin command exits non-zero
// with the error on stderr.
func TestCLIExitCode(t *testing.T) {
	empty := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "SHALE_TEST_RUN_MAIN=1", "SHALE_TEST_ARGS=volume list --data-dir "+empty)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v", err)
	}
	if want := "shale is not running: no admin socket at " + filepath.Join(empty, "admin.sock") + "\n"; stderr.String() != want {
		t.Errorf("stderr %q, want %q", stderr.String(), want)
	}
}
