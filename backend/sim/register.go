package sim

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/shalestore/shale/backend"
)

func init() {
	backend.Register("sim", func(spec backend.Spec) (backend.Device, error) {
		opts, err := SpecOptions(spec)
		if err != nil {
			return nil, err
		}
		return New(opts)
	})
}

// Keys of backend.Spec.Options the sim backend accepts.
var optionKeys = []string{
	"seed",            // integer: Options.Seed
	"profile",         // ssd | nvram: base profile (default by kind)
	"time",            // virtual | real
	"zero_latency",    // bool: Profile.ZeroLatency
	"alignment",       // 512 | 4096
	"dies",            // integer ≥ 1
	"planes",          // integer ≥ 1
	"pages_per_block", // integer ≥ 1
	"overprovision",   // fraction, e.g. 0.07
	"read_us",         // NAND read time, µs (may be fractional)
	"program_us",      // NAND program time, µs
	"erase_us",        // NAND erase time, µs
	"cache_bytes",     // write cache size in bytes; 0 = write-through
	"corrupt_torn",    // bool: Options.CorruptTorn
}

// OptionKeys lists the keys SpecOptions accepts.
func OptionKeys() []string { return append([]string(nil), optionKeys...) }

// SpecOptions converts a backend spec (a line of configuration) into
// Options. It rejects unknown keys (backend.UnknownOptions) and bad values,
// naming the key.
func SpecOptions(spec backend.Spec) (Options, error) {
	if err := backend.UnknownOptions(spec.Options, optionKeys...); err != nil {
		return Options{}, err
	}
	opts := Options{Size: spec.Size, Kind: spec.Kind, Path: spec.Path, Name: spec.Name}
	if spec.Size <= 0 {
		return Options{}, fmt.Errorf("size: required for sim (a positive multiple of %d)", PageSize)
	}
	o := spec.Options
	prof := ProfileFor(spec.Kind)
	if v, ok := o["profile"]; ok {
		s, err := optString("profile", v)
		if err != nil {
			return Options{}, err
		}
		switch strings.ToLower(s) {
		case "ssd":
			prof = SSDProfile()
		case "nvram":
			prof = NVRAMProfile()
		default:
			return Options{}, fmt.Errorf("profile: %q is not ssd or nvram", s)
		}
	}
	if v, ok := o["seed"]; ok {
		n, err := optInt("seed", v, math.MinInt64, math.MaxInt64)
		if err != nil {
			return Options{}, err
		}
		opts.Seed = n
	}
	if v, ok := o["time"]; ok {
		s, err := optString("time", v)
		if err != nil {
			return Options{}, err
		}
		switch strings.ToLower(s) {
		case "virtual":
			opts.Time = Virtual
		case "real":
			opts.Time = Real
		default:
			return Options{}, fmt.Errorf("time: %q is not virtual or real", s)
		}
	}
	if v, ok := o["corrupt_torn"]; ok {
		b, err := optBool("corrupt_torn", v)
		if err != nil {
			return Options{}, err
		}
		opts.CorruptTorn = b
	}
	if v, ok := o["zero_latency"]; ok {
		b, err := optBool("zero_latency", v)
		if err != nil {
			return Options{}, err
		}
		if b {
			prof = prof.ZeroLatency()
		}
	}
	ints := []struct {
		key    string
		lo, hi int64
		dst    *int
	}{
		{"alignment", 512, 4096, &prof.Alignment},
		{"dies", 1, 1024, &prof.Dies},
		{"planes", 1, 16, &prof.Planes},
		{"pages_per_block", 1, 1 << 16, &prof.PagesPerBlock},
	}
	for _, x := range ints {
		if v, ok := o[x.key]; ok {
			n, err := optInt(x.key, v, x.lo, x.hi)
			if err != nil {
				return Options{}, err
			}
			*x.dst = int(n)
		}
	}
	if prof.Alignment != 512 && prof.Alignment != 4096 {
		return Options{}, fmt.Errorf("alignment: %d is not 512 or 4096", prof.Alignment)
	}
	if v, ok := o["cache_bytes"]; ok {
		n, err := optInt("cache_bytes", v, 0, 1<<40)
		if err != nil {
			return Options{}, err
		}
		prof.CacheBytes = n
	}
	if v, ok := o["overprovision"]; ok {
		x, err := optFloat("overprovision", v, 0, 4)
		if err != nil {
			return Options{}, err
		}
		prof.OverProvision = x
	}
	durs := []struct {
		key string
		dst *time.Duration
	}{{"read_us", &prof.Read}, {"program_us", &prof.Program}, {"erase_us", &prof.Erase}}
	for _, x := range durs {
		if v, ok := o[x.key]; ok {
			us, err := optFloat(x.key, v, 0, 1e9)
			if err != nil {
				return Options{}, err
			}
			*x.dst = time.Duration(us * float64(time.Microsecond))
		}
	}
	opts.Profile = prof
	return opts, nil
}

func optString(key string, v any) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s: %v (%T) is not a string", key, v, v)
	}
	return s, nil
}

func optBool(key string, v any) (bool, error) {
	switch x := v.(type) {
	case bool:
		return x, nil
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(x))
		if err != nil {
			return false, fmt.Errorf("%s: %q is not true or false", key, x)
		}
		return b, nil
	}
	return false, fmt.Errorf("%s: %v (%T) is not a boolean", key, v, v)
}

func optInt(key string, v any, lo, hi int64) (int64, error) {
	var n int64
	switch x := v.(type) {
	case int:
		n = int64(x)
	case int8:
		n = int64(x)
	case int16:
		n = int64(x)
	case int32:
		n = int64(x)
	case int64:
		n = x
	case uint:
		if uint64(x) > math.MaxInt64 {
			return 0, fmt.Errorf("%s: %d out of range [%d, %d]", key, x, lo, hi)
		}
		n = int64(x)
	case uint8:
		n = int64(x)
	case uint16:
		n = int64(x)
	case uint32:
		n = int64(x)
	case uint64:
		if x > math.MaxInt64 {
			return 0, fmt.Errorf("%s: %d out of range [%d, %d]", key, x, lo, hi)
		}
		n = int64(x)
	case float64:
		if x != math.Trunc(x) || x < -9.2e18 || x > 9.2e18 {
			return 0, fmt.Errorf("%s: %v is not an integer", key, x)
		}
		n = int64(x)
	case string:
		p, err := strconv.ParseInt(strings.TrimSpace(x), 0, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q is not an integer", key, x)
		}
		n = p
	default:
		return 0, fmt.Errorf("%s: %v (%T) is not an integer", key, v, v)
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("%s: %d out of range [%d, %d]", key, n, lo, hi)
	}
	return n, nil
}

func optFloat(key string, v any, lo, hi float64) (float64, error) {
	var x float64
	switch t := v.(type) {
	case float64:
		x = t
	case float32:
		x = float64(t)
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		n, err := optInt(key, v, math.MinInt64, math.MaxInt64)
		if err != nil {
			return 0, err
		}
		x = float64(n)
	case string:
		s := strings.TrimSpace(t)
		pct := strings.HasSuffix(s, "%")
		p, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q is not a number", key, t)
		}
		if pct {
			p /= 100
		}
		x = p
	default:
		return 0, fmt.Errorf("%s: %v (%T) is not a number", key, v, v)
	}
	if !(x >= lo && x <= hi) {
		return 0, fmt.Errorf("%s: %v out of range [%v, %v]", key, x, lo, hi)
	}
	return x, nil
}
