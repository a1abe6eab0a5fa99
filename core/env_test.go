package core

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"

	"github.com/shalestore/shale/backend"
	"github.com/shalestore/shale/backend/sim"
	"github.com/shalestore/shale/core/segment"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func testLogger() *slog.Logger {
	if os.Getenv("SHALE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return quiet
}

// testGeometry is small so tests fill segments and AUs quickly.
var testGeometry = segment.Geometry{Data: 4, Parity: 2, AUSize: 512 << 10, WriteUnit: 64 << 10}

// simEnv is an array on sim devices sharing one power rail.
type simEnv struct {
	t      testing.TB
	ctx    context.Context
	seed   int64
	drives []*sim.Device
	nvram  *sim.Device
	a      *Array
	opts   Options
	hook   atomic.Pointer[func(string)] // the crash hook, if any
	rail   *sim.Rail
}

type simConfig struct {
	drives     int
	driveBytes int64
	nvramBytes int64
	geometry   segment.Geometry
	seed       int64
	// noDedup and dedupHash set the Options of the same names.
	noDedup   bool
	dedupHash func([]byte) uint64
}

func (c *simConfig) fill() {
	if c.drives == 0 {
		c.drives = 7
	}
	if c.driveBytes == 0 {
		c.driveBytes = 64 << 20
	}
	if c.nvramBytes == 0 {
		c.nvramBytes = 16 << 20
	}
	if c.geometry == (segment.Geometry{}) {
		c.geometry = testGeometry
	}
}

func newSimEnv(t testing.TB, c simConfig) *simEnv {
	t.Helper()
	c.fill()
	e := &simEnv{t: t, ctx: context.Background(), seed: c.seed}
	rail, clock := sim.NewRail(), sim.NewClock()
	e.rail = rail
	dev := func(name string, size int64, kind backend.Kind, i int64) *sim.Device {
		prof := sim.SSDProfile().ZeroLatency()
		if kind == backend.NVRAM {
			prof = sim.NVRAMProfile().ZeroLatency()
		}
		d, err := sim.New(sim.Options{Size: size, Kind: kind, Profile: prof, Seed: c.seed*100 + i, Time: sim.Virtual,
			Clock: clock, Rail: rail, CorruptTorn: true, Name: name, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for i := range c.drives {
		e.drives = append(e.drives, dev(fmt.Sprintf("drives[%d]", i), c.driveBytes, backend.SSD, int64(i)))
	}
	e.nvram = dev("nvram", c.nvramBytes, backend.NVRAM, 99)
	e.opts = Options{Geometry: c.geometry, CacheBytes: 4 << 20, MetaCacheBytes: 4 << 20, Logger: testLogger(),
		NoDedup: c.noDedup, dedupHash: c.dedupHash,
		CrashHook: func(p string) {
			if h := e.hook.Load(); h != nil {
				(*h)(p)
			}
		}}
	var err error
	if e.a, err = Create(e.ctx, e.options()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if e.a != nil {
			e.a.Close(e.ctx)
		}
	})
	return e
}

func (e *simEnv) options() Options {
	o := e.opts
	o.Drives = nil
	for _, d := range e.drives {
		o.Drives = append(o.Drives, d)
	}
	o.NVRAM = e.nvram
	return o
}

// restart closes the array cleanly and opens it again.
func (e *simEnv) restart() {
	e.t.Helper()
	if err := e.a.Close(e.ctx); err != nil {
		e.t.Fatal(err)
	}
	e.a = nil
	e.open()
}

func (e *simEnv) open() {
	e.t.Helper()
	if err := e.tryOpen(); err != nil {
		e.t.Fatal(err)
	}
}

func (e *simEnv) tryOpen() error {
	var err error
	e.a, err = Open(e.ctx, e.options())
	return err
}

// powerLoss cuts power to every device at once (unsynced writes kept,
// dropped or torn per the seed), abandons the array and opens it again
// on the devices as they come back.
func (e *simEnv) powerLoss() {
	e.t.Helper()
	e.cutOnly()
	e.open()
}

// cutOnly is powerLoss without the open.
func (e *simEnv) cutOnly() {
	e.t.Helper()
	old := e.a
	e.a = nil
	for i, d := range e.drives {
		nd, err := d.PowerLoss()
		if err != nil {
			e.t.Fatal(err)
		}
		e.drives[i] = nd
	}
	nd, err := e.nvram.PowerLoss()
	if err != nil {
		e.t.Fatal(err)
	}
	e.nvram = nd
	if old != nil {
		old.abandon()
	}
}

func (e *simEnv) volume(name string) *Volume {
	e.t.Helper()
	v, err := e.a.Volume(name)
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}
