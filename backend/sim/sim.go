// Package sim is a simulated SSD (or NVRAM part) behind backend.Device:
// the crashable, fault-injectable fake every recovery test of shale runs
// on, modelled closely enough to test I/O scheduling. Everything random
// derives from Options.Seed, so a run repeats exactly.
//
//	d, _ := sim.New(sim.Options{Size: 64 << 20, Seed: 1})
//	d.AddFault(sim.Fault{Op: sim.OpWrite, Nth: 100, Effect: sim.PowerCut})
//	... run a workload until calls fail with backend.ErrFailed ...
//	d2, _ := d.PowerLoss() // the drive as it comes back; recover from it
//
// It registers itself as backend "sim" (see SpecOptions for its keys).
//
// # Model
//
// Contents: a logical image of Size bytes in 4 KiB pages, kept in memory
// (sparse) or in a sparse backing file at Options.Path (same offsets, so
// the file is the drive's image). Reads of never-written or discarded
// ranges return zeros.
//
// Alignment: 512-byte logical blocks by default, as on the 512e drives
// most hosts see, so the NVRAM log may commit single sectors and power
// loss tears writes at sector granularity; 4096 is selectable
// (Profile.Alignment, option "alignment"). Inside the drive the mapping
// unit is 4 KiB: a write that covers part of a page costs a
// read-modify-write (Stats.RMWPages) and a whole page program. The engine's
// 4 KiB-aligned I/O never pays it. Partial-page discards zero the sectors
// but leave the page mapped.
//
// Flash (ftl.go): logical pages map to NAND pages in erase blocks over dies
// and planes, with over-provisioning, an open block per plane for host
// writes and one for GC, greedy garbage collection (fewest valid pages),
// FIFO reuse of erased blocks (dynamic wear levelling) and per-block P/E
// counts. The FTL keeps no bytes; it decides where NAND time goes and
// feeds Stats (write amplification, GC moves, wear).
//
// Time (die.go, timing.go): each die runs one NAND operation at a time
// (multi-plane operations count once); programs, GC moves and erases
// queue; a host read jumps the queue but waits for the operation in
// progress, so a read that lands on a die that is erasing waits up to an
// erase time (Stats.ReadStalls, ReadStallsErase). Writes return when their
// data is in the write cache (Profile.CacheBytes; write-through when 0) and
// stall when it is full; Sync waits for queued programs; the host link
// limits bandwidth. With Options.Time = Virtual the latency is counted on a
// Clock (shareable between devices) and never waited, so tests can assert
// on latencies exactly; with Real the caller sleeps it.
//
// # Durability and power loss
//
// A write or discard is durable only after a later Sync returns.
// PowerLoss cuts power: the device fails every later call with
// backend.ErrFailed, and PowerLoss returns the device as it comes back, in
// which synced data is intact and each write or discard since the last
// Sync was kept, dropped or torn (each of its sectors kept or not) at
// random, a sector holding the latest kept write that covers it. The
// choices derive from Options.Seed and the number of power cycles: the
// same seed and calls give the same image byte for byte. Devices sharing a
// Rail lose power together. Close is an orderly shutdown (every write kept;
// Reopen gives the drive back).
//
// Until the next Sync the device keeps the old contents of every unsynced
// write (about one copy of the unsynced data; in memory, whole-page
// overwrites move the old page rather than copying it), so a workload that
// never syncs grows by what it writes.
//
// # Faults
//
// AddFault installs rules (fault.go) matching by operation, Nth match,
// offset range and seeded probability, once or sticky, with effects
// fail-stop, error (ErrFailed or ErrCorrupt), slow, silent bit rot and
// power cut. Rules do not carry over PowerLoss or Reopen.
//
// # Simplifications
//
// Reads of data still in the write cache are served by NAND, not the
// cache. GC moves only metadata (the store is keyed by logical offset).
// There is no program/erase suspend, no static wear levelling, no channel
// contention between dies (only the host link is shared), and no wear-out.
// The FTL state (mapping, wear) is not persisted in a backing file: a new
// Device over an existing file maps its allocated extents afresh with zero
// wear. With Virtual time, a call starts at the clock's value when it is
// issued, so calls from several goroutines overlap in virtual time only if
// issued before either completes; per-call latencies are exact regardless.
//
// # Limits
//
// Size ≤ about 16 TiB of NAND (32-bit physical page numbers). Memory:
// 4 KiB per written page in memory mode, plus about 8 bytes per written page
// and 40 bytes per erase block for the FTL. Small devices get smaller
// erase blocks, planes and dies than their profile (Geometry), which also
// raises their effective over-provisioning.
package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shalestore/shale/backend"
)

