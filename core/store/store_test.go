package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"testing"

	"github.com/shalestore/shale/backend"
	"github.com/shalestore/shale/backend/sim"
	"github.com/shalestore/shale/core/segment"
)

// testGeometry: 4+2, 16 KiB write units, 4 segios per AU.
var testGeometry = segment.Geometry{Data: 4, Parity: 2, AUSize: 64 << 10, WriteUnit: 16 << 10}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// array is a set of sim devices: drives and NVRAM.
type array struct {
	drives []*sim.Device
	nvram  *sim.Device
}

func newArray(t testing.TB, n int, driveSize int64, seed int64) *array {
	t.Helper()
	a := &array{}
	clock := sim.NewClock()
	for i := range n {
		d, err := sim.New(sim.Options{Size: driveSize, Kind: backend.SSD, Seed: seed*100 + int64(i), Time: sim.Virtual, Clock: clock,
			Profile: sim.SSDProfile().ZeroLatency(), Name: fmt.Sprintf("drives[%d]", i), Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		a.drives = append(a.drives, d)
	}
	nv, err := sim.New(sim.Options{Size: 1 << 20, Kind: backend.NVRAM, Seed: seed*100 + 99, Time: sim.Virtual, Clock: clock,
		Profile: sim.NVRAMProfile().ZeroLatency(), Name: "nvram", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	a.nvram = nv
	return a
}

func (a *array) devs() []backend.Device {
	out := make([]backend.Device, len(a.drives))
	for i, d := range a.drives {
		out[i] = d
	}
	return out
}

// powerLoss cuts power to every device at once and returns the array as it
// comes back.
func (a *array) powerLoss(t testing.TB) *array {
	b := &array{}
	for _, d := range a.drives {
		nd, err := d.PowerLoss()
		if err != nil {
			t.Fatal(err)
		}
		b.drives = append(b.drives, nd)
	}
	nv, err := a.nvram.PowerLoss()
	if err != nil {
		t.Fatal(err)
	}
	b.nvram = nv
	return b
}

func testOptions() Options {
	return Options{Geometry: testGeometry, Logger: quiet, Alloc: allocOpts}
}

func TestCreateWriteReopen(t *testing.T) {
	ctx := context.Background()
	a := newArray(t, 7, 4<<20, 1)
	s, err := Create(ctx, a.devs(), a.nvram, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	type item struct {
		a    segment.Addr
		data []byte
	}
	var items []item
	for i := range 200 {
		p := make([]byte, 1+rng.IntN(9000))
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		kind := segment.Cblock
		if i%5 == 0 {
			kind = segment.Record
		}
		var ad segment.Addr
		if i%3 == 1 {
			// Records among them: recovery must find those too.
			ad, err = s.AppendFunc(ctx, kind, uint64(i+1), uint64(i+1), len(p), func(dst []byte) { copy(dst, p) })
		} else {
			ad, err = s.Append(ctx, kind, uint64(i+1), uint64(i+1), p)
		}
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, item{ad, p})
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		buf := make([]byte, it.a.Length)
		if _, err := s.Read(ctx, it.a, buf); err != nil || !bytes.Equal(buf, it.data) {
			t.Fatalf("read %v: %v", it.a, err)
		}
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Clean restart: every item is found again through the frontier scan.
	b := &array{}
	for _, d := range a.drives {
		nd, err := d.Reopen()
		if err != nil {
			t.Fatal(err)
		}
		b.drives = append(b.drives, nd)
	}
	b.nvram, _ = a.nvram.Reopen()
	s2, rec, err := Open(ctx, b.devs(), b.nvram, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.EndRestore(ctx); err != nil {
		t.Fatal(err)
	}
	nrec := 0
	for _, it := range items {
		buf := make([]byte, it.a.Length)
		if _, err := s2.Read(ctx, it.a, buf); err != nil || !bytes.Equal(buf, it.data) {
			t.Fatalf("after reopen, read %v: %v", it.a, err)
		}
	}
	for i := range items {
		if i%5 == 0 {
			nrec++
		}
	}
	if len(rec.Records) != nrec {
		t.Fatalf("recovery found %d records, want %d", len(rec.Records), nrec)
	}
	// Appends go on after the recovered segios.
	last := items[len(items)-1].a
	ad, err := s2.Append(ctx, segment.Cblock, 0, 0, []byte("after"))
	if err != nil {
		t.Fatal(err)
	}
	if ad.Segment < last.Segment || ad.Segment == last.Segment && ad.Offset <= last.Offset {
		t.Fatalf("append after reopen at %v, not after %v", ad, last)
	}
	if err := s2.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	a := newArray(t, 5, 4<<20, 2)
	if _, err := Create(ctx, a.devs()[:4], a.nvram, Options{Geometry: segment.Geometry{Data: 4, Parity: 2, AUSize: 64 << 10, WriteUnit: 16 << 10}, Logger: quiet}); !errors.Is(err, segment.ErrGeometry) {
		t.Fatalf("4 drives for 4+2: %v", err)
	}
	if _, _, err := Open(ctx, a.devs(), a.nvram, testOptions()); err == nil {
		t.Fatal("opened blank drives")
	}
	s, err := Create(ctx, a.devs(), a.nvram, Options{Geometry: segment.Geometry{Data: 3, Parity: 1, AUSize: 64 << 10, WriteUnit: 16 << 10}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close(ctx)
	d := a.devs()
	d[0], d[1] = d[1], d[0]
	if _, _, err := Open(ctx, d, a.nvram, testOptions()); !errors.Is(err, ErrDriveOrder) {
		t.Fatalf("swapped drives: %v", err)
	}
}
