package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestDefaultsLoad(t *testing.T) {
	c, err := Load(New(), "")
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:10809" || c.Geometry.Data != 7 || c.Geometry.Parity != 2 ||
		c.Geometry.AUSize != 8<<20 || c.Geometry.WriteUnit != 1<<20 {
		t.Fatalf("defaults: %+v", c)
	}
	if len(c.Volumes) != 1 || c.Volumes[0].Name != "vol0" || c.Volumes[0].RAM || c.Volumes[0].Size != 16<<30 {
		t.Fatalf("default volumes: %+v (want one engine volume vol0 of 16G)", c.Volumes)
	}
	if !c.Engine() {
		t.Fatal("the default configuration does not run the engine")
	}
	// Nine sparse file drives (7+2) and an NVRAM file in ./shale-data.
	if len(c.Drives) != 9 {
		t.Fatalf("default drives: %+v", c.Drives)
	}
	for i, d := range c.Drives {
		want := Drive{Backend: "file", Path: filepath.Join("shale-data", fmt.Sprintf("drive-%d.img", i)), Size: 8 << 30}
		if !reflect.DeepEqual(d, want) {
			t.Errorf("drives[%d] = %+v, want %+v", i, d, want)
		}
	}
	if want := (Drive{Backend: "file", Path: filepath.Join("shale-data", "nvram.img"), Size: 256 << 20,
		Options: map[string]any{"direct": "auto", "preallocate": true, "dsync": true}}); c.NVRAM == nil || !reflect.DeepEqual(*c.NVRAM, want) {
		t.Errorf("default nvram = %+v, want %+v", c.NVRAM, want)
	}
	if c.AdminSocket() != filepath.Join("shale-data", "admin.sock") {
		t.Errorf("admin socket %s", c.AdminSocket())
	}
}

