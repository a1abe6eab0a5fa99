package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/shalestore/shale/backend"
	_ "github.com/shalestore/shale/backend/all" // every backend a drive may name
	"github.com/shalestore/shale/config"
	"github.com/shalestore/shale/core"
	"github.com/shalestore/shale/core/boot"
	"github.com/shalestore/shale/core/segment"
)

// probeBytes is how much of each end of a device the blank check reads.
// Partition tables, filesystem superblocks, RAID and LVM labels, ZFS
// labels and shale's own boot region all live in the first or last MiB.
const probeBytes = 1 << 20

// engine is the open array and the devices under it, which it owns.
type engine struct {
	arr     *core.Array
	devices []backend.Device // drives, then NVRAM
	log     *slog.Logger
}

// devProbe is what the blank check found on one device.
type devProbe struct {
	name  string // the configuration key: "drives[3]", "nvram"
	blank bool   // both ends read as zeros
	err   error  // the device could not be read
}

// startPlan is what to do with the devices: create a new array or open
// the one on them.
type startPlan int

const (
	planCreate startPlan = iota
	planOpen
)

// planStart decides from the probes whether to create or open the array.
// An array is created only when every device reads as blank: shale never
// formats a device that holds anything, be it an array (its own or
// another's) or other data. Devices that hold data mean "open"; whether
// the array on them is sound is core.Open's to say. A device that cannot
// be read among blank ones is an error: it might hold the array.
func planStart(probes []devProbe) (startPlan, error) {
	var unreadable []string
	for _, p := range probes {
		if p.err == nil && !p.blank {
			return planOpen, nil
		}
		if p.err != nil {
			unreadable = append(unreadable, fmt.Sprintf("%s: %v", p.name, p.err))
		}
	}
	if len(unreadable) > 0 {
		return 0, fmt.Errorf("every readable device is blank but some cannot be read, so shale will neither create an array over them nor open one: %s", strings.Join(unreadable, "; "))
	}
	return planCreate, nil
}

// probeBlank reports whether the first and last probeBytes of dev are all
// zeros.
func probeBlank(ctx context.Context, dev backend.Device) (bool, error) {
	size := dev.Size()
	n := min(int64(probeBytes), size)
	n -= n % int64(dev.Alignment())
	buf := backend.AlignedBuffer(int(n))
	for _, off := range []int64{0, size - n} {
		if err := dev.ReadAt(ctx, buf, off); err != nil {
			return false, err
		}
		for _, b := range buf {
			if b != 0 {
				return false, nil
			}
		}
	}
	return true, nil
}

// describe summarises probes for an error message.
func describe(probes []devProbe) string {
	var data, blank []string
	for _, p := range probes {
		switch {
		case p.err != nil:
			data = append(data, p.name+" (unreadable)")
		case p.blank:
			blank = append(blank, p.name)
		default:
			data = append(data, p.name)
		}
	}
	s := "holding data: " + strings.Join(data, ", ")
	if len(blank) > 0 {
		s += "; blank: " + strings.Join(blank, ", ")
	}
	return s
}

