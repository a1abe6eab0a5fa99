package nbd

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("nbd: server closed")

// Server serves exports over NBD on any number of listeners.
type Server struct {
	opts  Options
	stats serverStats

	// closing is set by Shutdown; every connection polls it.
	closing    atomic.Bool
	shutdownCh chan struct{} // closed by Shutdown

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	rejecting int           // connections being refused politely
	connsDone chan struct{} // closed when conns becomes empty during shutdown
}

// NewServer validates opts and returns a server that serves nothing until
// Serve is called.
func NewServer(opts Options) (*Server, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Server{
		opts:       o,
		shutdownCh: make(chan struct{}),
		listeners:  make(map[net.Listener]struct{}),
		conns:      make(map[*conn]struct{}),
	}, nil
}

// maxRejecting bounds goroutines that refuse connections over the limit
// politely; beyond it, excess connections are closed at once.
const maxRejecting = 16

// Serve accepts connections on ln (TCP, Unix, or anything else) and
// serves each in its own goroutines. It returns ErrServerClosed after
// Shutdown, or the listener's error. Serve closes ln when it returns.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			if isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.opts.Logger.Warn("nbd accept", "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		if tc, ok := nc.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
		}
		s.accept(nc)
	}
}

// isTemporary treats timeouts and resource exhaustion on accept (EMFILE
// and friends) as temporary: the listener works again once fds free up.
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	if errors.As(err, &t) && t.Temporary() {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (s *Server) accept(nc net.Conn) {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		nc.Close()
		return
	}
	if len(s.conns) >= s.opts.MaxConnections {
		s.stats.connsRefused.Add(1)
		if s.rejecting >= maxRejecting {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.rejecting++
		s.mu.Unlock()
		go s.refuse(nc)
		return
	}
	c := newConn(s, nc)
	s.conns[c] = struct{}{}
	s.stats.connsTotal.Add(1)
	s.stats.connsActive.Add(1)
	s.mu.Unlock()
	go c.serve()
}

// refuse answers a connection over the limit: greeting, then
// NBD_REP_ERR_POLICY to its first option, then close. It never blocks for
// more than a second.
func (s *Server) refuse(nc net.Conn) {
	defer func() {
		nc.Close()
		s.mu.Lock()
		s.rejecting--
		s.mu.Unlock()
	}()
	nc.SetDeadline(time.Now().Add(time.Second))
	var b [greetingLen]byte
	putGreeting(b[:])
	if _, err := nc.Write(b[:]); err != nil {
		return
	}
	var hdr [4 + optHeaderLen]byte
	if _, err := readFull(nc, hdr[:]); err != nil {
		return
	}
	opt := be32(hdr[12:])
	if opt == optExportName {
		return
	}
	msg := "server has too many connections"
	r := make([]byte, optReplyHeaderLen, optReplyHeaderLen+len(msg))
	putOptReplyHeader(r, opt, repErrPolicy, uint32(len(msg)))
	nc.Write(append(r, msg...))
	s.opts.Logger.Warn("nbd connection refused: too many connections", "remote", nc.RemoteAddr().String(), "max_connections", s.opts.MaxConnections)
}

func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.stats.connsActive.Add(-1)
	if len(s.conns) == 0 && s.connsDone != nil {
		close(s.connsDone)
		s.connsDone = nil
	}
	s.mu.Unlock()
}

// Shutdown stops the server gracefully: it closes the listeners, answers
// options on negotiating connections with NBD_REP_ERR_SHUTDOWN and new
// requests with ESHUTDOWN, waits for requests in flight to finish and
// their replies to be sent, then closes every connection. If ctx ends
// first, the remaining connections are closed at once (their requests'
// contexts are cancelled) and ctx's error is returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	first := !s.closing.Load()
	s.closing.Store(true)
	if first {
		close(s.shutdownCh)
	}
	for ln := range s.listeners {
		ln.Close()
	}
	var done chan struct{}
	if len(s.conns) > 0 {
		if s.connsDone == nil {
			s.connsDone = make(chan struct{})
		}
		done = s.connsDone
	}
	s.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.kill(errors.New("shutdown deadline"))
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}
