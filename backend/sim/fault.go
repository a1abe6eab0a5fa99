package sim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shalestore/shale/backend"
)

// Op is a set of operation types a Fault matches.
type Op uint8

// Operation types. Combine with |.
const (
	OpRead Op = 1 << iota
	OpWrite
	OpSync
	OpDiscard
	// OpAny matches every operation; a zero Op means the same.
	OpAny = OpRead | OpWrite | OpSync | OpDiscard
)

// String names the operations in o.
func (o Op) String() string {
	if o == 0 || o == OpAny {
		return "any"
	}
	s := ""
	for _, x := range []struct {
		op   Op
		name string
	}{{OpRead, "read"}, {OpWrite, "write"}, {OpSync, "sync"}, {OpDiscard, "discard"}} {
		if o&x.op != 0 {
			if s != "" {
				s += "|"
			}
			s += x.name
		}
	}
	return s
}

// Effect is what a firing fault does.
type Effect int

const (
	// FailStop fails this call and every later one with backend.ErrFailed:
	// the drive is gone. PowerLoss still returns its image.
	FailStop Effect = iota + 1
	// Error fails this call only, with Fault.Err (backend.ErrFailed by
	// default, or backend.ErrCorrupt for a medium error). A failed write or
	// discard changes nothing.
	Error
	// Slow multiplies the call's modelled latency by SlowFactor and adds
	// SlowDelay. The drive's dies are not held longer.
	Slow
	// Corrupt silently flips bits in stored data (bit rot): Sectors random
	// sectors within the call's range (intersected with the rule's; for
	// sync or a rule-range-only match, within the rule's range or the whole
	// device), Bits distinct random bits in each. A write is corrupted
	// after it is stored, a read before it is served, so the read returns
	// the rotten bytes. No error is reported, now or later.
	Corrupt
	// PowerCut cuts power at the call: a write or discard is applied (and
	// so, being unsynced, kept, dropped or torn by the crash), then this
	// call and every later one fail with backend.ErrFailed. PowerLoss then
	// returns the device as it comes back.
	PowerCut
)

// String names e.
func (e Effect) String() string {
	switch e {
	case FailStop:
		return "fail-stop"
	case Error:
		return "error"
	case Slow:
		return "slow"
	case Corrupt:
		return "corrupt"
	case PowerCut:
		return "power-cut"
	}
	return fmt.Sprintf("effect(%d)", int(e))
}

// Fault is a rule: which calls it matches and what it does to them.
//
// A call matches if its type is in Op and, when Len > 0, its byte range
// overlaps [Off, Off+Len) (Sync has no range, so it matches only rules with
// Len == 0). Matches are counted per rule; the rule fires on the Nth match
// (and, if Sticky, on every match after it), each time subject to
// Probability. A rule that is not Sticky fires once and is removed.
//
// Determinism: every random choice of a rule (probability draws, corrupted
// sectors and bits) comes from a generator seeded by the device's seed and
// the rule's FaultID, so the same calls in the same order give the same
// outcome.
type Fault struct {
	Op       Op
	Off, Len int64
	// Nth is the first matching call that fires (1-based); 0 means 1.
	Nth int64
	// Probability that a call at or past the Nth fires; 0 means always.
	Probability float64
	// Sticky rules keep firing; others fire once.
	Sticky bool
	Effect Effect
	// Err is the error of an Error effect: nil (backend.ErrFailed) or an
	// error that is backend.ErrFailed or backend.ErrCorrupt.
	Err error
	// SlowFactor (≥ 1; 0 means 1) and SlowDelay for Slow.
	SlowFactor float64
	SlowDelay  time.Duration
	// Sectors (default 1) and Bits per sector (default 1, at most 64) for
	// Corrupt.
	Sectors, Bits int
}

// FaultID names an installed fault.
type FaultID int64

func (f *Fault) validate() error {
	switch {
	case f.Effect < FailStop || f.Effect > PowerCut:
		return fmt.Errorf("unknown effect %d", int(f.Effect))
	case f.Op&^OpAny != 0:
		return fmt.Errorf("unknown op bits %#x", uint8(f.Op))
	case f.Off < 0 || f.Len < 0:
		return fmt.Errorf("negative range %d+%d", f.Off, f.Len)
	case f.Nth < 0:
		return fmt.Errorf("negative Nth %d", f.Nth)
	case !(f.Probability >= 0 && f.Probability <= 1):
		return fmt.Errorf("probability %v not in [0, 1]", f.Probability)
	case f.Err != nil && !errors.Is(f.Err, backend.ErrFailed) && !errors.Is(f.Err, backend.ErrCorrupt):
		return fmt.Errorf("Err %v is neither backend.ErrFailed nor backend.ErrCorrupt", f.Err)
	case f.SlowFactor < 0 || f.SlowDelay < 0:
		return fmt.Errorf("negative slowness")
	case f.Sectors < 0 || f.Bits < 0 || f.Bits > 64:
		return fmt.Errorf("corruption of %d sectors x %d bits: want sectors ≥ 0, bits in [0, 64]", f.Sectors, f.Bits)
	}
	return nil
}

