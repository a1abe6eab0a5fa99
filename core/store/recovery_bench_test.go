package store

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shalestore/shale/backend"
	"github.com/shalestore/shale/backend/file"
	"github.com/shalestore/shale/core/alloc"
	"github.com/shalestore/shale/core/segment"
)

var (
	recoverGiB = flag.String("recover-gib", "1,8", "comma-separated GiB stored before BenchmarkRecover measures recovery")
	recoverDir = flag.String("recover-dir", "", "BenchmarkRecover keeps its filled arrays in DIR/<n>GiB and reuses them across runs (bench/recovery-flat.sh); empty: a temporary directory per process, removed at exit")
)

// counting wraps a device and counts the bytes read through it.
type counting struct {
	backend.Device
	read *atomic.Int64
}

func (c counting) ReadAt(ctx context.Context, buf []byte, off int64) error {
	c.read.Add(int64(len(buf)))
	return c.Device.ReadAt(ctx, buf, off)
}

func wrap(devs []backend.Device, n *atomic.Int64) []backend.Device {
	out := make([]backend.Device, len(devs))
	for i, d := range devs {
		out[i] = counting{d, n}
	}
	return out
}

// store fills s with total bytes of 32 KiB cblocks, with a log record every
// 64 cblocks and a checkpoint (as the engine would take) every 8 segments.
func storeBytes(t testing.TB, s *Store, total int64) {
	ctx := context.Background()
	cb := make([]byte, 32<<10)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range cb {
		cb[i] = byte(rng.Uint32())
	}
	segBytes := s.Geometry().SegmentBytes()
	var done int64
	var seq uint64
	lastCk := int64(0)
	for n := 0; done < total; n++ {
		kind := segment.Cblock
		if n%64 == 63 {
			kind = segment.Record
			seq++
		}
		if _, err := s.Append(ctx, kind, seq, seq, cb); err != nil {
			t.Fatal(err)
		}
		done += int64(len(cb))
		if done-lastCk >= 8*segBytes {
			lastCk = done
			if err := s.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if err := s.Checkpoint(ctx, map[string][]byte{"pyramid": []byte(fmt.Sprint(done))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestRecoveryReadsFlat: recovery reads the same number of bytes whether
// the array holds 8 or 48 segments of data (sim drives).
func TestRecoveryReadsFlat(t *testing.T) {
	ctx := context.Background()
	var reads []int64
	for _, segs := range []int64{8, 48} {
		a := newArray(t, 7, 8<<20, 5)
		o := testOptions()
		o.Alloc = alloc.Options{Ahead: 4, MaxFrontier: 16}
		s, err := Create(ctx, a.devs(), a.nvram, o)
		if err != nil {
			t.Fatal(err)
		}
		storeBytes(t, s, segs*testGeometry.SegmentBytes())
		if err := s.Close(ctx); err != nil {
			t.Fatal(err)
		}
		var n atomic.Int64
		s2, rec, err := Open(ctx, wrap(a.devs(), &n), a.nvram, o)
		if err != nil {
			t.Fatal(err)
		}
		reads = append(reads, n.Load())
		t.Logf("%d segments stored: recovery read %d bytes, scanned %d frontier segments", segs, n.Load(), len(rec.Segments))
		_ = s2.Close(ctx)
	}
	if reads[1] > reads[0]*3/2 {
		t.Fatalf("recovery read %d bytes with 8 segments stored, %d with 48: it grows with the data", reads[0], reads[1])
	}
}

// filled caches the arrays BenchmarkRecover filled, by GiB, so the fill
// runs once per process (the benchmark function itself runs several
// times). TestMain removes them.
var (
	filledMu sync.Mutex
	filled   = map[int]string{}
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	for _, dir := range filled {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

func openFiles(b *testing.B, dir string, direct bool) ([]backend.Device, backend.Device) {
	var devs []backend.Device
	opts := map[string]any{}
	if direct {
		opts["direct"] = true
	}
	for i := range 9 {
		d, err := file.Open(backend.Spec{Name: fmt.Sprintf("drives[%d]", i), Backend: "file", Path: filepath.Join(dir, fmt.Sprint(i)), Size: 2 << 30, Kind: backend.SSD, Options: opts})
		if err != nil {
			b.Fatal(err)
		}
		devs = append(devs, d)
	}
	nv, err := file.Open(backend.Spec{Name: "nvram", Backend: "file", Path: filepath.Join(dir, "nvram"), Size: 16 << 20, Kind: backend.NVRAM, Options: opts})
	if err != nil {
		b.Fatal(err)
	}
	return devs, nv
}

func closeFiles(devs []backend.Device, nv backend.Device) {
	for _, d := range devs {
		d.Close()
	}
	nv.Close()
}

// BenchmarkRecover measures Open (boot region, frontier scan, NVRAM open,
// the session's boot write) and EndRestore on file-backed drives holding
// 1 and 8 GiB of data: 7+2, 8 MiB AUs, 1 MiB write units, nine 2 GiB
// sparse drives either way, reads with O_DIRECT so the page cache does not
// serve them. The fill (through the page cache) runs once per size.
func BenchmarkRecover(b *testing.B) {
	ctx := context.Background()
	slog.SetDefault(slog.New(slog.DiscardHandler))
	for _, f := range strings.Split(*recoverGiB, ",") {
		gib, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("%dGiB", gib), func(b *testing.B) {
			o := Options{Geometry: segment.DefaultGeometry(), Logger: quiet}
			filledMu.Lock()
			dir, ok := filled[gib]
			if !ok && *recoverDir != "" {
				// Kept across processes: filled if DIR/<n>GiB/filled exists.
				dir = filepath.Join(*recoverDir, fmt.Sprintf("%dGiB", gib))
				_, err := os.Stat(filepath.Join(dir, "filled"))
				ok = err == nil
				if !ok {
					os.RemoveAll(dir) // a fill that did not finish
					if err := os.MkdirAll(dir, 0o755); err != nil {
						b.Fatal(err)
					}
				}
			}
			if !ok {
				if *recoverDir == "" {
					dir, err = os.MkdirTemp("", "shale-recover-")
					if err != nil {
						b.Fatal(err)
					}
					filled[gib] = dir
				}
				devs, nv := openFiles(b, dir, false)
				s, err := Create(ctx, devs, nv, o)
				if err != nil {
					b.Fatal(err)
				}
				t0 := time.Now()
				storeBytes(b, s, int64(gib)<<30)
				if err := s.Close(ctx); err != nil {
					b.Fatal(err)
				}
				closeFiles(devs, nv)
				b.Logf("stored %d GiB in %v", gib, time.Since(t0).Round(time.Millisecond))
				if *recoverDir != "" {
					if err := os.WriteFile(filepath.Join(dir, "filled"), nil, 0o644); err != nil {
						b.Fatal(err)
					}
				}
			}
			filledMu.Unlock()
			devs, nv := openFiles(b, dir, true)
			defer closeFiles(devs, nv)
			var n atomic.Int64
			var scanned int
			var ph Phases
			var restore time.Duration
			b.ResetTimer()
			for range b.N {
				s, rec, err := Open(ctx, wrap(devs, &n), nv, o)
				if err != nil {
					b.Fatal(err)
				}
				t0 := time.Now()
				if err := s.EndRestore(ctx); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				restore += time.Since(t0)
				scanned = len(rec.Segments)
				p := rec.Phases
				ph.BootRead += p.BootRead
				ph.Scan += p.Scan
				ph.Verify += p.Verify
				ph.Sync += p.Sync
				ph.BootWrite += p.BootWrite
				ph.Start += p.Start
				_ = s.Close(ctx)
				b.StartTimer()
			}
			b.ReportMetric(float64(n.Load())/float64(b.N), "bytes-read/op")
			b.ReportMetric(float64(scanned), "frontier-segments")
			// Per phase, ms per recovery: the reading part (boot read,
			// scan, verify) and the fixed writing part (syncs, boot write).
			per := float64(b.N) * float64(time.Millisecond)
			b.ReportMetric(float64(ph.BootRead)/per, "bootread-ms")
			b.ReportMetric(float64(ph.Scan)/per, "scan-ms")
			b.ReportMetric(float64(ph.Verify)/per, "verify-ms")
			b.ReportMetric(float64(ph.Sync)/per, "sync-ms")
			b.ReportMetric(float64(ph.BootWrite)/per, "bootwrite-ms")
			b.ReportMetric(float64(ph.Start+restore)/per, "start+restore-ms")
			b.ReportMetric(float64(ph.BootRead+ph.Scan+ph.Verify)/per, "read-phases-ms")
		})
	}
}