// Options configure a simulated device.
type Options struct {
	// Size in bytes: a positive multiple of 4096.
	Size int64
	// Kind is backend.SSD or backend.NVRAM; it picks the default Profile.
	Kind backend.Kind
	// Profile is the geometry and timing; the zero value means
	// ProfileFor(Kind).
	Profile Profile
	// Seed drives every random choice (power-loss outcomes, fault draws),
	// so runs repeat exactly.
	Seed int64
	// Time is Virtual (default) or Real.
	Time TimeMode
	// Clock is the virtual clock (Virtual mode); nil gives the device its
	// own. Share one among the drives of an array.
	Clock *Clock
	// Rail, if set, is the power supply this device shares with others:
	// a power cut of one (PowerLoss, a PowerCut fault, Rail.Cut) cuts all.
	Rail *Rail
	// Path, if set, keeps the contents in a sparse file there instead of
	// memory. An existing file of exactly Size bytes is reused with its
	// contents (FTL state and wear start fresh); an empty or missing one is
	// created. Only one Device may use a path at a time.
	Path string
	// CorruptTorn makes power loss harsher, as on NAND whose program was
	// interrupted: a torn unsynced write may also leave some of its sectors
	// holding random bytes, or unreadable (reads touching them fail with
	// backend.ErrCorrupt until they are written or discarded again). Synced
	// sectors are never affected. The unreadable marks live in the Device
	// (carried over PowerLoss and Reopen), not in a backing file.
	CorruptTorn bool
	// MaxUnsyncedBytes bounds the old contents kept for unsynced writes
	// (what power loss may roll back): past it the oldest unsynced writes
	// are destaged, i.e. become durable as if the drive had flushed them
	// (Stats.Destaged). 0 means DefaultMaxUnsyncedBytes; negative means no
	// limit.
	MaxUnsyncedBytes int64
	// Name identifies the device in errors and logs ("drives[3]").
	Name string
	// Logger receives power-loss and fault events; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Device states.
const (
	stateOK int32 = iota
	stateFailed
	stateOff
	stateClosed
)

// Device is a simulated drive. It implements backend.Device and is safe for
// concurrent use.
type Device struct {
	opts   Options
	prof   Profile
	geo    Geometry
	log    *slog.Logger
	name   string
	sector int
	size   int64
	seed   uint64
	gen    int64 // power cycles
	clock  *Clock
	real   time.Time // Real mode: device time 0
	rail   *Rail
	// railEpoch is the rail's epoch when this device was powered on; a
	// different epoch means the rail has been cut since.
	railEpoch int64

	state  atomic.Int32
	faults faultSet

	// mu guards the content: readers share it, writers, Sync, PowerLoss
	// and Close hold it exclusively. Lock order: mu, then tmu.
	mu   sync.RWMutex
	st   store
	undo undoLog
	// bad holds unreadable sectors (by number) left by CorruptTorn power
	// losses; nbad mirrors its size for Stats.
	bad       map[int64]struct{}
	nbad      atomic.Int64
	revived   *Device // after a power cut: the device as it comes back
	reviveErr error   // why the post-crash image could not be built
	handedOff bool    // PowerLoss or Reopen returned the successor

	// tmu guards the drive model and counters.
	tmu sync.Mutex
	drv *drive
	// final is the Stats snapshot when the drive moved to a successor.
	final Stats
}

// drive is the state that survives a power cycle: the FTL, the dies, the
// counters.
type drive struct {
	ftl     *ftl
	dies    []die
	linkIn  int64
	linkOut int64
	start   int64 // device time at New

	// per-call scratch: NAND operations per die
	dieLoads   []dieLoad
	dieTouched []int32

	c    counters
	hist [4]histogram // by histRead..histDiscard
}

type counters struct {
	reads, writes, syncs, discards      int64
	readBytes, writeBytes, discardBytes int64
	faultsFired, faultErrors            int64
	readStalls, readStallsErase         int64
	stallTime                           int64
	writeStalls, writeStallTime         int64
	busy                                [5]int64 // by opKind
}

const (
	histRead = iota
	histWrite
	histSync
	histDiscard
)

var _ backend.Device = (*Device)(nil)

// New creates a device.
func New(opts Options) (*Device, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Name == "" {
		opts.Name = "sim"
	}
	if opts.Kind != backend.SSD && opts.Kind != backend.NVRAM {
		return nil, fmt.Errorf("%s: kind %v unknown", opts.Name, opts.Kind)
	}
	prof := opts.Profile
	if prof.isZero() {
		prof = ProfileFor(opts.Kind)
	}
	if err := prof.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", opts.Name, err)
	}
	geo, err := deriveGeometry(opts.Size, prof)
	if err != nil {
		return nil, fmt.Errorf("%s: size: %w", opts.Name, err)
	}
	if opts.Time != Virtual && opts.Time != Real {
		return nil, fmt.Errorf("%s: time mode %d unknown", opts.Name, int(opts.Time))
	}
	if opts.Clock == nil {
		opts.Clock = NewClock()
	}
	d := &Device{
		opts:   opts,
		prof:   prof,
		geo:    geo,
		log:    opts.Logger.With("device", opts.Name),
		name:   opts.Name,
		sector: prof.Alignment,
		size:   opts.Size,
		seed:   uint64(opts.Seed),
		clock:  opts.Clock,
		real:   time.Now(),
		rail:   opts.Rail,
	}
	if d.rail != nil {
		d.railEpoch = d.rail.epoch.Load()
	}
	d.faults.seed = d.seed
	d.undo.limit = unsyncedLimit(opts.MaxUnsyncedBytes)
	drv := newDrive(geo)
	var existed bool
	if opts.Path == "" {
		d.st = newMemStore(opts.Size)
	} else {
		fs, ex, err := openFileStore(opts.Path, opts.Size)
		if err != nil {
			return nil, fmt.Errorf("%s: path: %w", opts.Name, err)
		}
		d.st, existed = fs, ex
		if existed {
			if err := preload(drv.ftl, fs); err != nil {
				fs.close()
				return nil, fmt.Errorf("%s: path: scanning %s: %w", opts.Name, opts.Path, err)
			}
		}
	}
	drv.start = d.now()
	for i := range drv.dies {
		drv.dies[i].base = drv.start
	}
	d.drv = drv
	d.log.Debug("sim device", "size", opts.Size, "kind", opts.Kind, "profile", prof.Name, "time", opts.Time,
		"path", opts.Path, "reused", existed, "dies", geo.Dies, "planes", geo.Planes, "pages_per_block", geo.PagesPerBlock,
		"blocks", geo.Blocks, "overprovision", geo.OverProvision)
	return d, nil
}