// TestDefaultDevices: where the default drives go and how many there are
// follow data_dir and geometry; configured devices are kept; RAM-only
// configurations get none.
func TestDefaultDevices(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	type want struct {
		engine  bool
		drives  []string // paths
		nvram   string   // "" for none
		volumes int
	}
	nine := func(d string) []string {
		var out []string
		for i := range 9 {
			out = append(out, filepath.Join(d, fmt.Sprintf("drive-%d.img", i)))
		}
		return out
	}
	cases := []struct {
		name, text string
		env        map[string]string
		want       want
	}{
		{"data_dir key", "data_dir: /srv/shale\n", nil, want{true, nine("/srv/shale"), "/srv/shale/nvram.img", 1}},
		{"SHALE_DATA_DIR", "", map[string]string{"SHALE_DATA_DIR": "/var/lib/shale"}, want{true, nine("/var/lib/shale"), "/var/lib/shale/nvram.img", 1}},
		{"geometry 4+1", "data_dir: /d\ngeometry: {data: 4, parity: 1}\n", nil,
			want{true, []string{"/d/drive-0.img", "/d/drive-1.img", "/d/drive-2.img", "/d/drive-3.img", "/d/drive-4.img"}, "/d/nvram.img", 1}},
		{"RAM only", "volumes: [{name: r, size: 1M, ram: true}]\n", nil, want{false, nil, "", 1}},
		{"RAM plus engine volume", "data_dir: /d\nvolumes: [{name: r, size: 1M, ram: true}, {name: e, size: 1G}]\ngeometry: {data: 1, parity: 0}\n", nil,
			want{true, []string{"/d/drive-0.img"}, "/d/nvram.img", 2}},
		{"configured drives, default nvram", "data_dir: /d\ndrives: [{backend: sim, size: 1G}, {backend: file, path: /x/a, size: 1G}]\ngeometry: {data: 1, parity: 1}\n", nil,
			want{true, []string{"", "/x/a"}, "/d/nvram.img", 1}},
		{"configured nvram only", "data_dir: /d\nvolumes: []\nnvram: {backend: file, path: /n, size: 64M}\ngeometry: {data: 2, parity: 0}\n", nil,
			want{true, []string{"/d/drive-0.img", "/d/drive-1.img"}, "/n", 0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			file := ""
			if tc.text != "" {
				file = write("c.yaml", tc.text)
			}
			c, err := Load(New(), file)
			if err != nil {
				t.Fatal(err)
			}
			var drives []string
			for _, d := range c.Drives {
				drives = append(drives, d.Path)
			}
			nvram := ""
			if c.NVRAM != nil {
				nvram = c.NVRAM.Path
			}
			got := want{c.Engine(), drives, nvram, len(c.Volumes)}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestAdminSocket: the CLI finds the socket from the file, the
// environment and the flag-bound key, without validating the rest.
func TestAdminSocket(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(p, []byte("data_dir: /from/file\ntls: {mode: nonsense}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := AdminSocket(New(), p); err != nil || got != "/from/file/admin.sock" {
		t.Errorf("from file: %q, %v", got, err)
	}
	if got, err := AdminSocket(New(), ""); err != nil || got != filepath.Join("shale-data", "admin.sock") {
		t.Errorf("default: %q, %v", got, err)
	}
	t.Setenv("SHALE_DATA_DIR", "/from/env")
	if got, err := AdminSocket(New(), p); err != nil || got != "/from/env/admin.sock" {
		t.Errorf("env over file: %q, %v", got, err)
	}
	v := New()
	v.Set("data_dir", "/from/flag")
	if got, err := AdminSocket(v, p); err != nil || got != "/from/flag/admin.sock" {
		t.Errorf("flag over env: %q, %v", got, err)
	}
	if _, err := AdminSocket(New(), filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
}

func TestFileEnvAndErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(text string) string {
		p := filepath.Join(dir, "shale.yaml")
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := write(`
listen: 127.0.0.1:9999
volumes:
  - {name: a, size: 64M, ram: true}
  - {name: b, size: 1M, ram: true, read_only: true, min_block_size: 512}
drives:
  - {backend: sim, size: 1G, seed: 7}
geometry: {data: 1, parity: 0, au_size: 1M, write_unit: 64K}
`)
	t.Setenv("SHALE_LOG_LEVEL", "debug")
	c, err := Load(New(), p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:9999" || c.Volumes[0].Size != 64<<20 || c.Log.Level != "debug" {
		t.Fatalf("got %+v", c)
	}
	if b := c.Volumes[1]; !b.ReadOnly || b.MinBlockSize != 512 || c.Volumes[0].ReadOnly || c.Volumes[0].MinBlockSize != 0 {
		t.Fatalf("read_only/min_block_size: %+v", c.Volumes)
	}
	if c.Drives[0].Options["seed"] != 7 {
		t.Fatalf("backend option not passed through: %+v", c.Drives[0])
	}

	cases := map[string]string{
		"volumes: [{name: a, size: 12X}]":                      "volumes[0].size",
		"volumes: [{name: a@b, size: 1M}]":                     "volumes[0].name",
		"volumes: [{name: a, size: 1000}]":                     "volumes[0].size",
		"volumes: [{name: a, size: 1M, min_block_size: 3}]":    "volumes[0].min_block_size",
		"volumes: [{name: a, size: 1M, min_block_size: 8192}]": "volumes[0].min_block_size",
		"volumes: [{name: a, size: 1M, read_only: maybe}]":     "read_only",
		"tls: {mode: maybe}":                                   "tls.mode",
		"tls: {mode: require}":                                 "tls.cert",
		"drives: [{backend: tape, path: /x}]":                  "drives[0].backend",
		"drives: [{backend: file, path: /x}]":                  "geometry",
		"geometry: {au_size: 3M, write_unit: 2M}":              "geometry.au_size",
		"log: {format: xml}":                                   "log.format",
		"volumes: [{name: a, size: 1M, min_block_size: 256}]":  "volumes[0].min_block_size",
		"drives: [{backend: file, path: /x, size: 1G}, {backend: file, path: /x, size: 1G}]\ngeometry: {data: 1, parity: 0}":        "drives[1].path",
		"drives: [{backend: file, path: /x, size: 1G}]\nnvram: {backend: file, path: /x, size: 1G}\ngeometry: {data: 1, parity: 0}": "nvram.path",
		"lisen: 1.2.3.4:5": "lisen",
	}
	for text, key := range cases {
		_, err := Load(New(), write(text))
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%q: error %v does not name %s", text, err, key)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]Size{"4096": 4096, "64K": 64 << 10, "64KiB": 64 << 10, "8m": 8 << 20, "4G": 4 << 30, "1T": 1 << 40} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "-1", "1.5G", "99999999999T"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded", in)
		}
	}
}
