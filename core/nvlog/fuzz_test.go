package nvlog

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// fuzzDevBytes is the fuzzed device: two superblock slots and a 32-block
// region.
const (
	fuzzBlk      = 512
	fuzzDevBytes = regionOff + 32*fuzzBlk
)

// fuzzImage turns a fuzz input into a device.
//
// Mode 0 (data[0] even): the input is the device, compacted: the next
// superBytes bytes are slot 0's superblock, the next superBytes slot 1's,
// the rest the log region from its start; the rest of the device is zero.
//
// Mode 1 (data[0] odd): data[1:9] seeds a valid log built by real commits,
// trims and power losses; every following 3 bytes (offset u16 scaled to
// the device, xor byte) damage it.
func fuzzImage(data []byte) *memDev {
	dev := newMemDev(fuzzDevBytes, fuzzBlk)
	if len(data) == 0 {
		return dev
	}
	if data[0]%2 == 0 {
		rest := data[1:]
		for slot := range 2 {
			n := copy(dev.data[slot*superSlotBytes:slot*superSlotBytes+superBytes], rest)
			rest = rest[n:]
		}
		copy(dev.data[regionOff:], rest)
		copy(dev.durable, dev.data)
		return dev
	}
	var seed uint64
	if len(data) >= 9 {
		seed = binary.LittleEndian.Uint64(data[1:9])
		data = data[9:]
	} else {
		data = nil
	}
	dev = buildLog(seed)
	for ; len(data) >= 3; data = data[3:] {
		off := int(binary.LittleEndian.Uint16(data)) * fuzzDevBytes >> 16
		dev.data[off] ^= data[2]
	}
	copy(dev.durable, dev.data)
	return dev
}

// buildLog makes a valid log on a fuzz-sized device from a seed: commits of
// random sizes, trims, reopens and a power loss in the middle of a commit.
func buildLog(seed uint64) *memDev {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, 7))
	dev := newMemDev(fuzzDevBytes, fuzzBlk)
	o := testOpts()
	o.MaxBatchBytes = MinMaxBatchBytes
	if err := Format(ctx, dev, o); err != nil {
		panic(err)
	}
	for round := range 3 {
		cut := round == 2 && rng.IntN(2) == 0
		oo := o
		var after *memDev
		oo.CrashHook = func(p string) {
			if cut && p == CrashBatchWritten && after == nil {
				after = dev.powerLoss(rng)
			}
		}
		l, err := Open(ctx, dev, oo)
		if err != nil {
			panic(err)
		}
		for i := range 1 + rng.IntN(12) {
			if s := l.Stats(); s.BytesInUse > s.RegionBytes/2 {
				if err := l.Trim(ctx, s.TrimSeq+1+rng.Uint64N(s.DurableSeq-s.TrimSeq)); err != nil {
					panic(err)
				}
			}
			if err := commitOrTrim(l, payload(uint64(i), rng.IntN(3000))); err != nil {
				break // the cut
			}
		}
		l.Close()
		if after != nil {
			dev = after
		}
	}
	return dev
}

// commitOrTrim commits entry on l, and if the writer waits for room (the
// random trims above can leave the free space in pieces too small for the
// batch), trims everything durable: the test's single goroutine is the
// only one that could. Logs that never fill up come out exactly as with a
// plain Commit, so the images of committed seeds do not change.
func commitOrTrim(l *Log, entry []byte) error {
	ctx := context.Background()
	done := make(chan error, 1)
	go func() {
		_, err := l.Commit(ctx, entry)
		done <- err
	}()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-tick.C:
			if s := l.Stats(); s.WaitingForTrim && s.DurableSeq > s.TrimSeq {
				_ = l.Trim(ctx, s.DurableSeq) // fails only after the cut; Commit reports it
			}
		}
	}
}

// FuzzOpen: whatever the device holds, Open must not panic or hang, and
// either fail or return a log that is consistent with itself: Replay
// succeeds with contiguous seqs above the trim point, new commits get the
// next seqs, survive a reopen, and the log can be trimmed.
func FuzzOpen(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// A hang is a failure too: make it a crash the fuzzer records.
		watchdog := time.AfterFunc(20*time.Second, func() {
			buf := make([]byte, 1<<20)
			panic(fmt.Sprintf("FuzzOpen hangs on this input; goroutines:\n%s", buf[:runtime.Stack(buf, true)]))
		})
		defer watchdog.Stop()
		ctx := context.Background()
		dev := fuzzImage(data)
		l, err := Open(ctx, dev, testOpts())
		if err != nil {
			return
		}
		defer l.Close()
		checkSelfConsistent(t, l, dev)
	})
}

