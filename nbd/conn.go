package nbd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Connection phases.
const (
	phaseNegotiating = iota
	phaseTransmitting
	phaseClosed
)

// conn is one client connection. The goroutine running serve negotiates,
// then becomes the reader; up to MaxInFlight worker goroutines (started on
// demand, kept for the life of the connection) call the export. Replies
// are queued, and whichever goroutine finds no write in progress becomes
// the connection's single writer until the queue is empty (flat
// combining): there is never more than one writer, replies that complete
// together share one writev, and no goroutine hand-off is needed per reply.
type conn struct {
	srv    *Server
	log    *slog.Logger
	raw    net.Conn // the accepted socket
	nc     net.Conn // raw, or the TLS connection over it
	br     *bufio.Reader
	remote string
	ctx    context.Context // cancelled when the connection is killed
	cancel context.CancelFunc
	phase  atomic.Int32
	done   chan struct{} // closed when serve returns

	// Negotiation state; owned by the serve goroutine.
	fixed, noZeroes, tls, sr bool
	metaSet                  bool   // base:allocation selected
	metaExport               string // ... for this (canonical) export
	nopts, optErrors         int
	optBuf, obuf, scratchBuf []byte

	// Transmission state, fixed when transmission begins.
	exp      Export
	info     ExportInfo
	feat     Features
	size     int64
	tflags   uint16
	blockMin uint32
	meta     bool      // BLOCK_STATUS allowed
	pinner   PinReader // exp, when it pins READ data and CopyReads is off
	// blocking: raw's socket is in blocking mode (see
	// Options.PolledSockets): deadlines no longer interrupt its reads and
	// writes, so whoever must stop them shuts the socket down instead.
	blocking atomic.Bool
	// adaptive: the reader switches the socket between blocking and
	// polled as the load changes (see adaptMode); set before
	// transmission starts, never cleared until the connection closes.
	adaptive atomic.Bool
	// Reader-owned evidence for adaptMode: consecutive request reads that
	// found the next request already buffered (pipelined) or not (idle).
	pipelined, idle int

	fl          flow
	work        chan *request // reader -> workers
	idleWorkers atomic.Int32
	nworkers    int // owned by the reader
	hdr         [requestLen]byte
	held        int // replies queued but not sent (inline mode); reader-owned
	heldBytes   int

	// Reply queue. INVARIANT: at most one goroutine has writing set and
	// owns the writer state below; it drains queue before clearing it.
	qmu     sync.Mutex
	queue   []*request
	writing bool

	// Writer state; owned by the goroutine that set writing.
	vectored bool          // nc supports writev (TCP, Unix)
	bw       *bufio.Writer // used when it does not (TLS)
	iov      net.Buffers
	iovTmp   net.Buffers
	batch    []*request
	werr     error

	// Per-connection counters, for the close log line.
	nreq      atomic.Uint64
	nerr      atomic.Uint64
	readBytes atomic.Uint64 // READ payload sent
	wrotBytes atomic.Uint64 // WRITE payload received

	reasonMu sync.Mutex
	reason   error // first reason the connection was closed
}

func newConn(s *Server, nc net.Conn) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &conn{
		srv:    s,
		raw:    nc,
		nc:     nc,
		br:     bufio.NewReaderSize(nc, 64<<10),
		remote: nc.RemoteAddr().String(),
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
	}
	c.log = s.opts.Logger
	return c
}

func (c *conn) scratch() []byte {
	if c.scratchBuf == nil {
		c.scratchBuf = make([]byte, 64<<10)
	}
	return c.scratchBuf
}

// setReason records why the connection closes; the first reason wins.
func (c *conn) setReason(err error) {
	c.reasonMu.Lock()
	if c.reason == nil {
		c.reason = err
	}
	c.reasonMu.Unlock()
}

func (c *conn) getReason() error {
	c.reasonMu.Lock()
	defer c.reasonMu.Unlock()
	return c.reason
}

// kill closes the connection at once: the reader and writer fail, and
// the context handed to the export is cancelled. The socket is closed
// first: an export call woken by the cancellation must find nothing to
// send its reply on (a hard close sends nothing more).
func (c *conn) kill(err error) {
	c.setReason(err)
	c.shutdownSocket(unix.SHUT_RDWR)
	c.raw.Close()
	c.cancel()
}

