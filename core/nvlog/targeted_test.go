package nvlog

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shalestore/shale/backend"
)

// TestTrimFreesSpaceOnlyWhenDurable: while a trim's superblock is written
// but not synced, the writer of a full log must keep waiting. Otherwise a
// power cut could drop the superblock and keep a batch written over entries
// the old trim point still needs.
func TestTrimFreesSpaceOnlyWhenDurable(t *testing.T) {
	ctx := context.Background()
	dev := newMemDev(regionOff+32<<10, 512)
	var l *Log
	var full atomic.Uint64
	checked := make(chan bool, 1)
	o := testOpts()
	o.CrashHook = func(p string) {
		if p != CrashSuperblockWritten {
			return
		}
		time.Sleep(20 * time.Millisecond) // give a wrongly woken writer time to write
		s := l.Stats()
		checked <- s.WaitingForTrim && s.Batches == full.Load()
	}
	if err := Format(ctx, dev, testOpts()); err != nil {
		t.Fatal(err)
	}
	var err error
	l, err = Open(ctx, dev, o)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var last uint64
	for !l.Stats().WaitingForTrim {
		done := make(chan struct{})
		l.CommitAsync(payload(last, 3000), func(seq uint64, err error) {
			if err == nil {
				last = seq
			}
			close(done)
		})
		select {
		case <-done:
		case <-time.After(50 * time.Millisecond):
		}
	}
	full.Store(l.Stats().Batches)
	if err := l.Trim(ctx, l.DurableSeq()); err != nil {
		t.Fatal(err)
	}
	if !<-checked {
		t.Fatal("the writer reused trimmed space before the trim point was durable")
	}
}

// TestTornBatchNeverResurrected: a torn batch left at the end of the log
// must not come back after later writes of the same seqs fill in its
// missing blocks. Without Open clearing the header past the recovered end,
// batch X below would be replayed in place of the committed batch Y.
func TestTornBatchNeverResurrected(t *testing.T) {
	ctx := context.Background()
	dev := newMemDev(regionOff+64<<10, 512)
	if err := Format(ctx, dev, testOpts()); err != nil {
		t.Fatal(err)
	}
	// X and Y get the same seq, differ in length (so in header), and agree
	// in every byte after the first block.
	x := payload(1, 2000)
	y := append(bytes.Clone(x), 0xee)
	cutAt := func(keep func(write, block int) bool) Options {
		o := testOpts()
		o.CrashHook = func(p string) {
			if p == CrashBatchWritten {
				dev = dev.powerLossWith(keep)
			}
		}
		return o
	}
	// Boot 1: X torn: header block kept, the rest lost.
	l, err := Open(ctx, dev, cutAt(func(_, block int) bool { return block == 0 }))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Commit(ctx, x); err == nil {
		t.Fatal("commit survived the power cut")
	}
	l.Close()
	// Boot 2: Y written with the same seq; its header block lost, the rest
	// kept: the blocks X was missing are now there, with X's bytes.
	l, err = Open(ctx, dev, cutAt(func(_, block int) bool { return block != 0 }))
	if err != nil {
		t.Fatal(err)
	}
	if got := replayAll(t, l); len(got) != 0 {
		t.Fatalf("boot 2 replayed %d entries of a torn batch", len(got))
	}
	if _, err := l.Commit(ctx, y); err == nil {
		t.Fatal("commit survived the power cut")
	}
	l.Close()
	// Boot 3: neither X (never acknowledged, superseded by seq reuse) nor
	// a mix may appear.
	l, err = Open(ctx, dev, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := replayAll(t, l); len(got) != 0 {
		t.Fatalf("boot 3 replayed seq %d (%d bytes): a torn batch came back", got[0].seq, len(got[0].entry))
	}
}

// TestTornSuperblockFallsBack cuts power right after a trim's superblock
// write on a device whose torn writes may leave garbage or unreadable
// sectors: Open must fall back to the other copy, whatever the torn one
// holds. Across the seeds the unreadable case must come up.
func TestTornSuperblockFallsBack(t *testing.T) {
	ctx := context.Background()
	unreadable := 0
	for seed := range uint64(60) {
		dev := newCrashDev(t, regionOff+64<<10, seed*4+2) // CorruptTorn, 512-byte sectors
		if err := Format(ctx, dev, testOpts()); err != nil {
			t.Fatal(err)
		}
		var after crashable
		o := testOpts()
		trims := 0
		o.CrashHook = func(p string) {
			if p == CrashSuperblockWritten {
				if trims++; trims == 2 && after == nil {
					after = dev.cut(t)
				}
			}
		}
		l, err := Open(ctx, dev, o)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 12 {
			if _, err := l.Commit(ctx, payload(uint64(i), 700)); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.Trim(ctx, 3); err != nil {
			t.Fatal(err)
		}
		if err := l.Trim(ctx, 8); err == nil {
			t.Fatal("trim survived the power cut")
		}
		l.Close()
		buf := backend.AlignedBuffer(superSlotBytes)
		for slot := range int64(2) {
			if err := after.ReadAt(ctx, buf, slot*superSlotBytes); errors.Is(err, backend.ErrCorrupt) {
				unreadable++
			}
		}
		l, err = Open(ctx, after, testOpts())
		if err != nil {
			t.Fatalf("seed %d: open after a torn superblock: %v", seed, err)
		}
		got := replayAll(t, l)
		trim := l.TrimSeq()
		if (trim != 3 && trim != 8) || len(got) != 12-int(trim) || got[0].seq != trim+1 {
			t.Fatalf("seed %d: trim %d, %d entries replayed", seed, trim, len(got))
		}
		l.Close()
	}
	if unreadable == 0 {
		t.Fatal("no seed left an unreadable superblock slot: the test covers nothing")
	}
	t.Logf("%d of 60 power cuts left a superblock slot unreadable", unreadable)
}
