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
	"path/filepath"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/shalestore/shale/backend"
	"github.com/shalestore/shale/core/dedup"
	"github.com/spf13/viper"
)

// Built-in sizes of the devices shale creates in the data directory when
// the configuration names none (see Config.Engine and Load).
const (
	// DefaultDriveBytes is the size of each default drive file (sparse).
	DefaultDriveBytes = 8 << 30
	// DefaultNVRAMBytes is the size of the default NVRAM file.
	DefaultNVRAMBytes = 256 << 20
	// AdminSocketName is the admin API's socket file in the data directory.
	AdminSocketName = "admin.sock"
)

// Config is the whole configuration of one shale server.
type Config struct {
	// Listen is the TCP address NBD clients connect to; "" disables TCP.
	Listen string `mapstructure:"listen"`
	// Socket is an optional Unix socket path NBD clients may connect to.
	Socket string `mapstructure:"socket"`
	// DataDir holds the server's own files: the admin socket and, when no
	// drives are configured, the default drive and NVRAM files.
	DataDir string `mapstructure:"data_dir"`
	// Volumes are the volumes served; engine volumes missing from the array
	// are created on start. The engine serves more: every volume and
	// snapshot it holds, including those created through the admin API.
	Volumes []Volume `mapstructure:"volumes"`
	// TLS configures STARTTLS.
	TLS TLS `mapstructure:"tls"`
	// Log configures log/slog output.
	Log Log `mapstructure:"log"`
	// Drives are the data drives the array stripes segments over. When
	// the engine runs and none are configured, Load fills in
	// Geometry.Data+Geometry.Parity file drives of DefaultDriveBytes in
	// DataDir (drive-0.img, drive-1.img, ...).
	Drives []Drive `mapstructure:"drives"`
	// NVRAM is the commit-log device. When the engine runs and it is not
	// configured, Load fills in a file of DefaultNVRAMBytes in DataDir
	// (nvram.img). Nil when the engine does not run.
	NVRAM *Drive `mapstructure:"nvram"`
	// Geometry is the erasure-coding and allocation layout.
	Geometry Geometry `mapstructure:"geometry"`
	// Dedup configures inline deduplication of engine volumes.
	Dedup Dedup `mapstructure:"dedup"`
}

// Dedup configures inline deduplication.
type Dedup struct {
	// Enabled turns inline dedup on (the default): every write is looked
	// up, sector by sector, among recently written data, and duplicate
	// runs of 8 sectors or more are stored as references.
	Enabled bool `mapstructure:"enabled"`
	// IndexBytes bounds the DRAM of the inline dedup index (at least 1M).
	// A larger index finds duplicates of older data.
	IndexBytes Size `mapstructure:"index_bytes"`
}

// Volume is one exported volume.
type Volume struct {
	// Name is the NBD export name. It may not contain '@', which separates
	// a volume from a snapshot in export names.
	Name string `mapstructure:"name"`
	// Size is the volume's capacity, a multiple of 4096.
	Size Size `mapstructure:"size"`
	// RAM makes a memory-only volume: sparse, lost on exit. Other volumes
	// are engine volumes, stored on the drives.
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
	// minimum (1 for RAM volumes, 512 for engine volumes, which address
	// 512-byte sectors and so accept nothing smaller).
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
		"dedup.enabled":       true,
		"dedup.index_bytes":   "64M",
		"volumes": []any{
			map[string]any{"name": "vol0", "size": "16G", "description": "default volume"},
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
	c.fillDevices()
	return &c, nil
}

// Engine reports whether the storage engine runs: when drives or NVRAM
// are configured, or any volume is not a RAM volume. A configuration of
// RAM volumes alone serves them without touching the data directory.
func (c *Config) Engine() bool {
	if len(c.Drives) > 0 || c.NVRAM != nil {
		return true
	}
	for _, v := range c.Volumes {
		if !v.RAM {
			return true
		}
	}
	return false
}

// fillDevices puts the default drives and NVRAM in DataDir where the
// engine runs and the configuration names none.
func (c *Config) fillDevices() {
	if !c.Engine() {
		return
	}
	if len(c.Drives) == 0 {
		for i := range c.Geometry.Data + c.Geometry.Parity {
			c.Drives = append(c.Drives, Drive{
				Backend: "file",
				Path:    filepath.Join(c.DataDir, fmt.Sprintf("drive-%d.img", i)),
				Size:    DefaultDriveBytes,
			})
		}
	}
	if c.NVRAM == nil {
		// Direct I/O where the filesystem has it, and O_DSYNC: the
		// commit log's write+sync is on every acknowledged write's path;
		// O_DIRECT on a preallocated file halves the sync, and O_DSYNC
		// makes write and flush one call (bench/RESULTS.md).
		c.NVRAM = &Drive{Backend: "file", Path: filepath.Join(c.DataDir, "nvram.img"), Size: DefaultNVRAMBytes,
			Options: map[string]any{"direct": "auto", "preallocate": true, "dsync": true}}
	}
}

// AdminSocket is the path of the admin API's Unix socket.
func (c *Config) AdminSocket() string { return filepath.Join(c.DataDir, AdminSocketName) }

// AdminSocket returns the admin socket path the configuration in v and
// file (if not empty) gives, the way `shale serve` finds it, without
// validating the rest of the configuration: the CLI needs only this.
func AdminSocket(v *viper.Viper, file string) (string, error) {
	if file != "" {
		v.SetConfigFile(file)
		if strings.HasSuffix(file, ".yml") || !strings.Contains(file, ".") {
			v.SetConfigType("yaml")
		}
		if err := v.ReadInConfig(); err != nil {
			return "", fmt.Errorf("config file %s: %w", file, err)
		}
	}
	dir := v.GetString("data_dir")
	if dir == "" {
		return "", errors.New("data_dir: must not be empty")
	}
	return filepath.Join(dir, AdminSocketName), nil
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
		} else if b != 0 && b < 512 && !vol.RAM {
			bad(key+".min_block_size", "%d is below 512, the sector size of engine volumes", b)
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
	paths := map[string]string{}
	samePath := func(key string, d Drive) {
		if d.Path == "" {
			return
		}
		p := filepath.Clean(d.Path)
		if other, dup := paths[p]; dup {
			bad(key+".path", "%s is also the path of %s", d.Path, other)
		}
		paths[p] = key
	}
	for i, d := range c.Drives {
		key := fmt.Sprintf("drives[%d]", i)
		validateDrive(key, d, bad)
		samePath(key, d)
	}
	if c.NVRAM != nil {
		validateDrive("nvram", *c.NVRAM, bad)
		samePath("nvram", *c.NVRAM)
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
	if c.Dedup.IndexBytes < dedup.MinIndexBytes {
		bad("dedup.index_bytes", "%d is below the minimum of %dM", int64(c.Dedup.IndexBytes), dedup.MinIndexBytes>>20)
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
