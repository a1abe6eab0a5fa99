package core

import (
	"sync"

	"github.com/shalestore/shale/core/segment"
)

// refGate keeps new references away from segments that garbage collection
// is collecting. Inline dedup adds block-map references to cblocks that
// are already stored; if it added one to a segment GC has just found the
// references of, GC would free the segment under it.
//
// Protocol: a writer that may add references to existing cblocks calls
// enter, asks allowed for each segment it wants to reference, persists its
// facts, then calls exit. GC calls collect with its victims before it
// looks for their references: collect returns only once every writer that
// could have seen the segments as allowed has exited, so from then on the
// victims' reference set can only shrink. release forgets victims that GC
// gave up on (freed segments need no release: their ids are never reused).
//
// INVARIANT: a writer holds the gate (enter..exit) from its allowed check
// until its facts are durable; otherwise collect could return while a
// reference GC will not see is on its way.
type refGate struct {
	mu      sync.RWMutex
	victims map[segment.ID]struct{} // guarded by mu; written with mu held exclusively
}

// enter admits a writer; exit must follow.
func (g *refGate) enter() { g.mu.RLock() }

// exit ends what enter began.
func (g *refGate) exit() { g.mu.RUnlock() }

// allowed reports whether a new reference to segment seg may be added.
// REQUIRES: the caller is between enter and exit.
func (g *refGate) allowed(seg segment.ID) bool {
	_, victim := g.victims[seg]
	return !victim
}

// collect marks segs as victims. It returns once no writer that might
// have found one of them allowed is still between enter and exit.
func (g *refGate) collect(segs ...segment.ID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.victims == nil {
		g.victims = map[segment.ID]struct{}{}
	}
	for _, s := range segs {
		g.victims[s] = struct{}{}
	}
}

// release unmarks segs: new references to them are allowed again.
func (g *refGate) release(segs ...segment.ID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, s := range segs {
		delete(g.victims, s)
	}
}
