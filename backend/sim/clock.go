package sim

import (
	"sync/atomic"
	"time"
)

// TimeMode says whether modelled latency is counted or waited.
type TimeMode int

const (
	// Virtual counts latency on a virtual Clock without waiting: each call
	// returns at once and advances the clock to its modelled completion.
	// Unit tests stay fast and can assert on latencies exactly.
	Virtual TimeMode = iota
	// Real makes the caller sleep the modelled time (benchmarks, soak
	// tests). Sleeps are skipped when the modelled time has already passed,
	// so zero-latency profiles cost nothing. time.Sleep overshoots by tens
	// of microseconds, which matters only for the NVRAM profile.
	Real
)

// String returns "virtual" or "real".
func (m TimeMode) String() string {
	if m == Real {
		return "real"
	}
	return "virtual"
}

// Clock is a virtual clock: nanoseconds since its creation that advance
// only when a device completes an operation (to the operation's modelled
// completion time) or a test calls Advance. Several devices may share one
// clock (Options.Clock), so an array of simulated drives sees one time.
// Safe for concurrent use.
//
// A call's modelled start is the clock's value when it is issued. Calls
// issued concurrently from several goroutines therefore overlap in virtual
// time only if they read the clock before either advanced it; a single
// goroutine sees its calls back to back. Per-call latencies (Stats) are
// exact either way.
type Clock struct {
	ns atomic.Int64
}

// NewClock returns a clock at zero.
func NewClock() *Clock { return &Clock{} }

// Now returns the virtual time.
func (c *Clock) Now() time.Duration { return time.Duration(c.ns.Load()) }

// Advance moves the clock forward by d (≥ 0), e.g. to let a drive's
// background work finish before the next call.
func (c *Clock) Advance(d time.Duration) {
	if d > 0 {
		c.ns.Add(int64(d))
	}
}

// AdvanceTo moves the clock to t if t is later than now.
func (c *Clock) AdvanceTo(t time.Duration) { c.advanceTo(int64(t)) }

func (c *Clock) advanceTo(t int64) {
	for {
		cur := c.ns.Load()
		if t <= cur || c.ns.CompareAndSwap(cur, t) {
			return
		}
	}
}

// Rail is a power supply shared by several devices (Options.Rail), such as
// the drives and NVRAM of one array: cutting it cuts them all at the same
// instant. Any cut of one of its devices (PowerLoss, a PowerCut fault)
// cuts the rail. After a cut every device on it fails each call with
// backend.ErrFailed, and each device's PowerLoss returns it as it comes
// back (its image is taken as of the cut). Safe for concurrent use.
type Rail struct {
	epoch atomic.Int64
}

// NewRail returns a powered rail.
func NewRail() *Rail { return &Rail{} }

// Cut cuts the power of every device on the rail. Devices created on the
// rail later (including those PowerLoss returns) are powered.
func (r *Rail) Cut() { r.epoch.Add(1) }
