package nvlog

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
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

// TestStaleBatchesNeverContinueALaterSession builds the situation the
// fuzzer found: valid batches, an Open whose walk ends early at a damaged
// batch, new commits that reuse the lost seqs and land exactly where the
// old batches were, then a reopen. The old batches after the new ones
// carry exactly the seqs the walk expects next; only their session (older
// than the new batches') tells them apart. The reopened log must replay
// the new entries, and nothing of the old ones past the damage.
func TestStaleBatchesNeverContinueALaterSession(t *testing.T) {
	const (
		blk      = 512
		oldCount = 11
		entry    = 300 // one entry per batch, one block per batch
		newCount = 3
	)
	for _, damaged := range []uint64{1, 4} { // first batch (the log ends at seq 0), a middle one
		t.Run(fmt.Sprintf("damaged-%d", damaged), func(t *testing.T) {
			ctx := context.Background()
			dev := newMemDev(regionOff+64*blk, blk)
			l := mustFormatOpen(t, dev, testOpts())
			for i := range uint64(oldCount) {
				if seq, err := l.Commit(ctx, payload(100+i, entry)); err != nil || seq != i+1 {
					t.Fatalf("commit %d: seq %d, %v", i, seq, err)
				}
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			// Batch seq s sits in block s-1 of the region; damage the
			// body of batch `damaged`.
			pos := regionOff + int64(damaged-1)*blk
			if got := binary.LittleEndian.Uint64(dev.data[pos+bhFirstSeq:]); got != damaged {
				t.Fatalf("batch at %d has seq %d, want %d: layout assumption broken", pos, got, damaged)
			}
			dev.data[pos+batchHeaderBytes+entryHeaderBytes+20] ^= 0xff
			copy(dev.durable, dev.data)

			l, err := Open(ctx, dev, testOpts())
			if err != nil {
				t.Fatal(err)
			}
			if got := replayAll(t, l); len(got) != int(damaged-1) {
				t.Fatalf("open after damage replayed %d entries, want %d", len(got), damaged-1)
			}
			var want []uint64
			for i := range uint64(damaged - 1) {
				want = append(want, 100+i)
			}
			for i := range uint64(newCount) {
				seq, err := l.Commit(ctx, payload(200+i, entry))
				if err != nil || seq != damaged+i {
					t.Fatalf("new commit %d: seq %d, %v", i, seq, err)
				}
				want = append(want, 200+i)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			// The old batch right after the new ones is still there, with
			// the seq the walk will expect.
			next := damaged + newCount
			pos = regionOff + int64(next-1)*blk
			if got := binary.LittleEndian.Uint64(dev.data[pos+bhFirstSeq:]); got != next {
				t.Fatalf("old batch at %d has seq %d, want %d: the test no longer builds the hazard", pos, got, next)
			}

			l, err = Open(ctx, dev, testOpts())
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			var ids []uint64
			for _, r := range replayAll(t, l) {
				id, err := checkPayload(r.entry)
				if err != nil {
					t.Fatalf("seq %d: %v", r.seq, err)
				}
				ids = append(ids, id)
			}
			if fmt.Sprint(ids) != fmt.Sprint(want) {
				t.Fatalf("reopen replayed entries %v, want %v (stale batches of an earlier session came back)", ids, want)
			}
		})
	}
}

// TestRecoverySessionRules checks the walk's session rules on crafted
// images: along the chain sessions never decrease, never exceed the
// superblock's, and the first batch's is at least startSession.
func TestRecoverySessionRules(t *testing.T) {
	const blk = 512
	tests := []struct {
		name                  string
		session, startSession uint64
		otherBad              bool     // the other superblock copy is damaged
		batches               []uint64 // session of the batch with seq i+1, in block i
		want                  int      // batches recovered
	}{
		{"one session", 1, 1, false, []uint64{1, 1, 1}, 3},
		{"rising", 3, 1, false, []uint64{1, 2, 2, 3}, 4},
		{"stale after a later session", 2, 1, false, []uint64{1, 2, 1, 1}, 2},
		{"future session", 2, 1, false, []uint64{1, 3, 3}, 1},
		{"first below startSession", 4, 3, false, []uint64{2, 3, 4}, 0},
		{"first at startSession", 4, 3, false, []uint64{3, 3, 4}, 3},
		{"version-1 image", 0, 0, false, []uint64{0, 0, 0}, 3},
		// The damaged copy may have started session 3 and been synced:
		// its batches count, one session further do not.
		{"other copy damaged", 2, 1, true, []uint64{1, 3, 3, 4}, 3},
		{"stale after other copy damaged", 2, 1, true, []uint64{1, 3, 2}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dev := newMemDev(regionOff+32*blk, blk)
			sb := superblock{
				gen: 1, uuid: testUUID, logID: [16]byte{7}, blockBytes: blk,
				regionOff: regionOff, regionLen: 32 * blk,
				startPos: regionOff, startSeq: 1,
				session: tc.session, startSession: tc.startSession,
			}
			encodeSuper(dev.data[:superSlotBytes], &sb)
			older := sb
			older.gen, older.startSession, older.session = 0, 0, 0
			if !tc.otherBad {
				older.gen = 1
				sb.gen = 2
				encodeSuper(dev.data[:superSlotBytes], &sb)
			}
			encodeSuper(dev.data[superSlotBytes:2*superSlotBytes], &older) // generation 0 does not decode
			for i, s := range tc.batches {
				b := dev.data[regionOff+i*blk : regionOff+(i+1)*blk]
				e := payload(uint64(i), 100)
				putEntry(b[batchHeaderBytes:], uint64(i+1), len(e))
				copy(b[batchHeaderBytes+entryHeaderBytes:], e)
				sealBatch(b, batchHeaderBytes+entryHeaderBytes+len(e), &sb.logID, s, uint64(i+1), 1, blk)
			}
			copy(dev.durable, dev.data)
			l, err := Open(context.Background(), dev, testOpts())
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if got := l.DurableSeq(); got != uint64(tc.want) {
				t.Fatalf("recovered up to seq %d, want %d", got, tc.want)
			}
			// The new session is above every session a batch on the
			// device may carry, and the superblock now records the
			// recovered chain as durable.
			want := tc.session + 1
			if tc.otherBad {
				want++
			}
			if l.session != want {
				t.Fatalf("session %d, want %d", l.session, want)
			}
			got, err := decodeSuper(dev.data[superSlotBytes : superSlotBytes+superBytes])
			if err != nil || got.session != want || got.lastSeq != uint64(tc.want) {
				t.Fatalf("superblock after open: %+v, %v", got, err)
			}
		})
	}
}