func unsyncedLimit(n int64) int64 {
	switch {
	case n == 0:
		return DefaultMaxUnsyncedBytes
	case n < 0:
		return 0
	}
	return n
}

func newDrive(geo Geometry) *drive {
	return &drive{
		ftl:  newFTL(geo),
		dies: make([]die, geo.Dies),
	}
}

// preload maps every page of the backing file that holds data, as if
// written, without counting it.
func preload(f *ftl, fs *fileStore) error {
	var ferr error
	err := dataExtents(fs.f, f.g.Pages*PageSize, func(off, end int64) {
		for lpn := off / PageSize; lpn < (end+PageSize-1)/PageSize && ferr == nil; lpn++ {
			ferr = f.writePage(lpn, false)
		}
	})
	f.clearWork()
	f.hostPages, f.programs, f.gcMoves, f.rmwPages, f.erases, f.gcRuns = 0, 0, 0, 0, 0, 0
	for i := range f.blocks {
		f.blocks[i].erases = 0
	}
	return errors.Join(err, ferr)
}

// successor builds the device that takes over d's contents and drive (after
// a power cut or Close). REQUIRES: d.mu held exclusively, d.drv moved out.
func (d *Device) successor(st store, drv *drive, gen int64) *Device {
	nd := &Device{
		opts: d.opts, prof: d.prof, geo: d.geo, log: d.log, name: d.name,
		sector: d.sector, size: d.size, seed: d.seed, gen: gen, clock: d.clock, real: d.real,
		rail: d.rail, st: st, drv: drv,
	}
	nd.undo.limit = d.undo.limit
	nd.bad = d.bad
	nd.nbad.Store(int64(len(d.bad)))
	nd.undo.destaged.Store(d.undo.destaged.Load())
	if nd.rail != nil {
		nd.railEpoch = nd.rail.epoch.Load()
	}
	nd.faults.seed = mix(d.seed, uint64(gen))
	now := nd.now()
	for i := range drv.dies {
		drv.dies[i].reset(now)
	}
	drv.linkIn, drv.linkOut = now, now
	return nd
}

