package nbd

import (
	"math/bits"
	"sync"
)

// Payload buffers come in power-of-two size classes from 4 KiB to 32 MiB,
// each class a sync.Pool, so steady-state I/O allocates nothing and idle
// memory is returned to the runtime by the GC.
const (
	minBufShift = 12
	maxBufShift = 25
	numBufClass = maxBufShift - minBufShift + 1
)

var bufPools [numBufClass]sync.Pool

func bufClass(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minBufShift
}

// getBuf returns a buffer of capacity at least n (n ≤ 32 MiB). The caller
// owns it until putBuf.
func getBuf(n int) *[]byte {
	cl := bufClass(n)
	if p, _ := bufPools[cl].Get().(*[]byte); p != nil {
		return p
	}
	b := make([]byte, 1<<(cl+minBufShift))
	return &b
}

// putBuf returns a buffer from getBuf. The caller must not use it after.
func putBuf(p *[]byte) {
	bufPools[bufClass(cap(*p))].Put(p)
}

// flow bounds one connection's requests in flight by count and payload
// bytes, and recycles request structs. The reader acquires, the writer
// releases; a waiting reader is the connection's backpressure.
type flow struct {
	mu          sync.Mutex
	cond        sync.Cond
	inflight    int
	maxInflight int
	bytes       int64
	maxBytes    int64
	free        []*request // INVARIANT: len(free)+inflight == requests ever made
}

func (f *flow) init(maxInflight int, maxBytes int64) {
	f.cond.L = &f.mu
	f.maxInflight = maxInflight
	f.maxBytes = maxBytes
	f.free = make([]*request, 0, maxInflight)
}

// acquire waits for room for one request of n payload bytes and returns
// a request struct to use. A request larger than maxBytes runs alone.
func (f *flow) acquire(n int64) *request {
	f.mu.Lock()
	for f.inflight >= f.maxInflight || (f.inflight > 0 && f.bytes+n > f.maxBytes) {
		f.cond.Wait()
	}
	f.inflight++
	f.bytes += n
	var r *request
	if k := len(f.free); k > 0 {
		r = f.free[k-1]
		f.free = f.free[:k-1]
	}
	f.mu.Unlock()
	if r == nil {
		r = newRequest()
	}
	return r
}

// canAcquire reports whether acquire(n) would return at once.
func (f *flow) canAcquire(n int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inflight < f.maxInflight && (f.inflight == 0 || f.bytes+n <= f.maxBytes)
}

// release returns r, which held n bytes of budget.
func (f *flow) release(r *request, n int64) {
	f.mu.Lock()
	f.inflight--
	f.bytes -= n
	f.free = append(f.free, r)
	f.mu.Unlock()
	f.cond.Broadcast()
}

// waitIdle waits until no request is in flight.
func (f *flow) waitIdle() {
	f.mu.Lock()
	for f.inflight > 0 {
		f.cond.Wait()
	}
	f.mu.Unlock()
}
