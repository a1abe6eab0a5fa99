package pyramidtest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"

	"github.com/shalestore/shale/backend"
)

// Log is a pyramid.Committer on a Device: records packed back to back,
// each
//
//	2 bytes magic "NL", 4 bytes payload length, 8 bytes sequence number,
//	4 bytes crc32c of the sequence number and payload, then the payload,
//
// written by one writer goroutine with group commit: it takes every queued
// record, writes them in one aligned write (rewriting the partial block at
// the end), syncs, and then calls their done callbacks in order. Open
// scans to the first record that does not check out. Records start at
// offset 4096; the block at 0 holds the trim point ("NLTR", the sequence
// number trimmed through, crc32c). Trim is logical: Replay skips trimmed
// records, their space is not reused, so size the device for everything a
// test commits. Close stops the writer (after writing what is queued).
type Log struct {
	dev backend.Device

	mu      sync.Mutex
	cond    *sync.Cond
	nextSeq uint64
	pending []byte
	dones   []pendingDone
	end     int64  // bytes of records on the device
	tail    []byte // the partial last block's record bytes
	err     error  // sticky write error
	closed  bool
	trimmed uint64
	stopped chan struct{}
}

type pendingDone struct {
	seq  uint64
	done func(uint64, error)
}

// ErrLogClosed is what CommitAsync reports after Close.
var ErrLogClosed = errors.New("log closed")

const (
	logHeader = 18
	logStart  = 4096
)

// OpenLog opens (or starts) a log on dev.
func OpenLog(ctx context.Context, dev backend.Device) (*Log, error) {
	l := &Log{dev: dev, nextSeq: 1, stopped: make(chan struct{})}
	l.cond = sync.NewCond(&l.mu)
	hdr := backend.AlignedBuffer(logStart)
	if err := dev.ReadAt(ctx, hdr, 0); err != nil {
		return nil, err
	}
	if string(hdr[:4]) == "NLTR" && crc32.Checksum(hdr[:12], castagnoli) == binary.LittleEndian.Uint32(hdr[12:]) {
		l.trimmed = binary.LittleEndian.Uint64(hdr[4:])
	}
	last := l.trimmed
	end, err := l.scan(ctx, func(seq uint64, _ []byte) error {
		last = max(last, seq)
		return nil
	})
	if err != nil {
		return nil, err
	}
	l.end = end
	l.nextSeq = last + 1
	a := int64(dev.Alignment())
	if r := end % a; r != 0 {
		l.tail = make([]byte, r)
		buf := backend.AlignedBuffer(int(a))
		if err := dev.ReadAt(ctx, buf, end-r); err != nil {
			return nil, err
		}
		copy(l.tail, buf)
	}
	go l.writer()
	return l, nil
}

// maxEntry bounds a record's payload.
const maxEntry = 64 << 20

// scan reads records from the start and returns where valid records end.
func (l *Log) scan(ctx context.Context, fn func(seq uint64, payload []byte) error) (int64, error) {
	const step = 1 << 20
	buf := backend.AlignedBuffer(step)
	var window []byte // unparsed bytes starting at pos
	pos, readTo := int64(logStart), int64(logStart)
	fill := func(need int) (bool, error) {
		for len(window) < need {
			if readTo >= l.dev.Size() {
				return false, nil
			}
			n := min(step, l.dev.Size()-readTo)
			if err := l.dev.ReadAt(ctx, buf[:n], readTo); err != nil {
				return false, err
			}
			window = append(window, buf[:n]...)
			readTo += n
		}
		return true, nil
	}
	last := uint64(0)
	for {
		if ok, err := fill(logHeader); !ok || err != nil {
			return pos, err
		}
		n := int(binary.LittleEndian.Uint32(window[2:]))
		if window[0] != 'N' || window[1] != 'L' || n > maxEntry {
			return pos, nil
		}
		if ok, err := fill(logHeader + n); !ok || err != nil {
			return pos, err
		}
		seq := binary.LittleEndian.Uint64(window[6:])
		payload := window[logHeader : logHeader+n]
		if crc32.Update(crc32.Checksum(window[6:14], castagnoli), castagnoli, payload) != binary.LittleEndian.Uint32(window[14:]) ||
			seq <= last {
			return pos, nil
		}
		last = seq
		if err := fn(seq, payload); err != nil {
			return 0, err
		}
		window = window[logHeader+n:]
		pos += int64(logHeader + n)
	}
}