// now is the device time in nanoseconds.
func (d *Device) now() int64 {
	if d.opts.Time == Real {
		return int64(time.Since(d.real))
	}
	return d.clock.ns.Load()
}

// Clock returns the device's virtual clock (also in Real mode, where
// nothing advances it).
func (d *Device) Clock() *Clock { return d.clock }

// Geometry returns the NAND layout in use.
func (d *Device) Geometry() Geometry { return d.geo }

// Profile returns the profile in use.
func (d *Device) Profile() Profile { return d.prof }

// Size implements backend.Device.
func (d *Device) Size() int64 { return d.size }

// Alignment implements backend.Device: the profile's logical block size.
func (d *Device) Alignment() int { return d.sector }

// Kind implements backend.Device.
func (d *Device) Kind() backend.Kind { return d.opts.Kind }

// AddFault installs a fault rule and returns its id. It panics if the rule
// is invalid (a bug in the test that wrote it).
func (d *Device) AddFault(f Fault) FaultID { return d.faults.add(f) }

// RemoveFault uninstalls a rule; unknown ids are ignored.
func (d *Device) RemoveFault(id FaultID) { d.faults.remove(id) }

// powered reports whether the device's rail (if any) still has power.
func (d *Device) powered() bool {
	return d.rail == nil || d.rail.epoch.Load() == d.railEpoch
}

// stateErr returns the error for a device that is not usable, or nil.
func (d *Device) stateErr(op string, off int64) error {
	switch d.state.Load() {
	case stateOK:
		if !d.powered() {
			return fmt.Errorf("%s: %s at %d: power is cut (rail): %w", d.name, op, off, backend.ErrFailed)
		}
		return nil
	case stateClosed:
		return fmt.Errorf("%s: %s at %d: %w", d.name, op, off, backend.ErrClosed)
	case stateOff:
		return fmt.Errorf("%s: %s at %d: power is cut: %w", d.name, op, off, backend.ErrFailed)
	default:
		return fmt.Errorf("%s: %s at %d: drive has failed: %w", d.name, op, off, backend.ErrFailed)
	}
}

