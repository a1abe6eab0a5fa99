package main

import (
	"fmt"
	"math"
	"strconv"
)

// iec formats a byte count in IEC units for people: "512 B", "4 KiB",
// "1.5 GiB", "16 GiB". Whole multiples print without decimals; others
// with one.
func iec(n int64) string {
	if n < 0 {
		return "-" + iec(-n)
	}
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v := float64(n)
	i := -1
	for i+1 < len(units) && v >= 1024*(1-0.05/1024) {
		v /= 1024
		i++
	}
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f %s", v, units[i])
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

// ratio formats a data-reduction ratio: "3.2:1", or "-" when nothing is
// stored.
func ratio(r float64) string {
	if r <= 0 || math.IsNaN(r) || math.IsInf(r, 0) {
		return "-"
	}
	return fmt.Sprintf("%.1f:1", r)
}
