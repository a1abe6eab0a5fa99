package boot

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/shalestore/shale/backend"
	"github.com/shalestore/shale/core/internal/memdev"
	"github.com/shalestore/shale/core/segment"
)

var writeCorpus = flag.Bool("write-corpus", false, "rewrite the committed fuzz seed corpus under testdata/fuzz")

func sample(gen uint64) *State {
	g := segment.Geometry{Data: 2, Parity: 1, AUSize: 64 << 10, WriteUnit: 16 << 10}
	return &State{
		Generation: gen, Array: [16]byte{1, 2, 3}, Geometry: g, Base: Base(8192), NextSegment: 12,
		Drives:   []Drive{{ID: [16]byte{9}, Size: 1 << 20}, {ID: [16]byte{8}, Size: 1 << 20, Failed: true}, {ID: [16]byte{7}, Size: 2 << 20}},
		Frontier: []segment.Layout{{Segment: 10, Members: []segment.Member{{Drive: 0, AU: 1}, {Drive: 1, AU: 2}, {Drive: 2, AU: 3}}}, {Segment: 11, Members: []segment.Member{{Drive: 2, AU: 4}, {Drive: 0, AU: 5}, {Drive: 1, AU: 6}}}},
		Roots:    map[string][]byte{"blockmap": []byte("root-a"), "medium": {}, "z": bytes.Repeat([]byte{7}, 300)},
		Alloc:    []byte("allocator state"),
	}
}

func TestEncodeDecode(t *testing.T) {
	s := sample(5)
	got, err := Decode(Encode(s))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, s)
	}
	img := Encode(s)
	for i := range img {
		bad := bytes.Clone(img)
		bad[i] ^= 0x10
		if _, err := Decode(bad); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flipped byte %d: %v", i, err)
		}
	}
	l := Label{Array: s.Array, Drive: [16]byte{4}, Index: 2, Drives: 3, SlotSize: 8192, Base: Base(8192)}
	gl, err := DecodeLabel(EncodeLabel(l))
	if err != nil || gl != l {
		t.Fatalf("label round trip: %+v %v", gl, err)
	}
}

func devices(n int) ([]*memdev.Device, []backend.Device) {
	var ms []*memdev.Device
	var ds []backend.Device
	for range n {
		m := memdev.New(1<<20, backend.SSD)
		ms = append(ms, m)
		ds = append(ds, m)
	}
	return ms, ds
}

// TestTornWrite crashes a boot write at every point and copy, with every
// power-loss seed of a few, and checks recovery reads the new generation or
// the previous one, never anything else.
func TestTornWrite(t *testing.T) {
	ctx := context.Background()
	const slot = 8192
	for _, point := range CrashPoints {
		for nth := 1; nth <= 3; nth++ {
			for seed := range uint64(4) {
				t.Run(fmt.Sprintf("%s/%d/%d", point, nth, seed), func(t *testing.T) {
					ms, ds := devices(3)
					for i, d := range ds {
						if err := WriteLabel(ctx, d, Label{Array: [16]byte{1, 2, 3}, Index: i, Drives: 3, SlotSize: slot, Base: Base(slot)}); err != nil {
							t.Fatal(err)
						}
					}
					w := &Writer{SlotSize: slot}
					if err := w.Write(ctx, ds, sample(1)); err != nil {
						t.Fatal(err)
					}
					var images []*memdev.Device
					count := 0
					w.CrashHook = func(p string) {
						if p != point || images != nil {
							return
						}
						count++
						if count < nth && p == PointCopyWritten {
							return
						}
						for _, m := range ms {
							images = append(images, m.PowerLoss(seed))
						}
					}
					next := sample(2)
					next.Roots["blockmap"] = []byte("root-b")
					if err := w.Write(ctx, ds, next); err != nil {
						t.Fatal(err)
					}
					if images == nil {
						t.Skip("point not reached this often")
					}
					var crashed []backend.Device
					for _, m := range images {
						crashed = append(crashed, m)
					}
					f, err := ReadNewest(ctx, crashed)
					if err != nil {
						t.Fatal(err)
					}
					switch f.State.Generation {
					case 1:
						if !reflect.DeepEqual(f.State, sample(1)) {
							t.Fatal("generation 1 read back wrong")
						}
						if point != PointEncoded {
							t.Fatal("a copy of generation 2 was synced but generation 1 was read")
						}
					case 2:
						if !reflect.DeepEqual(f.State, next) {
							t.Fatal("generation 2 read back wrong")
						}
						if point == PointEncoded {
							t.Fatal("generation 2 found before any copy was written")
						}
					default:
						t.Fatalf("generation %d", f.State.Generation)
					}
				})
			}
		}
	}
}

// TestCopiesSurviveFailures: a generation written to three drives is found
// with two of them failed.
func TestCopiesSurviveFailures(t *testing.T) {
	ctx := context.Background()
	ms, ds := devices(4)
	for i, d := range ds {
		if err := WriteLabel(ctx, d, Label{Array: [16]byte{1, 2, 3}, Index: i, Drives: 4, SlotSize: 8192, Base: Base(8192)}); err != nil {
			t.Fatal(err)
		}
	}
	w := &Writer{SlotSize: 8192}
	for g := uint64(1); g <= 3; g++ {
		if err := w.Write(ctx, ds[:3], sample(g)); err != nil {
			t.Fatal(err)
		}
	}
	ms[0].Fail(true)
	ms[1].Fail(true)
	f, err := ReadNewest(ctx, ds)
	if err != nil || f.State.Generation != 3 || f.Copies != 1 {
		t.Fatalf("found %+v, %v", f, err)
	}
	ms[2].Fail(true)
	if _, err := ReadNewest(ctx, ds); !errors.Is(err, ErrNotFound) {
		t.Fatalf("with every copy failed: %v", err)
	}
	if err := w.Write(ctx, ds[:3], sample(4)); err == nil {
		t.Fatal("write to three failed drives succeeded")
	}
}

// FuzzDecode: the boot slot decoder never panics, and what it accepts
// encodes back to the same bytes.
func FuzzDecode(f *testing.F) {
	seeds := [][]byte{Encode(sample(1)), Encode(&State{Generation: 1, Geometry: segment.DefaultGeometry(), NextSegment: 1})}
	if *writeCorpus {
		dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			f.Fatal(err)
		}
		for i, s := range seeds {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%d", i)), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", s), 0o644); err != nil {
				f.Fatal(err)
			}
		}
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if l, err := DecodeLabel(b); err == nil && !bytes.Equal(EncodeLabel(l)[:68], b[:68]) {
			t.Fatalf("accepted label re-encodes differently")
		}
		s, err := Decode(b)
		if err != nil {
			return
		}
		img := Encode(s)
		if !bytes.Equal(img, b[:len(img)]) {
			t.Fatalf("accepted slot re-encodes differently")
		}
	})
}
