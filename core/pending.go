package core

import (
	"math/bits"
	"sync"

	"github.com/shalestore/shale/core/cblock"
	"github.com/shalestore/shale/core/segment"
)

// pending holds the encoded bytes of cblocks whose segio is not durable
// yet: the store cannot read them back until it is. Entries leave when
// OnFlush reports their segio.
//
// Bound: a cblock enters only after store.Append returned its address, and
// the segment writer blocks Append while MaxPendingSegios (2) segios are
// sealed and not durable; so pending holds at most the open segio, the
// sealed ones, and the one being encoded and the one being written: about
// 5 segios of cblocks (5 × SegioBytes, 35 MiB with the default geometry).
// Writers wait in Append when it is full.
type pending struct {
	mu      sync.RWMutex
	items   map[segment.Addr][]byte
	bySegio map[uint64][]segment.Addr
	durable uint64 // positions ≤ durable are durable (guarded by mu)
	bytes   int64  // guarded by mu
}

func (p *pending) init() {
	p.items = map[segment.Addr][]byte{}
	p.bySegio = map[uint64][]segment.Addr{}
}

// add keeps a copy of enc for addr, whose segio is at position at, unless
// that segio is already durable.
func (p *pending) add(addr segment.Addr, at uint64, enc []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if at <= p.durable {
		return
	}
	b := getBuf(len(enc))
	copy(b, enc)
	p.items[addr] = b
	p.bySegio[at] = append(p.bySegio[at], addr)
	p.bytes += int64(len(b))
}

// flushed drops the cblocks of every segio at or before position at.
func (p *pending) flushed(at uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.durable = max(p.durable, at)
	for s, addrs := range p.bySegio {
		if s > at {
			continue
		}
		for _, ad := range addrs {
			if b, ok := p.items[ad]; ok {
				p.bytes -= int64(len(b))
				putBuf(b)
				delete(p.items, ad)
			}
		}
		delete(p.bySegio, s)
	}
}

// decode decodes the pending cblock at addr into dst; found false if it
// is not pending (its segio is durable: read it from the store).
func (p *pending) decode(addr segment.Addr, dst []byte) (n int, found bool, err error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	b, ok := p.items[addr]
	if !ok {
		return 0, false, nil
	}
	n, err = cblock.Decode(dst, b)
	return n, true, err
}

func (p *pending) size() (items int, bytes int64) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.items), p.bytes
}

// Buffer pools by size class (powers of two from 512 bytes to 64 KiB), so
// a 4 KiB cblock does not pin a 32 KiB buffer.
const (
	minClassShift = 9
	maxClassShift = 16
)

var bufPools [maxClassShift - minClassShift + 1]sync.Pool

func class(n int) int {
	c := bits.Len(uint(n-1)) - minClassShift
	return max(c, 0)
}

// getBuf returns a buffer of length n (n ≤ 64 KiB) from the pools.
func getBuf(n int) []byte {
	c := class(n)
	if c >= len(bufPools) {
		return make([]byte, n)
	}
	if v := bufPools[c].Get(); v != nil {
		return (*(v.(*[]byte)))[:n]
	}
	return make([]byte, n, 1<<(c+minClassShift))
}

// putBuf returns a buffer from getBuf.
func putBuf(b []byte) {
	c := class(cap(b))
	if c >= len(bufPools) || cap(b) != 1<<(c+minClassShift) {
		return
	}
	bufPools[c].Put(&b)
}
