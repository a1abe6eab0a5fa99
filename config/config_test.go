package config

import (
	"os"
	"path/filepath"
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
	if len(c.Volumes) != 1 || c.Volumes[0].Name != "vol0" || !c.Volumes[0].RAM || c.Volumes[0].Size != 16<<30 {
		t.Fatalf("default volumes: %+v", c.Volumes)
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
		"lisen: 1.2.3.4:5":                                     "lisen",
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
