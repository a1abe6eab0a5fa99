package config

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"

	"github.com/go-viper/mapstructure/v2"
)

// Size is a byte count. In configuration it is written as a plain number of
// bytes or with a binary suffix: 512, 64K, 64KiB, 8M, 4G, 1T (K = 1024).
type Size int64

// String formats s with the largest binary suffix that divides it.
func (s Size) String() string {
	units := []struct {
		suffix string
		n      int64
	}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}}
	for _, u := range units {
		if s != 0 && int64(s)%u.n == 0 {
			return fmt.Sprintf("%d%s", int64(s)/u.n, u.suffix)
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// ParseSize parses a size as described on Size.
func ParseSize(text string) (Size, error) {
	t := strings.TrimSpace(text)
	if t == "" {
		return 0, fmt.Errorf("empty size")
	}
	upper := strings.ToUpper(t)
	upper = strings.TrimSuffix(upper, "IB")
	upper = strings.TrimSuffix(upper, "B")
	mult := int64(1)
	if n := len(upper); n > 0 {
		switch upper[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		case 'P':
			mult = 1 << 50
		}
		if mult != 1 {
			upper = upper[:n-1]
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(upper), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (examples: 4096, 64K, 8M, 4G)", text)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is too large", text)
	}
	return Size(n * mult), nil
}

// sizeHook lets mapstructure decode Size fields from strings and numbers.
func sizeHook() mapstructure.DecodeHookFuncType {
	sizeType := reflect.TypeOf(Size(0))
	return func(from, to reflect.Type, data any) (any, error) {
		if to != sizeType {
			return data, nil
		}
		switch v := data.(type) {
		case string:
			return ParseSize(v)
		case int:
			return Size(v), nil
		case int64:
			return Size(v), nil
		case uint64:
			if v > math.MaxInt64 {
				return nil, fmt.Errorf("%d is too large", v)
			}
			return Size(v), nil
		case float64:
			if v < 0 || v != math.Trunc(v) || v > math.MaxInt64 {
				return nil, fmt.Errorf("%v is not a whole number of bytes", v)
			}
			return Size(v), nil
		}
		return data, nil
	}
}