// setBlocking switches raw's socket to blocking mode for transmission,
// where the connection has a thread of its own (Options.PolledSockets).
func (c *conn) setBlocking() {
	sc, ok := c.raw.(syscall.Conn)
	if !ok || !c.adaptive.Load() {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetNonblock(int(fd), false) }); err != nil || serr != nil {
		c.log.Debug("nbd: socket stays non-blocking", "remote", c.remote, "error", errors.Join(err, serr))
		return
	}
	c.blocking.Store(true)
}

// Hysteresis of adaptMode: how many consecutive reads of one kind switch
// the socket's mode (each switch is an fcntl).
const (
	idleReadsToBlock     = 16
	pipelinedReadsToPoll = 4
)

// adaptMode picks the socket mode for the next request read. A client
// that sends one request and waits for its reply (queue depth 1: every
// read finds nothing buffered) is served fastest by a reader blocked in
// read(2), woken by the kernel directly; a client that keeps requests
// queued (the next one usually buffered already) is served faster by the
// netpoller, whose later wake-up reads more requests per system call
// (bench/RESULTS.md, "NBD front end", blocking vs polled sockets).
// Called by the reader only, before it reads a request header.
func (c *conn) adaptMode() {
	if !c.adaptive.Load() {
		return
	}
	if c.br.Buffered() >= requestLen {
		c.pipelined++
		c.idle = 0
		if c.blocking.Load() && c.pipelined >= pipelinedReadsToPoll {
			c.setPolled()
		}
		return
	}
	c.idle++
	c.pipelined = 0
	if !c.blocking.Load() && c.idle >= idleReadsToBlock {
		c.setBlocking()
	}
}

// setPolled undoes setBlocking.
// REQUIRES: no other goroutine reads raw (the reader calls it, or nothing
// runs any more). A writer already blocked in a blocking write finishes
// that write; its later writes are polled.
func (c *conn) setPolled() {
	if !c.blocking.Load() {
		return
	}
	if sc, ok := c.raw.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { unix.SetNonblock(int(fd), true) })
		}
	}
	c.blocking.Store(false)
}

// shutdownSocket wakes a reader or writer blocked in a blocking socket
// (how, as shutdown(2)). It acts whenever the connection may switch its
// socket to blocking (adaptive), not only while it is blocking: the
// reader may switch just after the caller looked.
func (c *conn) shutdownSocket(how int) {
	if !c.adaptive.Load() {
		return
	}
	if sc, ok := c.raw.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), how) })
		}
	}
}

func (c *conn) serve() {
	defer c.srv.removeConn(c)
	defer close(c.done)
	defer c.cancel()
	go c.watchShutdown()
	start := time.Now()
	if err := c.negotiate(); err != nil {
		c.setReason(err)
		c.phase.Store(phaseClosed)
		c.closeNet()
		reason := c.getReason()
		if errors.Is(reason, errClientAbort) {
			c.log.Debug("nbd connection closed in handshake", "remote", c.remote, "reason", reason.Error(), "options", c.nopts, "tls", c.tls)
		} else {
			c.srv.stats.handshakesFailed.Add(1)
			c.log.Info("nbd connection closed in handshake", "remote", c.remote, "reason", reason.Error(), "options", c.nopts, "tls", c.tls)
		}
		return
	}
	c.raw.SetDeadline(time.Time{})
	c.log.Info("nbd connection open",
		"remote", c.remote,
		"export", c.info.Name,
		"size", c.size,
		"structured_replies", c.sr,
		"meta_context", metaName(c.meta),
		"tls", c.tls,
		"flags", fmt.Sprintf("%#04x", c.tflags),
		"handshake_ms", time.Since(start).Milliseconds())
	c.transmit()
	reason := c.getReason()
	c.log.Info("nbd connection closed",
		"remote", c.remote,
		"export", c.info.Name,
		"requests", c.nreq.Load(),
		"errors", c.nerr.Load(),
		"read_bytes", c.readBytes.Load(),
		"write_bytes", c.wrotBytes.Load(),
		"duration_ms", time.Since(start).Milliseconds(),
		"reason", reason.Error())
}

func metaName(on bool) string {
	if on {
		return metaContextBaseAllocation
	}
	return ""
}