type faultRule struct {
	id      FaultID
	f       Fault
	matches int64
	rng     *rand.Rand
}

// flip is one bit to invert: bit (0-7) of the byte at off.
type flip struct {
	off int64
	bit uint
}

// effects is what the faults decided for one call.
type effects struct {
	powerCut, failStop bool
	err                error
	errRule            FaultID
	slowFactor         float64
	slowDelay          int64
	flips              []flip
	fired              int64
}

// faultSet holds a device's rules. Its own lock keeps fault decisions off
// the content and timing locks.
type faultSet struct {
	n     atomic.Int32 // len(rules), read without the lock
	mu    sync.Mutex
	rules []*faultRule
	next  FaultID
	seed  uint64
}

func (s *faultSet) add(f Fault) FaultID {
	if err := f.validate(); err != nil {
		panic("sim: AddFault: " + err.Error())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	r := &faultRule{id: s.next, f: f, rng: rand.New(rand.NewPCG(mix(s.seed, 0xfa017), uint64(s.next)))}
	s.rules = append(s.rules, r)
	s.n.Store(int32(len(s.rules)))
	return r.id
}

func (s *faultSet) remove(id FaultID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, r := range s.rules {
		if r.id == id {
			s.rules = append(s.rules[:i], s.rules[i+1:]...)
			break
		}
	}
	s.n.Store(int32(len(s.rules)))
}

// eval decides the faults of one call of type op on [off, off+n) (hasRange
// false for Sync). size and sector describe the device.
func (s *faultSet) eval(op Op, off, n int64, hasRange bool, size int64, sector int) (e effects) {
	if s.n.Load() == 0 {
		return e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.rules[:0]
	for _, r := range s.rules {
		f := &r.f
		match := f.Op == 0 || f.Op&op != 0
		if match && f.Len > 0 {
			match = hasRange && n > 0 && off < f.Off+f.Len && f.Off < off+n
		}
		fire := false
		if match {
			r.matches++
			fire = r.matches >= max(f.Nth, 1) && (f.Probability == 0 || r.rng.Float64() < f.Probability)
		}
		if fire {
			e.fired++
			s.apply(r, &e, op, off, n, hasRange, size, sector)
		}
		if !fire || f.Sticky {
			kept = append(kept, r)
		}
	}
	clear(s.rules[len(kept):])
	s.rules = kept
	s.n.Store(int32(len(s.rules)))
	return e
}

func (s *faultSet) apply(r *faultRule, e *effects, op Op, off, n int64, hasRange bool, size int64, sector int) {
	f := &r.f
	switch f.Effect {
	case FailStop:
		e.failStop = true
	case PowerCut:
		e.powerCut = true
	case Error:
		if e.err == nil {
			e.err, e.errRule = f.Err, r.id
			if e.err == nil {
				e.err = backend.ErrFailed
			}
		}
	case Slow:
		if e.slowFactor == 0 {
			e.slowFactor = 1
		}
		e.slowFactor *= max(f.SlowFactor, 1)
		e.slowDelay += int64(f.SlowDelay)
	case Corrupt:
		lo, hi := int64(0), size
		if f.Len > 0 {
			lo, hi = f.Off, min(f.Off+f.Len, size)
		}
		if hasRange && n > 0 && (op == OpRead || op == OpWrite) {
			lo, hi = max(lo, off), min(hi, off+n)
		}
		sec := int64(sector)
		lo = (lo + sec - 1) / sec * sec
		hi = hi / sec * sec
		if hi <= lo {
			return
		}
		nsec := (hi - lo) / sec
		for range max(f.Sectors, 1) {
			base := lo + r.rng.Int64N(nsec)*sec
			nbits := max(f.Bits, 1)
			start := len(e.flips)
			for len(e.flips)-start < nbits {
				pos := r.rng.Int64N(sec * 8)
				fl := flip{off: base + pos/8, bit: uint(pos % 8)}
				dup := false
				for _, x := range e.flips[start:] {
					dup = dup || x == fl
				}
				if !dup {
					e.flips = append(e.flips, fl)
				}
			}
		}
	}
}

// mix derives a 64-bit seed from a seed and a stream tag (splitmix64).
func mix(seed, tag uint64) uint64 {
	z := seed + tag*0x9e3779b97f4a7c15 + 0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}
