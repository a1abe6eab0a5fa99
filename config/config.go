// Package config loads and validates shale's configuration.
//
// Values come, highest precedence first, from command-line flags bound to the
// viper instance, SHALE_* environment variables (SHALE_LISTEN,
// SHALE_DATA_DIR, SHALE_TLS_MODE, SHALE_LOG_LEVEL, ...: the key with dots
// replaced by underscores, upper-cased), a YAML file, and the built-in
// defaults of Defaults. Every error names the offending key, e.g.
// `volumes[1].size: "12X" is not a size`.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/shalestore/shale/backend"
	"github.com/spf13/viper"
)

// Config is the whole configuration of one shale server.
type Config struct {
	// Listen is the TCP address NBD clients connect to; "" disables TCP.
	Listen string `mapstructure:"listen"`
	// Socket is an optional Unix socket path NBD clients may connect to.
	Socket string `mapstructure:"socket"`
	// DataDir holds the server's own files (admin socket, default drives).
	DataDir string `mapstructure:"data_dir"`
	// Volumes are the volumes served; engine volumes missing from the array
	// are created on start.
	Volumes []Volume `mapstructure:"volumes"`
	// TLS configures STARTTLS.
	TLS TLS `mapstructure:"tls"`
	// Log configures log/slog output.
	Log Log `mapstructure:"log"`
	// Drives are the data drives the array stripes segments over.
	Drives []Drive `mapstructure:"drives"`
	// NVRAM is the commit-log device; nil when no engine is configured.
	NVRAM *Drive `mapstructure:"nvram"`
	// Geometry is the erasure-coding and allocation layout.
	Geometry Geometry `mapstructure:"geometry"`
}

// Volume is one exported volume.
type Volume struct {
	// Name is the NBD export name. It may not contain '@', which separates
	// a volume from a snapshot in export names.
	Name string `mapstructure:"name"`
	// Size is the volume's capacity, a multiple of 4096.
	Size Size `mapstructure:"size"`
	// RAM makes a memory-only volume: sparse, lost on exit.
	RAM bool `mapstructure:"ram"`
	// Description is shown to clients that list exports.
	Description string `mapstructure:"description"`
	// ReadOnly serves the volume read-only: clients see NBD_FLAG_READ_ONLY
	// and writes, trims and zeroes fail with EPERM.
	ReadOnly bool `mapstructure:"read_only"`
	// MinBlockSize is the minimum block size advertised in
	// NBD_INFO_BLOCK_SIZE: clients that ask for block sizes align every
	// request to it, and misaligned requests get EINVAL. A power of two
	// from 1 to 4096 that divides Size; 0 means the volume's natural
	// minimum (1 for RAM volumes).
	MinBlockSize int `mapstructure:"min_block_size"`
}

// TLS modes.
const (
	TLSOff     = "off"     // STARTTLS refused
	TLSOn      = "on"      // STARTTLS offered, plaintext allowed
	TLSRequire = "require" // nothing but STARTTLS and ABORT before TLS
)

