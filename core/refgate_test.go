package core

import (
	"testing"
	"time"

	"github.com/shalestore/shale/core/segment"
)

// TestRefGateCollectWaitsForWriters: collect must not return while a
// writer that checked allowed before the victims were marked is still
// persisting, and a writer entering afterwards sees the victims.
func TestRefGateCollectWaitsForWriters(t *testing.T) {
	var g refGate
	g.enter()
	if !g.allowed(7) {
		t.Fatal("segment 7 refused before any collect")
	}
	done := make(chan struct{})
	go func() {
		g.collect(7)
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("collect returned while a writer that saw segment 7 allowed was still in")
	case <-time.After(50 * time.Millisecond):
	}
	g.exit()
	<-done
	g.enter()
	if g.allowed(7) {
		t.Error("segment 7 allowed after collect")
	}
	if !g.allowed(segment.ID(8)) {
		t.Error("segment 8 refused; it was never collected")
	}
	g.exit()
	g.release(7)
	g.enter()
	defer g.exit()
	if !g.allowed(7) {
		t.Error("segment 7 refused after release")
	}
}