// begin runs the checks every call starts with and decides its faults.
func (d *Device) begin(ctx context.Context, op Op, opName string, off, n int64, hasRange bool) (effects, error) {
	if err := d.stateErr(opName, off); err != nil {
		return effects{}, err
	}
	if err := ctx.Err(); err != nil {
		return effects{}, err
	}
	if hasRange {
		if err := backend.CheckRange(off, n, d.size, d.sector); err != nil {
			return effects{}, fmt.Errorf("%s: %s: %w", d.name, opName, err)
		}
	}
	fx := d.faults.eval(op, off, n, hasRange, d.size, d.sector)
	if fx.fired == 0 {
		return fx, nil
	}
	d.tmu.Lock()
	if d.drv != nil {
		d.drv.c.faultsFired += fx.fired
		if fx.err != nil || fx.failStop || fx.powerCut {
			d.drv.c.faultErrors++
		}
	}
	d.tmu.Unlock()
	switch {
	case fx.powerCut:
		d.log.Debug("sim: injected power cut", "op", opName, "off", off)
		if op == OpWrite || op == OpDiscard {
			return fx, nil // applied first, then cut
		}
		d.mu.Lock()
		d.cutRailLocked()
		d.mu.Unlock()
		return fx, fmt.Errorf("%s: %s at %d: injected power cut: %w", d.name, opName, off, backend.ErrFailed)
	case fx.failStop:
		d.log.Debug("sim: injected fail-stop", "op", opName, "off", off)
		d.state.CompareAndSwap(stateOK, stateFailed)
		return fx, fmt.Errorf("%s: %s at %d: injected fail-stop: %w", d.name, opName, off, backend.ErrFailed)
	case fx.err != nil:
		return fx, fmt.Errorf("%s: %s at %d: injected fault %d: %w", d.name, opName, off, fx.errRule, fx.err)
	}
	return fx, nil
}

// badIn returns an unreadable sector in [off, off+n), if any. REQUIRES: mu
// held.
func (d *Device) badIn(off, n int64) (int64, bool) {
	sec := int64(d.sector)
	for s := off / sec; s < (off+n)/sec; s++ {
		if _, ok := d.bad[s]; ok {
			return s, true
		}
	}
	return 0, false
}

// healLocked clears unreadable marks in [off, off+n): rewritten sectors
// read again. REQUIRES: mu held exclusively.
func (d *Device) healLocked(off, n int64) {
	if len(d.bad) == 0 {
		return
	}
	sec := int64(d.sector)
	if n/sec > int64(len(d.bad)) {
		for s := range d.bad {
			if s >= off/sec && s < (off+n)/sec {
				delete(d.bad, s)
			}
		}
	} else {
		for s := off / sec; s < (off+n)/sec; s++ {
			delete(d.bad, s)
		}
	}
	d.nbad.Store(int64(len(d.bad)))
}

// applyFlipsLocked corrupts stored bits. REQUIRES: mu held exclusively.
func (d *Device) applyFlipsLocked(fl []flip) error {
	for _, f := range fl {
		if err := d.st.flip(f.off, f.bit); err != nil {
			return err
		}
	}
	return nil
}

// finish waits until the modelled completion end and reports a power cut
// or failure that happened meanwhile.
func (d *Device) finish(ctx context.Context, opName string, off, end int64) error {
	if d.opts.Time == Virtual {
		d.clock.advanceTo(end)
	} else if wait := end - d.now(); wait > 0 {
		if ctx.Done() == nil {
			time.Sleep(time.Duration(wait))
		} else {
			t := time.NewTimer(time.Duration(wait))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
	}
	return d.stateErr(opName, off)
}

func (d *Device) ioErr(opName string, off int64, err error) error {
	return fmt.Errorf("%s: %s at %d: backing store: %v: %w", d.name, opName, off, err, backend.ErrFailed)
}

// ReadAt implements backend.Device.
func (d *Device) ReadAt(ctx context.Context, buf []byte, off int64) error {
	n := int64(len(buf))
	fx, err := d.begin(ctx, OpRead, "read", off, n, true)
	if err != nil {
		return err
	}
	if len(fx.flips) > 0 {
		d.mu.Lock()
		if err := d.stateErr("read", off); err != nil {
			d.mu.Unlock()
			return err
		}
		err := d.applyFlipsLocked(fx.flips)
		d.mu.Unlock()
		if err != nil {
			return d.ioErr("read", off, err)
		}
	}
	d.mu.RLock()
	if err := d.stateErr("read", off); err != nil {
		d.mu.RUnlock()
		return err
	}
	if len(d.bad) > 0 {
		if sec, ok := d.badIn(off, n); ok {
			d.mu.RUnlock()
			return fmt.Errorf("%s: read at %d: sector %d unreadable (torn by power loss): %w", d.name, off, sec, backend.ErrCorrupt)
		}
	}
	if err := d.st.read(buf, off); err != nil {
		d.mu.RUnlock()
		return d.ioErr("read", off, err)
	}
	d.tmu.Lock()
	end := d.drv.timeRead(d, d.now(), off, n, &fx)
	d.tmu.Unlock()
	d.mu.RUnlock()
	return d.finish(ctx, "read", off, end)
}

// WriteAt implements backend.Device.
func (d *Device) WriteAt(ctx context.Context, buf []byte, off int64) error {
	n := int64(len(buf))
	fx, err := d.begin(ctx, OpWrite, "write", off, n, true)
	if err != nil {
		return err
	}
	d.mu.Lock()
	if err := d.stateErr("write", off); err != nil {
		d.mu.Unlock()
		return err
	}
	d.healLocked(off, n)
	lo := d.undo.mark()
	err = d.st.write(buf, off, &d.undo.frags)
	d.undo.commit(lo, d.st)
	if err != nil {
		d.mu.Unlock()
		return d.ioErr("write", off, err)
	}
	if err := d.applyFlipsLocked(fx.flips); err != nil {
		d.mu.Unlock()
		return d.ioErr("write", off, err)
	}
	d.tmu.Lock()
	end, err := d.drv.timeWrite(d, d.now(), off, n, &fx)
	d.tmu.Unlock()
	if fx.powerCut {
		d.cutRailLocked()
		d.mu.Unlock()
		return fmt.Errorf("%s: write at %d: injected power cut: %w", d.name, off, backend.ErrFailed)
	}
	d.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%s: write at %d: %v: %w", d.name, off, err, backend.ErrFailed)
	}
	return d.finish(ctx, "write", off, end)
}