// openEngine opens the configured devices, opens the array on them or
// creates one when they are all blank, and creates the configured engine
// volumes the array lacks.
func openEngine(ctx context.Context, cfg *config.Config, log *slog.Logger) (_ *engine, err error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	e := &engine{log: log}
	defer func() {
		if err != nil {
			e.closeDevices()
		}
	}()
	var drives []backend.Device
	for i, d := range cfg.Drives {
		dev, err := backend.Open(d.Spec(fmt.Sprintf("drives[%d]", i), backend.SSD))
		if err != nil {
			return nil, err // names drives[i]
		}
		e.devices = append(e.devices, dev)
		drives = append(drives, dev)
	}
	nvram, err := backend.Open(cfg.NVRAM.Spec("nvram", backend.NVRAM))
	if err != nil {
		return nil, err
	}
	e.devices = append(e.devices, nvram)

	probes := make([]devProbe, len(e.devices))
	for i, dev := range e.devices {
		probes[i].name = "nvram"
		if i < len(drives) {
			probes[i].name = fmt.Sprintf("drives[%d]", i)
		}
		probes[i].blank, probes[i].err = probeBlank(ctx, dev)
	}
	plan, err := planStart(probes)
	if err != nil {
		return nil, err
	}
	want := segment.Geometry{Data: cfg.Geometry.Data, Parity: cfg.Geometry.Parity,
		AUSize: int64(cfg.Geometry.AUSize), WriteUnit: int64(cfg.Geometry.WriteUnit)}
	opts := core.Options{Drives: drives, NVRAM: nvram, Geometry: want, Logger: log,
		NoDedup: !cfg.Dedup.Enabled, DedupIndexBytes: int64(cfg.Dedup.IndexBytes)}
	geometry := want
	switch plan {
	case planCreate:
		log.Info("shale creating a new array: every drive and the NVRAM are blank", "data_dir", cfg.DataDir, "geometry", want.String())
		if e.arr, err = core.Create(ctx, opts); err != nil {
			return nil, fmt.Errorf("creating an array on blank devices: %w", err)
		}
	case planOpen:
		// The geometry is the array's, from its boot region; the
		// configuration's applies only when an array is created. Read it
		// before Open, while nothing writes the boot region.
		if found, err := boot.ReadNewest(ctx, drives); err == nil {
			geometry = found.State.Geometry
			if geometry != want {
				log.Warn("the array's geometry differs from the configuration's, which applies only when an array is created",
					"array", geometry.String(), "configured", want.String())
			}
		}
		if e.arr, err = core.Open(ctx, opts); err != nil {
			return nil, fmt.Errorf("opening the array (devices %s; shale creates an array only when every device is blank, and never formats over data): %w",
				describe(probes), err)
		}
	}
	if err := e.ensureVolumes(ctx, cfg); err != nil {
		e.arr.Close(ctx)
		e.arr = nil
		return nil, err
	}
	var paths []string
	for i, d := range cfg.Drives {
		p := d.Path
		if p == "" {
			p = d.Backend
		}
		paths = append(paths, fmt.Sprintf("%d:%s", i, p))
	}
	var vols []string
	for _, v := range e.arr.Volumes() {
		vols = append(vols, v.Name)
	}
	st := e.arr.Stats()
	log.Info("shale array open", "data_dir", cfg.DataDir, "drives", len(drives), "paths", strings.Join(paths, ","),
		"nvram", cfg.NVRAM.Path, "geometry", geometry.String(), "capacity", iec(st.CapacityBytes),
		"free", iec(st.FreeBytes), "volumes", strings.Join(vols, ","), "snapshots", len(e.arr.Snapshots("")))
	return e, nil
}

// ensureVolumes creates the configured engine volumes the array lacks. A
// volume that exists keeps its size: resizing is an explicit operation
// (shale volume resize), never a side effect of a start.
func (e *engine) ensureVolumes(ctx context.Context, cfg *config.Config) error {
	for i, vc := range cfg.Volumes {
		if vc.RAM {
			continue
		}
		v, err := e.arr.Volume(vc.Name)
		switch {
		case errors.Is(err, core.ErrNotFound):
			if _, err := e.arr.CreateVolume(ctx, vc.Name, int64(vc.Size)); err != nil {
				return fmt.Errorf("volumes[%d] (%s): creating: %w", i, vc.Name, err)
			}
			e.log.Info("created configured volume", "volume", vc.Name, "size", iec(int64(vc.Size)))
		case err != nil:
			return fmt.Errorf("volumes[%d] (%s): %w", i, vc.Name, err)
		case v.Size() != int64(vc.Size):
			e.log.Warn("configured volume size differs from the array's; the array's stands (shale volume resize changes it)",
				"volume", vc.Name, "configured", iec(int64(vc.Size)), "array", iec(v.Size()))
		}
	}
	return nil
}

// close closes the array, then the devices.
func (e *engine) close(ctx context.Context) error {
	var errs []error
	if e.arr != nil {
		if err := e.arr.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("closing the array: %w", err))
		}
	}
	errs = append(errs, e.closeDevices())
	return errors.Join(errs...)
}

func (e *engine) closeDevices() error {
	var errs []error
	for _, d := range e.devices {
		if err := d.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	e.devices = nil
	return errors.Join(errs...)
}
