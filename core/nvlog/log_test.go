package nvlog

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var testUUID = [16]byte{0x5a, 0x1e, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}

// quiet discards log output; run with -v and set Logger to see it.
var quiet = slog.New(slog.DiscardHandler)

func testOpts() Options {
	return Options{UUID: testUUID, Logger: quiet}
}

// payload builds a recognisable entry: its seq-independent id and length,
// then bytes derived from the id, so a replayed entry can be checked
// without a copy.
func payload(id uint64, n int) []byte {
	if n < 8 {
		n = 8
	}
	b := make([]byte, n)
	binary.LittleEndian.PutUint64(b, id)
	for i := 8; i < n; i++ {
		b[i] = byte(id*31 + uint64(i)*7)
	}
	return b
}

func checkPayload(b []byte) (uint64, error) {
	if len(b) < 8 {
		return 0, fmt.Errorf("entry of %d bytes", len(b))
	}
	id := binary.LittleEndian.Uint64(b)
	if !bytes.Equal(b, payload(id, len(b))) {
		return id, fmt.Errorf("entry %d: bytes differ", id)
	}
	return id, nil
}

func mustFormatOpen(t testing.TB, dev interface {
	Size() int64
}, opts Options) *Log {
	t.Helper()
	d := dev.(*memDev)
	ctx := context.Background()
	if err := Format(ctx, d, opts); err != nil {
		t.Fatal(err)
	}
	l, err := Open(ctx, d, opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

type replayed struct {
	seq   uint64
	entry []byte
}

func replayAll(t testing.TB, l *Log) []replayed {
	t.Helper()
	var out []replayed
	err := l.Replay(context.Background(), func(seq uint64, e []byte) error {
		if n := len(out); n > 0 && out[n-1].seq+1 != seq {
			return fmt.Errorf("seq %d after %d", seq, out[n-1].seq)
		}
		out = append(out, replayed{seq, append([]byte(nil), e...)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCommitReplayReopen(t *testing.T) {
	ctx := context.Background()
	for _, align := range []int{512, 4096} {
		t.Run(fmt.Sprint(align), func(t *testing.T) {
			dev := newMemDev(256<<10, align)
			l := mustFormatOpen(t, dev, testOpts())
			var seqs []uint64
			for i := range 20 {
				seq, err := l.Commit(ctx, payload(uint64(i), 100+i*37))
				if err != nil {
					t.Fatal(err)
				}
				if len(seqs) > 0 && seq <= seqs[len(seqs)-1] {
					t.Fatalf("seq %d after %d", seq, seqs[len(seqs)-1])
				}
				seqs = append(seqs, seq)
			}
			if seqs[0] != 1 {
				t.Fatalf("first seq %d, want 1", seqs[0])
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l, err := Open(ctx, dev, testOpts())
			if err != nil {
				t.Fatal(err)
			}
			got := replayAll(t, l)
			if len(got) != 20 {
				t.Fatalf("replayed %d entries, want 20", len(got))
			}
			for i, r := range got {
				if r.seq != seqs[i] || !bytes.Equal(r.entry, payload(uint64(i), 100+i*37)) {
					t.Fatalf("entry %d: seq %d, %d bytes", i, r.seq, len(r.entry))
				}
			}
			if err := l.Trim(ctx, seqs[9]); err != nil {
				t.Fatal(err)
			}
			seq, err := l.Commit(ctx, payload(99, 10))
			if err != nil || seq != seqs[19]+1 {
				t.Fatalf("commit after reopen: seq %d err %v", seq, err)
			}
			l.Close()
			l, err = Open(ctx, dev, testOpts())
			if err != nil {
				t.Fatal(err)
			}
			got = replayAll(t, l)
			if len(got) != 11 || got[0].seq != seqs[10] || got[10].seq != seq {
				t.Fatalf("after trim: %d entries from %d", len(got), got[0].seq)
			}
			// Trim everything: an empty log still remembers its seqs.
			if err := l.Trim(ctx, seq); err != nil {
				t.Fatal(err)
			}
			l.Close()
			l, err = Open(ctx, dev, testOpts())
			if err != nil {
				t.Fatal(err)
			}
			if got := replayAll(t, l); len(got) != 0 {
				t.Fatalf("replayed %d after trimming all", len(got))
			}
			s2, err := l.Commit(ctx, payload(100, 10))
			if err != nil || s2 != seq+1 {
				t.Fatalf("commit on empty reopened log: seq %d err %v, want %d", s2, err, seq+1)
			}
			l.Close()
		})
	}
}

func TestFormatRefusesAndIdentity(t *testing.T) {
	ctx := context.Background()
	dev := newMemDev(64<<10, 512)
	if _, err := Open(ctx, dev, testOpts()); !errors.Is(err, ErrNotFormatted) {
		t.Fatalf("open blank: %v", err)
	}
	if err := Format(ctx, dev, Options{}); !errors.Is(err, ErrOptions) {
		t.Fatalf("format without UUID: %v", err)
	}
	if err := Format(ctx, dev, testOpts()); err != nil {
		t.Fatal(err)
	}
	if err := Format(ctx, dev, testOpts()); !errors.Is(err, ErrFormatted) {
		t.Fatalf("second format: %v", err)
	}
	other := testOpts()
	other.UUID[0] ^= 1
	if _, err := Open(ctx, dev, other); !errors.Is(err, ErrIdentity) {
		t.Fatalf("open with other UUID: %v", err)
	}
	l, err := Open(ctx, dev, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Commit(ctx, payload(1, 100)); err != nil {
		t.Fatal(err)
	}
	l.Close()
	// A forced format starts a new log: the old batch is gone.
	f := testOpts()
	f.Force = true
	f.FirstSeq = 1000
	if err := Format(ctx, dev, f); err != nil {
		t.Fatal(err)
	}
	l, err = Open(ctx, dev, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	if got := replayAll(t, l); len(got) != 0 {
		t.Fatalf("replayed %d entries of the old log", len(got))
	}
	if seq, err := l.Commit(ctx, payload(2, 10)); err != nil || seq != 1000 {
		t.Fatalf("seq %d err %v, want 1000", seq, err)
	}
	l.Close()
}

func TestEntryTooLarge(t *testing.T) {
	ctx := context.Background()
	dev := newMemDev(8192+64<<10, 512)
	o := testOpts()
	o.MaxEntryBytes = 100 << 10
	l := mustFormatOpen(t, dev, o)
	defer l.Close()
	// Larger than the region: refused at once.
	if _, err := l.Commit(ctx, make([]byte, 64<<10)); !errors.Is(err, ErrEntryTooLarge) {
		t.Fatalf("entry larger than region: %v", err)
	}
	if _, err := l.Commit(ctx, make([]byte, 200<<10)); !errors.Is(err, ErrEntryTooLarge) {
		t.Fatalf("entry larger than MaxEntryBytes: %v", err)
	}
	// The largest entry that fits goes, even after the head moved: the
	// empty log rewinds to the region start.
	if _, err := l.Commit(ctx, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	if err := l.Trim(ctx, l.DurableSeq()); err != nil {
		t.Fatal(err)
	}
	big := payload(7, 64<<10-batchHeaderBytes-entryHeaderBytes)
	seq, err := l.Commit(ctx, big)
	if err != nil {
		t.Fatal(err)
	}
	if s := l.Stats(); s.BytesInUse != s.RegionBytes {
		t.Fatalf("in use %d of %d", s.BytesInUse, s.RegionBytes)
	}
	l.Close()
	l, err = Open(ctx, dev, o)
	if err != nil {
		t.Fatal(err)
	}
	got := replayAll(t, l)
	if len(got) != 1 || got[0].seq != seq || !bytes.Equal(got[0].entry, big) {
		t.Fatalf("replay of the full-region entry: %d entries", len(got))
	}
}

func TestConcurrentGroupCommit(t *testing.T) {
	ctx := context.Background()
	dev := newMemDev(4<<20, 512)
	l := mustFormatOpen(t, dev, testOpts())
	const workers, each = 16, 200
	var mu sync.Mutex
	acked := map[uint64]uint64{} // seq -> id
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := uint64(w*each + i)
				seq, err := l.Commit(ctx, payload(id, 64+int(id%300)))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked[seq] = id
				mu.Unlock()
				if i%50 == 49 {
					if err := l.Trim(ctx, seq/2); err != nil && !errors.Is(err, ErrTrimRange) {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	s := l.Stats()
	if s.Commits != workers*each {
		t.Fatalf("commits %d", s.Commits)
	}
	t.Logf("batches %d, mean %.1f entries, p50 %v p99 %v", s.Batches, s.MeanBatchEntries, s.LatencyP50, s.LatencyP99)
	trim := s.TrimSeq
	l.Close()
	l, err := Open(ctx, dev, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := replayAll(t, l)
	if want := uint64(len(acked)) - trim; uint64(len(got)) != want {
		t.Fatalf("replayed %d, want %d", len(got), want)
	}
	for _, r := range got {
		id, err := checkPayload(r.entry)
		if err != nil || acked[r.seq] != id {
			t.Fatalf("seq %d: id %d want %d (%v)", r.seq, id, acked[r.seq], err)
		}
	}
}

func TestFailedSyncStopsLog(t *testing.T) {
	ctx := context.Background()
	dev := newMemDev(256<<10, 512)
	l := mustFormatOpen(t, dev, testOpts())
	if _, err := l.Commit(ctx, payload(1, 100)); err != nil {
		t.Fatal(err)
	}
	dev.setFailSync()
	if _, err := l.Commit(ctx, payload(2, 100)); !errors.Is(err, ErrFailed) {
		t.Fatalf("commit with failing sync: %v", err)
	}
	if _, err := l.Commit(ctx, payload(3, 100)); !errors.Is(err, ErrFailed) {
		t.Fatalf("commit after failed sync: %v", err)
	}
	if err := l.Trim(ctx, 1); !errors.Is(err, ErrFailed) {
		t.Fatalf("trim after failed sync: %v", err)
	}
	done := make(chan error, 1)
	l.CommitAsync(payload(4, 10), func(_ uint64, err error) { done <- err })
	if err := <-done; !errors.Is(err, ErrFailed) {
		t.Fatalf("commit async after failed sync: %v", err)
	}
	if err := l.Close(); !errors.Is(err, ErrFailed) {
		t.Fatalf("close: %v", err)
	}
	if _, err := l.Commit(ctx, payload(5, 100)); !errors.Is(err, ErrFailed) && !errors.Is(err, ErrClosed) {
		t.Fatalf("commit after close: %v", err)
	}
}

func TestFullLogWaitsForTrim(t *testing.T) {
	ctx := context.Background()
	dev := newMemDev(8192+32<<10, 512)
	l := mustFormatOpen(t, dev, testOpts())
	defer l.Close()
	var last uint64
	for {
		c, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		seq, err := l.Commit(c, payload(last, 3000))
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		last = seq
	}
	s := l.Stats()
	if !s.WaitingForTrim || s.FullWaits == 0 {
		t.Fatalf("not waiting for trim: %+v", s)
	}
	// The entry whose Commit timed out is still queued; trimming frees it.
	done := make(chan uint64, 1)
	l.CommitAsync(payload(1000, 100), func(seq uint64, err error) {
		if err != nil {
			t.Error(err)
		}
		done <- seq
	})
	select {
	case <-done:
		t.Fatal("commit acknowledged on a full log")
	case <-time.After(50 * time.Millisecond):
	}
	if err := l.Trim(ctx, last); err != nil {
		t.Fatal(err)
	}
	if seq := <-done; seq <= last+1 {
		t.Fatalf("seq %d after trim, want > %d", seq, last+1)
	}
}

// TestMaxDelayGroups: with MaxDelay, entries issued one after another
// within the delay share a batch, and a lone entry waits about the delay.
func TestMaxDelayGroups(t *testing.T) {
	ctx := context.Background()
	dev := newMemDev(1<<20, 512)
	o := testOpts()
	o.MaxDelay = 30 * time.Millisecond
	l := mustFormatOpen(t, dev, o)
	defer l.Close()
	t0 := time.Now()
	if _, err := l.Commit(ctx, payload(1, 100)); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < o.MaxDelay {
		t.Fatalf("lone commit took %v, less than MaxDelay %v", d, o.MaxDelay)
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		l.CommitAsync(payload(uint64(i), 100), func(_ uint64, err error) {
			if err != nil {
				t.Error(err)
			}
			wg.Done()
		})
	}
	wg.Wait()
	if s := l.Stats(); s.Batches > 3 || s.Commits != 21 {
		t.Fatalf("%d commits in %d batches; want the 20 grouped", s.Commits, s.Batches)
	}
	// A batch that fills up does not wait.
	o.MaxDelay = time.Hour
	o.MaxBatchBytes = MinMaxBatchBytes
	l2 := mustFormatOpen(t, newMemDev(1<<20, 512), o)
	defer l2.Close()
	for i := range 10 {
		wg.Add(1)
		l2.CommitAsync(payload(uint64(i), 1000), func(_ uint64, err error) {
			if err != nil {
				t.Error(err)
			}
			wg.Done()
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		t.Fatal("the last, unfilled batch did not wait for MaxDelay")
	case <-time.After(100 * time.Millisecond):
	}
	if s := l2.Stats(); s.Commits < 8 {
		t.Fatalf("full batches waited: %d commits", s.Commits)
	}
	l2.Close() // Close writes the waiting batch
	<-done
}

// TestCommitAsyncCopiesAndCloseFlushes: the caller may reuse its buffer as
// soon as CommitAsync returns; Close writes every entry that joined a
// batch and delivers every acknowledgement before it returns.
func TestCommitAsyncCopiesAndCloseFlushes(t *testing.T) {
	ctx := context.Background()
	dev := newMemDev(1<<20, 512)
	l := mustFormatOpen(t, dev, testOpts())
	buf := make([]byte, 300)
	var acked atomic.Int64
	for i := range 200 {
		copy(buf, payload(uint64(i), 300))
		l.CommitAsync(buf, func(_ uint64, err error) {
			if err != nil {
				t.Error(err)
			}
			acked.Add(1)
		})
		clear(buf) // reuse at once
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if n := acked.Load(); n != 200 {
		t.Fatalf("%d of 200 acknowledged when Close returned", n)
	}
	if _, err := l.Commit(ctx, buf); !errors.Is(err, ErrClosed) {
		t.Fatalf("commit after close: %v", err)
	}
	l, err := Open(ctx, dev, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := replayAll(t, l)
	if len(got) != 200 {
		t.Fatalf("replayed %d", len(got))
	}
	for i, r := range got {
		if !bytes.Equal(r.entry, payload(uint64(i), 300)) {
			t.Fatalf("entry %d changed after CommitAsync returned", i)
		}
	}
}

// TestCommitCancelWhileQueued: a committer waiting for room gives up with
// its context and takes no seq.
func TestCommitCancelWhileQueued(t *testing.T) {
	ctx := context.Background()
	o := testOpts()
	o.MaxBatchBytes = MinMaxBatchBytes
	l := mustFormatOpen(t, newMemDev(regionOff+32<<10, 512), o)
	defer l.Close()
	// Fill the log (one 3000-byte entry per batch), so that the writer
	// waits for a trim holding the last batch.
	for {
		done := make(chan struct{})
		l.CommitAsync(payload(1, 3000), func(uint64, error) { close(done) })
		select {
		case <-done:
			continue
		case <-time.After(20 * time.Millisecond):
		}
		if l.Stats().WaitingForTrim {
			break
		}
		<-done
	}
	// Fill the open batch and queue one more committer behind it.
	filled := make(chan struct{})
	go func() {
		l.CommitAsync(payload(2, 3000), func(uint64, error) {})
		l.CommitAsync(payload(3, 3000), func(uint64, error) {})
		close(filled)
	}()
	for l.Stats().JoinWaits == 0 {
		time.Sleep(time.Millisecond)
	}
	c, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	seq, err := l.Commit(c, payload(4, 3000))
	if !errors.Is(err, context.DeadlineExceeded) || seq != 0 {
		t.Fatalf("queued commit: seq %d err %v, want seq 0 and the deadline", seq, err)
	}
	if l.Stats().JoinWaits != 2 {
		t.Fatalf("%d committers queued, want 2", l.Stats().JoinWaits)
	}
	next := l.Stats().NextSeq
	if err := l.Trim(ctx, l.DurableSeq()); err != nil {
		t.Fatal(err)
	}
	<-filled
	// The cancelled committer took no seq: entry 3 got the next one.
	if got := l.Stats().NextSeq; got != next+1 {
		t.Fatalf("next seq %d after the queued entry, want %d", got, next+1)
	}
}

// TestCloseWaitsForTrim: a Trim under way finishes its superblock write
// before Close returns (the caller may close the device right after).
func TestCloseWaitsForTrim(t *testing.T) {
	ctx := context.Background()
	dev := newMemDev(256<<10, 512)
	inTrim, release := make(chan struct{}), make(chan struct{})
	o := testOpts()
	o.CrashHook = func(p string) {
		if p == CrashSuperblockWritten {
			close(inTrim)
			<-release
		}
	}
	if err := Format(ctx, dev, testOpts()); err != nil {
		t.Fatal(err)
	}
	l, err := Open(ctx, dev, o)
	if err != nil {
		t.Fatal(err)
	}
	seq, err := l.Commit(ctx, payload(1, 100))
	if err != nil {
		t.Fatal(err)
	}
	trimmed := make(chan error, 1)
	go func() { trimmed <- l.Trim(ctx, seq) }()
	<-inTrim
	closed := make(chan struct{})
	go func() { l.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while a Trim was writing the superblock")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	<-closed
	if err := <-trimmed; err != nil {
		t.Fatalf("trim: %v", err)
	}
	if err := l.Trim(ctx, seq); !errors.Is(err, ErrClosed) {
		t.Fatalf("trim after close: %v", err)
	}
}