// TLS configures X.509 TLS via NBD's STARTTLS.
type TLS struct {
	// Mode is off, on or require.
	Mode string `mapstructure:"mode"`
	// Cert and Key are PEM files of the server's certificate and key.
	Cert string `mapstructure:"cert"`
	Key  string `mapstructure:"key"`
	// ClientCA, if set, is a PEM bundle; clients must then present a
	// certificate signed by it.
	ClientCA string `mapstructure:"client_ca"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `mapstructure:"level"`
	// Format is text or json.
	Format string `mapstructure:"format"`
}

// Drive describes one device. Keys other than backend, path and size are
// backend-specific and are passed to the backend, which rejects unknown ones.
type Drive struct {
	Backend string         `mapstructure:"backend"`
	Path    string         `mapstructure:"path"`
	Size    Size           `mapstructure:"size"`
	Options map[string]any `mapstructure:",remain"`
}

// Spec converts a drive entry to a backend spec named name ("drives[2]").
func (d Drive) Spec(name string, kind backend.Kind) backend.Spec {
	return backend.Spec{Name: name, Backend: d.Backend, Path: d.Path, Size: int64(d.Size), Kind: kind, Options: d.Options}
}

// Geometry is the segment layout: each segment spans Data+Parity drives, one
// AU on each, written one write unit per drive at a time.
type Geometry struct {
	Data      int  `mapstructure:"data"`
	Parity    int  `mapstructure:"parity"`
	AUSize    Size `mapstructure:"au_size"`
	WriteUnit Size `mapstructure:"write_unit"`
}

// Backends are the drive backend names configuration accepts.
var Backends = []string{"file", "nvme", "sim"}

// Defaults are the built-in values used where nothing else sets a key.
func Defaults() map[string]any {
	return map[string]any{
		"listen":              "127.0.0.1:10809",
		"socket":              "",
		"data_dir":            "./shale-data",
		"tls.mode":            TLSOff,
		"tls.cert":            "",
		"tls.key":             "",
		"tls.client_ca":       "",
		"log.level":           "info",
		"log.format":          "text",
		"geometry.data":       7,
		"geometry.parity":     2,
		"geometry.au_size":    "8M",
		"geometry.write_unit": "1M",
		"volumes": []any{
			map[string]any{"name": "vol0", "size": "16G", "ram": true, "description": "RAM volume (default configuration)"},
		},
	}
}

// New returns a viper instance with the defaults and environment binding in
// place. Callers bind flags to it, then call Load.
func New() *viper.Viper {
	v := viper.New()
	for k, val := range Defaults() {
		v.SetDefault(k, val)
	}
	v.SetEnvPrefix("SHALE")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	return v
}

// Load reads file (if not empty) into v and returns the validated result.
func Load(v *viper.Viper, file string) (*Config, error) {
	if file != "" {
		v.SetConfigFile(file)
		if strings.HasSuffix(file, ".yml") || !strings.Contains(file, ".") {
			v.SetConfigType("yaml")
		}
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("config file %s: %w", file, err)
		}
	}
	var c Config
	err := v.UnmarshalExact(&c, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		sizeHook(), mapstructure.StringToTimeDurationHookFunc())))
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks every key and returns all problems found, each naming its
// key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.Listen == "" && c.Socket == "" {
		bad("listen", "neither listen nor socket is set: clients could not connect")
	}
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			bad("listen", "%q is not host:port (%v)", c.Listen, err)
		}
	}
	if c.DataDir == "" {
		bad("data_dir", "must not be empty")
	}
	seen := map[string]int{}
	for i, vol := range c.Volumes {
		key := fmt.Sprintf("volumes[%d]", i)
		switch {
		case vol.Name == "":
			bad(key+".name", "missing")
		case strings.ContainsRune(vol.Name, '@'):
			bad(key+".name", "%q contains '@', which is reserved for snapshot exports (VOLUME@SNAPSHOT)", vol.Name)
		case len(vol.Name) > 4096:
			bad(key+".name", "longer than 4096 bytes")
		}
		if j, dup := seen[vol.Name]; dup && vol.Name != "" {
			bad(key+".name", "%q is also the name of volumes[%d]", vol.Name, j)
		}
		seen[vol.Name] = i
		if vol.Size <= 0 {
			bad(key+".size", "missing or not positive")
		} else if vol.Size%4096 != 0 {
			bad(key+".size", "%d is not a multiple of 4096", int64(vol.Size))
		}
		if b := vol.MinBlockSize; b != 0 && (b < 1 || b > 4096 || b&(b-1) != 0) {
			bad(key+".min_block_size", "%d is not a power of two from 1 to 4096", b)
		}
	}
	switch c.TLS.Mode {
	case TLSOff:
	case TLSOn, TLSRequire:
		if c.TLS.Cert == "" {
			bad("tls.cert", "required when tls.mode is %s", c.TLS.Mode)
		}
		if c.TLS.Key == "" {
			bad("tls.key", "required when tls.mode is %s", c.TLS.Mode)
		}
		for key, path := range map[string]string{"tls.cert": c.TLS.Cert, "tls.key": c.TLS.Key, "tls.client_ca": c.TLS.ClientCA} {
			if path == "" {
				continue
			}
			if _, err := os.Stat(path); err != nil {
				bad(key, "%v", err)
			}
		}
	default:
		bad("tls.mode", "%q is not one of off, on, require", c.TLS.Mode)
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q is not one of text, json", c.Log.Format)
	}
	for i, d := range c.Drives {
		validateDrive(fmt.Sprintf("drives[%d]", i), d, bad)
	}
	if c.NVRAM != nil {
		validateDrive("nvram", *c.NVRAM, bad)
	}
	g := c.Geometry
	if g.Data < 1 {
		bad("geometry.data", "must be at least 1, got %d", g.Data)
	}
	if g.Parity < 0 {
		bad("geometry.parity", "must not be negative, got %d", g.Parity)
	}
	if g.Data+g.Parity > 256 {
		bad("geometry", "data+parity is %d; Reed-Solomon allows at most 256 shards", g.Data+g.Parity)
	}
	if len(c.Drives) > 0 && g.Data+g.Parity > len(c.Drives) {
		bad("geometry", "data+parity is %d+%d=%d but only %d drives are configured", g.Data, g.Parity, g.Data+g.Parity, len(c.Drives))
	}
	if g.WriteUnit <= 0 || g.WriteUnit%4096 != 0 {
		bad("geometry.write_unit", "%d is not a positive multiple of 4096", int64(g.WriteUnit))
	}
	if g.AUSize <= 0 || (g.WriteUnit > 0 && g.AUSize%g.WriteUnit != 0) {
		bad("geometry.au_size", "%d is not a positive multiple of write_unit (%d)", int64(g.AUSize), int64(g.WriteUnit))
	}
	return errors.Join(errs...)
}

func validateDrive(key string, d Drive, bad func(key, format string, args ...any)) {
	ok := false
	for _, b := range Backends {
		ok = ok || d.Backend == b
	}
	if !ok {
		bad(key+".backend", "%q is not one of %s", d.Backend, strings.Join(Backends, ", "))
	}
	if d.Path == "" && d.Backend != "sim" {
		bad(key+".path", "missing")
	}
	if d.Size < 0 {
		bad(key+".size", "must not be negative")
	}
}
