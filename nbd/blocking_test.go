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

// TestTransmissionSocketMode: by default a transmitting connection's
// socket is blocking (the reader waits in read(2) on its own thread);
// with PolledSockets it stays in the netpoller. In both modes an idle
// connection (its reader blocked in read) is closed promptly by Shutdown,
// and a connection with a request in flight by Shutdown's deadline.
func TestTransmissionSocketMode(t *testing.T) {
	for _, polled := range []bool{false, true} {
		t.Run(map[bool]string{false: "blocking", true: "polled"}[polled], func(t *testing.T) {
			inline := allFeatures
			inline.NonBlocking = true
			ts := startServer(t, Options{PolledSockets: polled}, map[string]Export{"a": newMemExport(1<<20, allFeatures), "b": newMemExport(1<<20, inline)})
			var cs []*client
			for _, name := range []string{"a", "b"} {
				c := dial(t, ts.addr)
				c.open(name, true, false)
				c.request(cmdWrite, 0, 9, 0, 8192, make([]byte, 8192))
				if r := c.mustReply(); r.errno != 0 {
					t.Fatalf("write: %+v", r)
				}
				c.read(0, 4096)
				cs = append(cs, c)
			}
			ts.srv.mu.Lock()
			n := 0
			for sc := range ts.srv.conns {
				n++
				if got := sc.blocking.Load(); got == polled {
					t.Errorf("conn %s: blocking %v with PolledSockets %v", sc.remote, got, polled)
				}
				if nb := socketNonblocking(t, sc); nb != polled {
					t.Errorf("conn %s: O_NONBLOCK %v with PolledSockets %v", sc.remote, nb, polled)
				}
			}
			ts.srv.mu.Unlock()
			if n != 2 {
				t.Fatalf("%d connections, want 2", n)
			}
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

// TestBlockingSocketKilledWhileIdle: a protocol error found by a worker
// (here: the server hard-closing on Shutdown's deadline) must wake a reader
// blocked in read(2); Close alone would not.
func TestBlockingSocketKilledWhileIdle(t *testing.T) {
	exp := newMemExport(1<<20, allFeatures)
	exp.gateOff.Store(0)
	ts := startServer(t, Options{}, map[string]Export{"a": exp})
	c := dial(t, ts.addr)
	c.open("a", false, false)
	c.request(cmdRead, 0, 1, 0, 4096, nil)
	<-exp.entered
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
