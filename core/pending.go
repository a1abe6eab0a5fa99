package core

import (
	"math/bits"
	"sync"
	"sync/atomic"

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
	durable atomic.Uint64 // segio positions ≤ durable are durable
	shards  [pendingShards]pendingShard
}

// pendingShards spreads the writers' inserts over several locks.
const pendingShards = 16

type pendingShard struct {
	mu      sync.RWMutex
	items   map[segment.Addr][]byte
	bySegio map[uint64][]segment.Addr
	bytes   int64
}

func (p *pending) init() {
	for i := range p.shards {
		p.shards[i].items = map[segment.Addr][]byte{}
		p.shards[i].bySegio = map[uint64][]segment.Addr{}
	}
}

func (p *pending) shard(a segment.Addr) *pendingShard {
	h := (uint64(a.Segment)*0x9e3779b97f4a7c15 ^ uint64(a.Offset)) * 0xbf58476d1ce4e5b9
	return &p.shards[h>>60]
}

// add keeps a copy of enc for addr, whose segio is at position at, unless
// that segio is already durable.
//
// INVARIANT: flushed stores the durable position before it takes any
// shard lock, and add reads it under the shard lock, so an item is either
// skipped here or removed by flushed, never left behind.
func (p *pending) add(addr segment.Addr, at uint64, enc []byte) {
	s := p.shard(addr)
	s.mu.Lock()
	defer s.mu.Unlock()
	if at <= p.durable.Load() {
		return
	}
	b := getBuf(len(enc))
	copy(b, enc)
	s.items[addr] = b
	s.bySegio[at] = append(s.bySegio[at], addr)
	s.bytes += int64(len(b))
}

// flushed drops the cblocks of every segio at or before position at.
func (p *pending) flushed(at uint64) {
	for {
		cur := p.durable.Load()
		if at <= cur || p.durable.CompareAndSwap(cur, at) {
			break
		}
	}
	for i := range p.shards {
		s := &p.shards[i]
		s.mu.Lock()
		for sp, addrs := range s.bySegio {
			if sp > at {
				continue
			}
			for _, ad := range addrs {
				if b, ok := s.items[ad]; ok {
					s.bytes -= int64(len(b))
					putBuf(b)
					delete(s.items, ad)
				}
			}
			delete(s.bySegio, sp)
		}
		s.mu.Unlock()
	}
}

// decode decodes the pending cblock at addr into dst; found false if it
// is not pending (its segio is durable: read it from the store).
func (p *pending) decode(addr segment.Addr, dst []byte) (n int, found bool, err error) {
	s := p.shard(addr)
	s.mu.RLock()
	defer s.mu.RUnlock()
	b, ok := s.items[addr]
	if !ok {
		return 0, false, nil
	}
	n, err = cblock.Decode(dst, b)
	return n, true, err
}

func (p *pending) size() (items int, bytes int64) {
	for i := range p.shards {
		s := &p.shards[i]
		s.mu.RLock()
		items += len(s.items)
		bytes += s.bytes
		s.mu.RUnlock()
	}
	return items, bytes
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