// Discard implements backend.Device. Discarded ranges read as zeros. Like a
// write, a discard is durable only after Sync.
func (d *Device) Discard(ctx context.Context, off, length int64) error {
	fx, err := d.begin(ctx, OpDiscard, "discard", off, length, true)
	if err != nil {
		return err
	}
	d.mu.Lock()
	if err := d.stateErr("discard", off); err != nil {
		d.mu.Unlock()
		return err
	}
	d.healLocked(off, length)
	lo := d.undo.mark()
	err = d.st.zero(off, length, &d.undo.frags)
	d.undo.commit(lo, d.st)
	if err != nil {
		d.mu.Unlock()
		return d.ioErr("discard", off, err)
	}
	if err := d.applyFlipsLocked(fx.flips); err != nil {
		d.mu.Unlock()
		return d.ioErr("discard", off, err)
	}
	d.tmu.Lock()
	end := d.drv.timeDiscard(d, d.now(), off, length, &fx)
	d.tmu.Unlock()
	if fx.powerCut {
		d.cutRailLocked()
		d.mu.Unlock()
		return fmt.Errorf("%s: discard at %d: injected power cut: %w", d.name, off, backend.ErrFailed)
	}
	d.mu.Unlock()
	return d.finish(ctx, "discard", off, end)
}

// Sync implements backend.Device: every write and discard that returned
// before it was called becomes durable.
func (d *Device) Sync(ctx context.Context) error {
	fx, err := d.begin(ctx, OpSync, "sync", 0, 0, false)
	if err != nil {
		return err
	}
	d.mu.Lock()
	if err := d.stateErr("sync", 0); err != nil {
		d.mu.Unlock()
		return err
	}
	if len(fx.flips) > 0 {
		if err := d.applyFlipsLocked(fx.flips); err != nil {
			d.mu.Unlock()
			return d.ioErr("sync", 0, err)
		}
	}
	d.dropUndoLocked()
	d.tmu.Lock()
	end := d.drv.timeSync(d, d.now(), &fx)
	d.tmu.Unlock()
	d.mu.Unlock()
	return d.finish(ctx, "sync", 0, end)
}

// dropUndoLocked makes everything written durable. REQUIRES: mu held
// exclusively.
func (d *Device) dropUndoLocked() {
	d.undo.drop(d.st)
}

