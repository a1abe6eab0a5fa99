//go:build !linux

package backend

import "sync/atomic"

var hugeAdviceRefused atomic.Int64

// adviseHuge does nothing where transparent huge pages cannot be asked for.
func adviseHuge(region []byte) {}