// closeNet closes the connection, shutting down TLS first when active.
func (c *conn) closeNet() {
	// Nothing reads or writes any more: back to non-blocking, so the
	// deadline below bounds the TLS close.
	c.setPolled()
	if tc, ok := c.nc.(interface{ CloseWrite() error }); ok && c.tls {
		c.nc.SetWriteDeadline(time.Now().Add(time.Second))
		tc.CloseWrite()
	}
	c.raw.Close()
}

// watchShutdown reacts to Server.Shutdown: a negotiating connection gets
// ShutdownGrace to send its next option (answered ERR_SHUTDOWN); a
// transmitting one is closed once its requests in flight are answered.
func (c *conn) watchShutdown() {
	select {
	case <-c.done:
		return
	case <-c.srv.shutdownCh:
	}
	for {
		switch c.phase.Load() {
		case phaseNegotiating:
			c.raw.SetReadDeadline(time.Now().Add(c.srv.opts.ShutdownGrace))
			// The handshake may finish (GO) before the deadline fires;
			// look again then.
			select {
			case <-c.done:
				return
			case <-time.After(c.srv.opts.ShutdownGrace):
				continue
			}
		case phaseTransmitting:
			c.fl.waitIdle()
			c.setReason(errServerShuttingDown)
			c.raw.SetReadDeadline(time.Now())
			c.shutdownSocket(unix.SHUT_RD)
			return
		default:
			return
		}
	}
}

// enter fixes the export for transmission.
func (c *conn) enter(exp Export, info ExportInfo) {
	c.exp = exp
	c.info = info
	c.feat = exp.Features()
	c.size = exp.Size()
	c.tflags = transmissionFlags(c.feat, c.sr)
	c.blockMin, _, _ = blockSizes(c.feat.BlockSize, c.srv.opts.MaxPayload)
	c.meta = c.sr && c.metaSet && c.metaExport == info.Name && c.feat.Extents
	if p, ok := exp.(PinReader); ok && !c.srv.opts.CopyReads {
		c.pinner = p
	}
}

func (c *conn) transmit() {
	o := &c.srv.opts
	c.fl.init(o.MaxInFlight, o.MaxInFlightBytes)
	c.work = make(chan *request, o.MaxInFlight)
	c.queue = make([]*request, 0, o.MaxInFlight)
	c.batch = make([]*request, 0, o.MaxInFlight)
	switch c.nc.(type) {
	case *net.TCPConn, *net.UnixConn:
		c.vectored = true
	default:
		c.bw = bufio.NewWriterSize(c.nc, 64<<10)
	}
	if _, ok := c.raw.(syscall.Conn); ok && !c.srv.opts.PolledSockets {
		c.adaptive.Store(true)
	}
	c.phase.Store(phaseTransmitting)
	err := c.readLoop()
	c.flushHeld()
	c.setReason(err)
	close(c.work)
	c.fl.waitIdle() // every request answered (or dropped) and recycled
	c.phase.Store(phaseClosed)
	c.closeNet()
}

// errClientDisc is the reason for a clean NBD_CMD_DISC.
var errClientDisc = errors.New("client disconnected (DISC)")