// cutRailLocked cuts the power of d and of every device on its rail.
// REQUIRES: mu held exclusively.
func (d *Device) cutRailLocked() {
	if d.rail != nil && d.powered() && d.state.Load() == stateOK {
		d.rail.Cut()
	}
	d.cutLocked()
}

// cutLocked cuts power: the device fails from now on and d.revived (or
// d.reviveErr) is the device as it comes back. REQUIRES: mu held
// exclusively.
func (d *Device) cutLocked() {
	if d.state.Load() == stateOff || d.state.Load() == stateClosed {
		return
	}
	d.state.Store(stateOff)
	d.tmu.Lock()
	drv := d.drv
	d.final = d.statsLocked()
	d.drv = nil
	d.tmu.Unlock()
	unsynced := d.undo.pending()
	rng := rand.New(rand.NewPCG(mix(d.seed, 0x9017e7), uint64(d.gen)))
	bad, err := d.undo.crash(d.st, rng, d.sector, d.opts.CorruptTorn)
	st := d.st
	d.st = nil
	if err != nil {
		st.close()
		d.reviveErr = fmt.Errorf("%s: building the post-crash image: %v: %w", d.name, err, backend.ErrFailed)
		d.log.Error("sim: power loss failed", "err", err)
		return
	}
	d.revived = d.successor(st, drv, d.gen+1)
	for _, sec := range bad {
		if d.revived.bad == nil {
			d.revived.bad = map[int64]struct{}{}
		}
		d.revived.bad[sec] = struct{}{}
	}
	d.revived.nbad.Store(int64(len(d.revived.bad)))
	d.log.Debug("sim: power cut", "unsynced_writes", unsynced, "power_cycle", d.gen+1)
}

// PowerLoss cuts power now (unless a PowerCut fault or the rail already
// did; with a Rail it cuts every device on it) and returns the device as it
// comes back: synced data intact, each write or
// discard since the last Sync kept, dropped or torn at sector granularity
// as the seed decides. From then on d fails every call with
// backend.ErrFailed (Stats keeps working). The new device has d's options,
// contents, wear and counters, no fault rules, and a power-cycle count one
// higher, which reseeds its own future power losses. It may be called once
// per device; it fails if d was closed or already handed over.
//
// A fail-stopped device can still lose power: the returned device is its
// image, alive (faults do not survive a power cycle; add them again to
// model a drive that stays dead).
func (d *Device) PowerLoss() (*Device, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.handedOff {
		return nil, fmt.Errorf("%s: power loss: device already handed over: %w", d.name, backend.ErrFailed)
	}
	if d.state.Load() == stateClosed {
		return nil, fmt.Errorf("%s: power loss: %w", d.name, backend.ErrClosed)
	}
	d.cutRailLocked()
	if d.revived == nil {
		return nil, d.reviveErr
	}
	nd := d.revived
	d.revived, d.handedOff = nil, true
	return nd, nil
}

// PoweredOff reports whether power has been cut (by PowerLoss, a PowerCut
// fault or the device's Rail).
func (d *Device) PoweredOff() bool {
	return d.state.Load() == stateOff || d.state.Load() == stateOK && !d.powered()
}

// Close implements backend.Device as an orderly shutdown: the drive flushes
// its cache, so every write survives (see Reopen). Calls after Close fail
// with backend.ErrClosed. Closing a device twice returns
// backend.ErrClosed. Closing a device whose power is cut discards the
// device PowerLoss would have returned; a backing file keeps the
// post-crash image.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.state.Load() == stateClosed:
		return fmt.Errorf("%s: close: %w", d.name, backend.ErrClosed)
	case d.state.Load() == stateOff || !d.powered():
		// Power is cut: the drive keeps its post-crash image (a backing
		// file holds it, ready for New) and nothing more can be asked of it.
		d.cutLocked()
		d.state.Store(stateClosed)
		if d.revived != nil {
			d.revived.st.close()
			d.revived, d.handedOff = nil, true
		}
		return nil
	}
	return d.closeLocked()
}

