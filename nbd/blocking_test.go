package nbd

import (
	"context"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// socketNonblocking reports the O_NONBLOCK flag of c's socket.
func socketNonblocking(t *testing.T, c *conn) bool {
	t.Helper()
	rc, err := c.raw.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags int
	var ferr error
	if err := rc.Control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0) }); err != nil || ferr != nil {
		t.Fatal(err, ferr)
	}
	return flags&unix.O_NONBLOCK != 0
}

// serverConns returns the server's connections.
func serverConns(ts *testServer) []*conn {
	ts.srv.mu.Lock()
	defer ts.srv.mu.Unlock()
	var cs []*conn
	for c := range ts.srv.conns {
		cs = append(cs, c)
	}
	return cs
}

// TestTransmissionSocketMode: by default a connection whose client sends
// one request at a time (queue depth 1) gets a blocking socket (the reader
// waits in read(2) on its own thread), and one whose client keeps requests
// queued goes back to the netpoller; with PolledSockets it never blocks.
// In every mode an idle connection (its reader waiting in read) is closed
// promptly by Shutdown.
func TestTransmissionSocketMode(t *testing.T) {
	for _, polled := range []bool{false, true} {
		t.Run(map[bool]string{false: "adaptive", true: "polled"}[polled], func(t *testing.T) {
			inline := allFeatures
			inline.NonBlocking = true
			ts := startServer(t, Options{PolledSockets: polled}, map[string]Export{"a": newMemExport(1<<20, allFeatures), "b": newMemExport(1<<20, inline)})
			check := func(when string, wantBlocking bool) {
				t.Helper()
				cs := serverConns(ts)
				if len(cs) != 2 {
					t.Fatalf("%s: %d connections, want 2", when, len(cs))
				}
				for _, sc := range cs {
					if got := sc.blocking.Load(); got != wantBlocking {
						t.Errorf("%s: conn %s: blocking %v, want %v", when, sc.remote, got, wantBlocking)
					}
					if nb := socketNonblocking(t, sc); nb == wantBlocking {
						t.Errorf("%s: conn %s: O_NONBLOCK %v, want %v", when, sc.remote, nb, !wantBlocking)
					}
				}
			}
			var cs []*client
			for _, name := range []string{"a", "b"} {
				c := dial(t, ts.addr)
				c.open(name, true, false)
				cs = append(cs, c)
			}
			// Queue depth 1: request, reply, request, ...
			for _, c := range cs {
				for i := range idleReadsToBlock + 4 {
					c.request(cmdWrite, 0, uint64(i), 0, 4096, make([]byte, 4096))
					if r := c.mustReply(); r.errno != 0 {
						t.Fatalf("write: %+v", r)
					}
				}
			}
			// The reader switches before its next read: wait for it.
			time.Sleep(50 * time.Millisecond)
			check("after queue-depth-1 traffic", !polled)
			// Pipelined: many requests sent before any reply is read.
			for _, c := range cs {
				const n = 32
				// One write: sent one by one, a reader blocked in read(2)
				// may take each request as it arrives and never see a
				// queue (how this test failed on a loaded CI machine).
				c.sendBatch(func() {
					for i := range n {
						c.request(cmdRead, 0, uint64(100+i), uint64(i)*512, 512, nil)
					}
				})
				for range n {
					if r := c.mustReply(); r.errno != 0 {
						t.Fatalf("read: %+v", r)
					}
				}
			}
			check("after pipelined traffic", false)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			if err := ts.srv.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("Shutdown of idle connections took %v", d)
			}
			for _, c := range cs {
				c.expectClosed()
			}
		})
	}
}

// TestShutdownWhileBlockingIdle: a reader blocked in read(2) on a
// blocking socket is woken by Shutdown (a read deadline would not be).
func TestShutdownWhileBlockingIdle(t *testing.T) {
	ts := startServer(t, Options{}, map[string]Export{"a": newMemExport(1<<20, allFeatures)})
	c := dial(t, ts.addr)
	c.open("a", false, false)
	for i := range idleReadsToBlock + 4 {
		c.request(cmdRead, 0, uint64(i), 0, 512, nil)
		c.mustReply()
	}
	time.Sleep(50 * time.Millisecond)
	if cs := serverConns(ts); len(cs) != 1 || !cs[0].blocking.Load() {
		t.Fatal("connection not in blocking mode after queue-depth-1 traffic")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	c.expectClosed()
}

// TestBlockingSocketKilledWhileIdle: a protocol error found by a worker
// (here: the server hard-closing on Shutdown's deadline) must wake a reader
// blocked in read(2); Close alone would not.
func TestBlockingSocketKilledWhileIdle(t *testing.T) {
	exp := newMemExport(1<<20, allFeatures)
	ts := startServer(t, Options{}, map[string]Export{"a": exp})
	c := dial(t, ts.addr)
	c.open("a", false, false)
	// Queue depth 1 first, so the socket is blocking.
	for i := range idleReadsToBlock + 4 {
		c.request(cmdRead, 0, uint64(10+i), 4096, 512, nil)
		c.mustReply()
	}
	exp.gateOff.Store(0)
	c.request(cmdRead, 0, 1, 0, 4096, nil)
	<-exp.entered
	time.Sleep(20 * time.Millisecond)
	if cs := serverConns(ts); len(cs) != 1 || !cs[0].blocking.Load() {
		t.Fatal("connection not in blocking mode after queue-depth-1 traffic")
	}
	// The reader is now blocked in read(2) waiting for the next request;
	// the one request in flight keeps Shutdown from finishing gracefully.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != context.DeadlineExceeded {
		t.Fatalf("Shutdown: %v", err)
	}
	done := make(chan struct{})
	go func() { c.expectClosed(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("connection not closed 5 s after Shutdown gave up: its reader is still blocked")
	}
	close(exp.gate)
}