// readLoop reads requests until DISC, a protocol error or a dead socket.
func (c *conn) readLoop() error {
	o := &c.srv.opts
	st := &c.srv.stats
	for {
		if c.held > 0 && c.br.Buffered() < requestLen {
			// About to wait for the client: answer what we have.
			c.flushHeld()
		}
		c.adaptMode()
		if _, err := readFull(c.br, c.hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("client closed the connection")
			}
			return fmt.Errorf("reading request: %w", err)
		}
		h := parseRequestHeader(c.hdr[:])
		if h.magic != requestMagic {
			return fmt.Errorf("bad request magic %#x", h.magic)
		}
		slot := cmdSlot(h.typ)
		st.requests[slot].Add(1)
		c.nreq.Add(1)
		if h.typ == cmdDisc {
			return errClientDisc
		}
		errno, msg := c.validate(&h)
		var budget int64
		switch h.typ {
		case cmdRead, cmdWrite:
			if h.length <= uint32(o.MaxPayload) {
				budget = int64(h.length)
			}
		case cmdBlockStatus:
			if errno == 0 {
				budget = int64(c.blockStatusBufLen(&h))
			}
		}
		if c.held > 0 && !c.fl.canAcquire(budget) {
			c.flushHeld()
		}
		r := c.fl.acquire(budget)
		r.h = h
		r.budget = budget
		if h.typ == cmdWrite {
			if h.length > uint32(o.MaxPayload) {
				if int64(h.length) > 2*int64(o.MaxPayload) {
					c.fl.release(r, budget)
					return fmt.Errorf("WRITE of %d bytes", h.length)
				}
				if err := skip(c.br, int64(h.length), c.scratch()); err != nil {
					c.fl.release(r, budget)
					return fmt.Errorf("skipping WRITE payload: %w", err)
				}
			} else if h.length > 0 {
				r.bufp = getBuf(int(h.length))
				r.data = (*r.bufp)[:h.length]
				if _, err := readFull(c.br, r.data); err != nil {
					r.release()
					c.fl.release(r, budget)
					return fmt.Errorf("reading WRITE payload: %w", err)
				}
			}
		}
		if errno == 0 && c.srv.closing.Load() {
			errno, msg = errShutdown, "server is shutting down"
		}
		if errno != 0 {
			c.fail(r, errno, msg)
			if c.feat.NonBlocking {
				c.hold(r)
			} else {
				c.reply(r)
			}
			continue
		}
		if c.feat.NonBlocking && (h.typ != cmdRead || h.length <= maxInlineBytes) {
			c.process(r)
			c.hold(r)
			continue
		}
		c.dispatch(r)
	}
}

// dispatch hands r to a worker, starting one if none is idle.
func (c *conn) dispatch(r *request) {
	if c.idleWorkers.Load() <= 0 && c.nworkers < c.srv.opts.MaxInFlight {
		c.nworkers++
		c.idleWorkers.Add(1)
		go c.worker()
	}
	c.work <- r
}

func (c *conn) worker() {
	for r := range c.work {
		c.idleWorkers.Add(-1)
		c.process(r)
		c.reply(r)
		c.idleWorkers.Add(1)
	}
}

// validate checks a request against the protocol, the export and the
// negotiated features. It returns 0 or the error to reply with.
func (c *conn) validate(h *requestHeader) (uint32, string) {
	o := &c.srv.opts
	ro := c.feat.ReadOnly
	allowed := uint16(0)
	if c.tflags&tflagSendFUA != 0 {
		allowed |= cmdFlagFUA
	}
	switch h.typ {
	case cmdRead:
		if c.tflags&tflagSendDF != 0 {
			allowed |= cmdFlagDF
		}
	case cmdWrite:
		if ro {
			return errPerm, "export is read-only"
		}
	case cmdFlush:
		if c.tflags&tflagSendFlush == 0 {
			return errInval, "FLUSH not supported"
		}
		if h.offset != 0 || h.length != 0 {
			return errInval, "FLUSH with nonzero offset or length"
		}
	case cmdTrim:
		if ro {
			return errPerm, "export is read-only"
		}
		if c.tflags&tflagSendTrim == 0 {
			return errInval, "TRIM not supported"
		}
	case cmdCache:
		if c.tflags&tflagSendCache == 0 {
			return errInval, "CACHE not supported"
		}
	case cmdWriteZeroes:
		if ro {
			return errPerm, "export is read-only"
		}
		if c.tflags&tflagSendWriteZeroes == 0 {
			return errInval, "WRITE_ZEROES not supported"
		}
		allowed |= cmdFlagNoHole
		if c.tflags&tflagSendFastZero != 0 {
			allowed |= cmdFlagFastZero
		}
	case cmdBlockStatus:
		if !c.meta {
			return errInval, "no metadata context negotiated"
		}
		allowed |= cmdFlagReqOne
		if h.length == 0 {
			return errInval, "BLOCK_STATUS of length 0"
		}
	default:
		return errInval, "unknown command"
	}
	if h.flags&^allowed != 0 {
		return errInval, "unsupported command flags"
	}
	if h.typ == cmdFlush {
		return 0, ""
	}
	end := h.offset + uint64(h.length)
	if end < h.offset || end > uint64(c.size) {
		if h.typ == cmdWrite || h.typ == cmdWriteZeroes {
			return errNoSpc, "request beyond the end of the export"
		}
		return errInval, "request beyond the end of the export"
	}
	if m := uint64(c.blockMin); m > 1 && (h.offset%m != 0 || uint64(h.length)%m != 0) {
		return errInval, "request not aligned to the minimum block size"
	}
	if (h.typ == cmdRead || h.typ == cmdWrite) && h.length > uint32(o.MaxPayload) {
		return errInval, "request longer than the maximum payload"
	}
	return 0, ""
}