// closeLocked shuts an open or failed device down. REQUIRES: mu held
// exclusively.
func (d *Device) closeLocked() error {
	d.state.Store(stateClosed)
	if d.st == nil {
		return nil
	}
	d.dropUndoLocked()
	if fs, ok := d.st.(*fileStore); ok {
		err := fs.close()
		d.st = nil
		if err != nil {
			return fmt.Errorf("%s: close: %v: %w", d.name, err, backend.ErrFailed)
		}
	}
	return nil
}

// Reopen closes d if it is open and returns a device over the same
// contents (every write kept, as after an orderly shutdown), wear and
// counters, without fault rules: the drive after a clean restart. A
// backing file is reopened from Options.Path. It fails after a power cut
// (use PowerLoss) and if d was already handed over.
func (d *Device) Reopen() (*Device, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.handedOff {
		return nil, fmt.Errorf("%s: reopen: device already handed over: %w", d.name, backend.ErrClosed)
	}
	d.tmu.Lock()
	drv := d.drv
	if drv == nil || d.state.Load() == stateOff || !d.powered() {
		d.tmu.Unlock()
		return nil, fmt.Errorf("%s: reopen: power was cut; use PowerLoss: %w", d.name, backend.ErrFailed)
	}
	d.tmu.Unlock()
	if d.state.Load() != stateClosed {
		if err := d.closeLocked(); err != nil {
			return nil, err
		}
	}
	st := d.st
	if st == nil {
		fs, _, err := openFileStore(d.opts.Path, d.size)
		if err != nil {
			return nil, fmt.Errorf("%s: reopen: %w", d.name, err)
		}
		st = fs
	}
	d.tmu.Lock()
	d.final = d.statsLocked()
	d.drv = nil
	d.tmu.Unlock()
	d.st, d.handedOff = nil, true
	return d.successor(st, drv, d.gen), nil
}

// Stats returns a snapshot of the counters. After the device handed its
// drive to a successor (PowerLoss, Reopen) it returns the final snapshot.
func (d *Device) Stats() Stats {
	d.tmu.Lock()
	defer d.tmu.Unlock()
	if d.drv == nil {
		return d.final
	}
	return d.statsLocked()
}

// statsLocked snapshots the counters. REQUIRES: tmu held, d.drv set.
func (d *Device) statsLocked() Stats {
	v := d.drv
	c := &v.c
	f := v.ftl
	s := Stats{
		Reads: c.reads, Writes: c.writes, Syncs: c.syncs, Discards: c.discards,
		ReadBytes: c.readBytes, WriteBytes: c.writeBytes, DiscardBytes: c.discardBytes,
		FaultsFired: c.faultsFired, FaultErrors: c.faultErrors,
		HostPages: f.hostPages, Programs: f.programs, GCMoves: f.gcMoves, GCRuns: f.gcRuns,
		Erases: f.erases, RMWPages: f.rmwPages, MappedPages: f.nMapped,
		Elapsed:     time.Duration(d.now() - v.start),
		PowerCycles: d.gen,
		ReadStalls:  c.readStalls, ReadStallsErase: c.readStallsErase, StallTime: time.Duration(c.stallTime),
		WriteStalls: c.writeStalls, WriteStallTime: time.Duration(c.writeStallTime),
		BusyRead: time.Duration(c.busy[kindRead]), BusyProgram: time.Duration(c.busy[kindProgram]),
		BusyGC: time.Duration(c.busy[kindGC]), BusyErase: time.Duration(c.busy[kindErase]),
		Read: v.hist[histRead].summary(), Write: v.hist[histWrite].summary(),
		Sync: v.hist[histSync].summary(), Discard: v.hist[histDiscard].summary(),
		Geometry:          d.geo,
		Destaged:          d.undo.destaged.Load(),
		UnreadableSectors: d.nbad.Load(),
	}
	if c.writeBytes > 0 {
		s.WriteAmplification = float64(f.programs*PageSize) / float64(c.writeBytes)
	}
	s.PE.Min, s.PE.Max, s.PE.Mean = f.wear()
	if d.prof.EnduranceCycles > 0 {
		s.Wear = s.PE.Mean / float64(d.prof.EnduranceCycles)
	}
	return s
}