// CommitAsync implements pyramid.Committer.
func (l *Log) CommitAsync(entry []byte, done func(seq uint64, err error)) {
	l.mu.Lock()
	if l.err != nil || l.closed {
		err := l.err
		if err == nil {
			err = ErrLogClosed
		}
		l.mu.Unlock()
		done(0, err)
		return
	}
	seq := l.nextSeq
	l.nextSeq++
	var h [logHeader]byte
	h[0], h[1] = 'N', 'L'
	binary.LittleEndian.PutUint32(h[2:], uint32(len(entry)))
	binary.LittleEndian.PutUint64(h[6:], seq)
	binary.LittleEndian.PutUint32(h[14:], crc32.Update(crc32.Checksum(h[6:14], castagnoli), castagnoli, entry))
	l.pending = append(append(l.pending, h[:]...), entry...)
	l.dones = append(l.dones, pendingDone{seq: seq, done: done})
	l.cond.Signal()
	l.mu.Unlock()
}

// writer writes queued records, then answers their callbacks in order.
func (l *Log) writer() {
	defer close(l.stopped)
	for {
		l.mu.Lock()
		for len(l.dones) == 0 && !l.closed {
			l.cond.Wait()
		}
		if len(l.dones) == 0 {
			l.mu.Unlock()
			return
		}
		recs, dones := l.pending, l.dones
		l.pending, l.dones = nil, nil
		start, tail, err := l.end, l.tail, l.err
		l.mu.Unlock()
		if err == nil {
			err = l.write(context.Background(), start, tail, recs)
		}
		l.mu.Lock()
		if err != nil {
			if l.err == nil {
				l.err = fmt.Errorf("log: %w", err)
			}
			err = l.err
		} else {
			l.end = start + int64(len(recs))
			a := int64(l.dev.Alignment())
			whole := append(append([]byte(nil), tail...), recs...)
			l.tail = whole[int64(len(whole))-l.end%a:]
		}
		l.mu.Unlock()
		for _, d := range dones {
			d.done(d.seq, err)
		}
	}
}

// Close writes what is queued and stops the writer. Later commits fail.
func (l *Log) Close() error {
	l.mu.Lock()
	l.closed = true
	l.cond.Broadcast()
	l.mu.Unlock()
	<-l.stopped
	return nil
}

func (l *Log) write(ctx context.Context, start int64, tail, recs []byte) error {
	a := int64(l.dev.Alignment())
	from := start - int64(len(tail))
	n := alignUp(int64(len(tail)+len(recs)), a)
	if from+n > l.dev.Size() {
		return errors.New("log full")
	}
	buf := backend.AlignedBuffer(int(n))
	copy(buf, tail)
	copy(buf[len(tail):], recs)
	if err := l.dev.WriteAt(ctx, buf, from); err != nil {
		return err
	}
	return l.dev.Sync(ctx)
}

// Replay implements pyramid.Committer.
func (l *Log) Replay(ctx context.Context, fn func(seq uint64, entry []byte) error) error {
	l.mu.Lock()
	trimmed := l.trimmed
	l.mu.Unlock()
	_, err := l.scan(ctx, func(seq uint64, entry []byte) error {
		if seq <= trimmed {
			return nil
		}
		return fn(seq, entry)
	})
	return err
}

// Trim durably records that entries through upTo are no longer needed.
func (l *Log) Trim(ctx context.Context, upTo uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if upTo <= l.trimmed {
		return nil
	}
	if upTo >= l.nextSeq {
		return fmt.Errorf("log: trim through %d, past the last entry %d", upTo, l.nextSeq-1)
	}
	hdr := backend.AlignedBuffer(logStart)
	copy(hdr, "NLTR")
	binary.LittleEndian.PutUint64(hdr[4:], upTo)
	binary.LittleEndian.PutUint32(hdr[12:], crc32.Checksum(hdr[:12], castagnoli))
	if err := l.dev.WriteAt(ctx, hdr, 0); err != nil {
		return err
	}
	if err := l.dev.Sync(ctx); err != nil {
		return err
	}
	l.trimmed = upTo
	return nil
}

// MemLog is a pyramid.Committer in memory, with no durability at all: for
// benchmarks that measure the pyramid rather than the log. It answers each
// commit at once, in order (under its lock). Replay returns what was
// committed when Keep is set.
type MemLog struct {
	mu      sync.Mutex
	next    uint64
	entries [][]byte
	seqs    []uint64
	Keep    bool // keep entries for Replay (costs memory)
}

// CommitAsync implements pyramid.Committer.
func (l *MemLog) CommitAsync(entry []byte, done func(seq uint64, err error)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.next++
	if l.Keep {
		l.entries = append(l.entries, append([]byte(nil), entry...))
		l.seqs = append(l.seqs, l.next)
	}
	done(l.next, nil)
}

// Replay implements pyramid.Committer.
func (l *MemLog) Replay(ctx context.Context, fn func(seq uint64, entry []byte) error) error {
	l.mu.Lock()
	es, ss := l.entries, l.seqs
	l.mu.Unlock()
	for i, e := range es {
		if err := fn(ss[i], e); err != nil {
			return err
		}
	}
	return nil
}