func checkSelfConsistent(t *testing.T, l *Log, dev *memDev) {
	ctx := context.Background()
	s := l.Stats()
	if s.BytesInUse < 0 || s.BytesInUse > s.RegionBytes || s.TrimSeq > s.DurableSeq || s.NextSeq != s.DurableSeq+1 {
		t.Fatalf("stats inconsistent: %+v", s)
	}
	var n int
	last := s.TrimSeq
	err := l.Replay(ctx, func(seq uint64, e []byte) error {
		if seq != last+1 {
			return fmt.Errorf("seq %d after %d", seq, last)
		}
		last = seq
		n++
		return nil
	})
	if err != nil {
		t.Fatalf("replay after a successful open: %v", err)
	}
	if last != s.DurableSeq {
		t.Fatalf("replay ends at %d, durable %d", last, s.DurableSeq)
	}
	// Make room, then commit.
	if err := l.Trim(ctx, s.DurableSeq); err != nil {
		t.Fatalf("trim all: %v", err)
	}
	var seqs []uint64
	for i := range 3 {
		seq, err := l.Commit(ctx, payload(uint64(i), 100*i))
		if err != nil {
			t.Fatalf("commit: %v", err)
		}
		if seq != s.DurableSeq+1+uint64(i) {
			t.Fatalf("commit got seq %d, want %d", seq, s.DurableSeq+1+uint64(i))
		}
		seqs = append(seqs, seq)
	}
	l.Close()
	l2, err := Open(ctx, dev, testOpts())
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer l2.Close()
	var got []uint64
	if err := l2.Replay(ctx, func(seq uint64, e []byte) error {
		if _, err := checkPayload(e); err != nil {
			return err
		}
		got = append(got, seq)
		return nil
	}); err != nil {
		t.Fatalf("replay after reopen: %v", err)
	}
	if fmt.Sprint(got) != fmt.Sprint(seqs) {
		t.Fatalf("after reopen replayed %v, committed %v", got, seqs)
	}
}

// fuzzSeeds are the inputs of the committed corpus: valid logs in both
// modes, and damaged ones.
func fuzzSeeds() [][]byte {
	var seeds [][]byte
	for seed := range uint64(4) {
		in := make([]byte, 9)
		in[0] = 1
		binary.LittleEndian.PutUint64(in[1:], seed)
		seeds = append(seeds, in)
		// The same log with a few bytes damaged (superblock, first batch).
		damaged := append(append([]byte(nil), in...), 0x00, 0x00, 0x01, 0x40, 0x00, 0x80, 0x60, 0x00, 0x04)
		seeds = append(seeds, damaged)
	}
	for seed := range uint64(2) {
		img := buildLog(seed + 10).image()
		compact := []byte{0}
		compact = append(compact, img[:superBytes]...)
		compact = append(compact, img[superSlotBytes:superSlotBytes+superBytes]...)
		region := img[regionOff:]
		end := len(region)
		for end > 0 && region[end-1] == 0 {
			end--
		}
		compact = append(compact, region[:end]...)
		seeds = append(seeds, compact)
	}
	seeds = append(seeds, []byte{0}, []byte{1})
	return seeds
}

var writeCorpus = flag.Bool("write-corpus", false, "write FuzzOpen's seed corpus to testdata/fuzz/FuzzOpen")

// TestWriteFuzzCorpus regenerates the committed seed corpus when run with
// -write-corpus, and otherwise checks that it is there.
func TestWriteFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzOpen")
	if !*writeCorpus {
		ents, err := os.ReadDir(dir)
		if err != nil || len(ents) == 0 {
			t.Fatalf("seed corpus missing in %s (go test -run TestWriteFuzzCorpus -write-corpus): %v", dir, err)
		}
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range fuzzSeeds() {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%02d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFuzzSeedsOpen makes sure the valid seeds really open (a corpus of
// inputs that all fail early would fuzz nothing).
func TestFuzzSeedsOpen(t *testing.T) {
	opened := 0
	for _, in := range fuzzSeeds() {
		dev := fuzzImage(in)
		l, err := Open(context.Background(), dev, testOpts())
		if err != nil {
			if !errors.Is(err, ErrNotFormatted) && !errors.Is(err, ErrCorrupt) {
				t.Logf("seed %x...: %v", in[:min(len(in), 9)], err)
			}
			continue
		}
		opened++
		if l.Stats().DurableSeq == 0 {
			t.Errorf("seed %x...: empty log", in[:min(len(in), 9)])
		}
		checkSelfConsistent(t, l, dev)
		l.Close()
	}
	if opened < 6 {
		t.Fatalf("only %d seeds open", opened)
	}
}