// reply queues r's reply. If no write is in progress, the caller becomes
// the writer: it sends everything queued, in completion order, and keeps
// going until the queue is empty, then recycles the requests it sent.
func (c *conn) reply(r *request) {
	c.qmu.Lock()
	c.queue = append(c.queue, r)
	c.writeLocked()
}

// hold queues r's reply without sending it; flushHeld sends what is held.
// Only the reader holds replies (inline mode), so that requests answered
// together go out in one writev.
func (c *conn) hold(r *request) {
	// Measure r before queueing it: once queued, a worker that becomes
	// the writer may send and recycle it at any moment.
	n := r.replyLen()
	c.qmu.Lock()
	c.queue = append(c.queue, r)
	c.qmu.Unlock()
	c.held++
	c.heldBytes += n
	if c.held >= maxHeld || c.heldBytes >= maxHeldBytes {
		c.flushHeld()
	}
}

// maxInlineBytes is the largest READ a NonBlocking export runs on the
// reader; larger ones go to workers, so that sending a big reply (which
// may wait for the client to read) does not stop the reader. WRITEs run
// inline at any size: the payload is already in memory and storing it is
// a copy no slower than reading it was, while a hand-off to a worker
// costs two goroutine switches per request (1 MiB sequential writes with
// fio were 20-40% faster inline on a 2-core machine).
const maxInlineBytes = 128 << 10

// Bounds on replies held back in inline mode.
const (
	maxHeld      = 32
	maxHeldBytes = 1 << 20
)

// flushHeld sends the replies hold queued.
func (c *conn) flushHeld() {
	if c.held == 0 {
		return
	}
	c.held, c.heldBytes = 0, 0
	c.qmu.Lock()
	c.writeLocked()
}

// writeLocked becomes the writer unless a write is in progress (whose
// writer will send the queue), and sends until the queue is empty.
// REQUIRES: c.qmu held; it is released on return.
func (c *conn) writeLocked() {
	if c.writing || len(c.queue) == 0 {
		c.qmu.Unlock()
		return
	}
	c.writing = true
	for len(c.queue) > 0 {
		// Swap buffers: queue collects while batch is written.
		batch := c.queue
		c.queue = c.batch[:0]
		c.qmu.Unlock()
		if c.werr == nil {
			if err := c.send(batch); err != nil {
				c.werr = err
				c.kill(fmt.Errorf("writing reply: %w", err))
			}
		}
		for i, r := range batch {
			c.finish(r)
			batch[i] = nil
		}
		c.qmu.Lock()
		c.batch = batch[:0]
	}
	c.writing = false
	c.qmu.Unlock()
}

func (c *conn) send(batch []*request) error {
	if c.vectored {
		c.iov = c.iov[:0]
		for _, r := range batch {
			c.iov = append(c.iov, r.iov...)
		}
		c.iovTmp = c.iov
		_, err := c.iovTmp.WriteTo(c.nc)
		for i := range c.iov {
			c.iov[i] = nil
		}
		return err
	}
	for _, r := range batch {
		for _, b := range r.iov {
			if _, err := c.bw.Write(b); err != nil {
				return err
			}
		}
	}
	return c.bw.Flush()
}

// finish counts a replied request and recycles it.
func (c *conn) finish(r *request) {
	st := &c.srv.stats
	slot := cmdSlot(r.h.typ)
	if r.errno != 0 {
		st.cmdErrors[slot].Add(1)
		st.errnos[errnoIndex(r.errno)].Add(1)
		c.nerr.Add(1)
	} else {
		st.bytes[slot].Add(uint64(r.h.length))
		switch r.h.typ {
		case cmdRead:
			c.readBytes.Add(uint64(r.h.length))
		case cmdWrite:
			c.wrotBytes.Add(uint64(r.h.length))
		}
	}
	budget := r.budget
	r.release()
	c.fl.release(r, budget)
}
