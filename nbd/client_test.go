package nbd

// A small NBD client and a memory export, for the package's tests. The
// client does exactly what the test tells it, including protocol errors.

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// memExport is an in-memory Export with switchable features, a gate that
// holds I/O at chosen offsets until released, and error injection.
type memExport struct {
	mu   sync.RWMutex
	data []byte
	feat Features

	gateOff  atomic.Int64 // I/O starting at this offset waits on gate; -1 off
	gate     chan struct{}
	entered  chan int64   // receives the offset of each gated call
	failOff  atomic.Int64 // ReadAt/WriteAt covering this offset fail with EIO; -1 off
	flushes  atomic.Int64
	lastZero atomic.Value // ZeroFlags
}

func newMemExport(size int64, feat Features) *memExport {
	e := &memExport{data: make([]byte, size), feat: feat, gate: make(chan struct{}), entered: make(chan int64, 16)}
	e.gateOff.Store(-1)
	e.failOff.Store(-1)
	return e
}

var allFeatures = Features{Flush: true, Trim: true, WriteZeroes: true, FastZero: true, Cache: true, Extents: true, MultiConn: true}

func (e *memExport) Size() int64        { return int64(len(e.data)) }
func (e *memExport) Features() Features { return e.feat }

func (e *memExport) hold(ctx context.Context, off int64, n int) error {
	if g := e.gateOff.Load(); g >= 0 && off == g {
		e.entered <- off
		select {
		case <-e.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if f := e.failOff.Load(); f >= off && f < off+int64(n) {
		return fmt.Errorf("injected failure at %d: %w", f, syscall.EIO)
	}
	return nil
}

func (e *memExport) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := e.hold(ctx, off, len(p)); err != nil {
		return err
	}
	e.mu.RLock()
	copy(p, e.data[off:])
	e.mu.RUnlock()
	return nil
}

func (e *memExport) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if err := e.hold(ctx, off, len(p)); err != nil {
		return err
	}
	e.mu.Lock()
	copy(e.data[off:], p)
	e.mu.Unlock()
	return nil
}

func (e *memExport) Flush(ctx context.Context) error { e.flushes.Add(1); return nil }

func (e *memExport) Trim(ctx context.Context, off, length int64, fua bool) error {
	e.mu.Lock()
	clear(e.data[off : off+length])
	e.mu.Unlock()
	return nil
}

func (e *memExport) WriteZeroes(ctx context.Context, off, length int64, f ZeroFlags) error {
	e.lastZero.Store(f)
	if f.FastZero && !e.feat.FastZero {
		return syscall.ENOTSUP
	}
	e.mu.Lock()
	clear(e.data[off : off+length])
	e.mu.Unlock()
	return nil
}

func (e *memExport) Cache(ctx context.Context, off, length int64) error { return nil }

// Extents reports 4 KiB blocks that are all zeros as HOLE|ZERO.
func (e *memExport) Extents(ctx context.Context, off, length int64, dst []Extent) ([]Extent, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	end := off + length
	first := len(dst)
	for off < end {
		next := min((off/4096+1)*4096, int64(len(e.data)))
		var fl ExtentFlags
		if isZeroBytes(e.data[off&^4095 : next]) {
			fl = ExtentHole | ExtentZero
		}
		l := next - off
		if k := len(dst); k > first && dst[k-1].Flags == fl {
			dst[k-1].Length += l
		} else {
			dst = append(dst, Extent{Length: l, Flags: fl})
		}
		off = next
	}
	return dst, nil
}

// pinExport serves a memExport's READs through PinRead. Each call hands
// out views of a private snapshot, split at 4 KiB boundaries like RAM
// pages; Release poisons the snapshot, so data sent after its Release
// reaches the client as 0xEE garbage, and counts, so a missed or double
// Release fails the test.
type pinExport struct {
	*memExport
	outstanding atomic.Int64 // pins not yet released
	pinned      atomic.Int64 // pins handed out
	doubles     atomic.Int64 // Release calls on a released pin
}

type testPin struct {
	e        *pinExport
	buf      []byte
	released atomic.Bool
}

func (p *testPin) Release() {
	if p.released.Swap(true) {
		p.e.doubles.Add(1)
		return
	}
	for i := range p.buf {
		p.buf[i] = 0xEE
	}
	p.e.outstanding.Add(-1)
}

func (e *pinExport) PinRead(ctx context.Context, off, length int64, iov [][]byte) ([][]byte, Pin, error) {
	if err := e.hold(ctx, off, int(length)); err != nil {
		return iov, nil, err
	}
	buf := make([]byte, length)
	e.mu.RLock()
	copy(buf, e.data[off:])
	e.mu.RUnlock()
	for pos := int64(0); pos < length; {
		n := min(4096-(off+pos)%4096, length-pos)
		iov = append(iov, buf[pos:pos+n])
		pos += n
	}
	e.outstanding.Add(1)
	e.pinned.Add(1)
	return iov, &testPin{e: e, buf: buf}, nil
}

// checkReleased fails t unless every pin was released exactly once
// (allowing a moment for replies still being recycled).
func (e *pinExport) checkReleased(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for e.outstanding.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := e.outstanding.Load(); n != 0 {
		t.Errorf("%d of %d pins never released", n, e.pinned.Load())
	}
	if n := e.doubles.Load(); n != 0 {
		t.Errorf("%d pins released twice", n)
	}
}

func isZeroBytes(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// testServer starts a server on a loopback TCP port.
type testServer struct {
	srv      *Server
	addr     string
	exports  *ExportSet
	serveErr chan error
}

func quietLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// pinMemExports makes startServer serve every *memExport through a
// pinExport, so the READ path under test is the zero-copy one. Set only by
// modes, around a subtest (no test here runs in parallel).
var pinMemExports bool

func startServer(t testing.TB, opts Options, exports map[string]Export) *testServer {
	t.Helper()
	set := NewExportSet()
	var pins []*pinExport
	for _, name := range sortedKeys(exports) {
		exp := exports[name]
		if me, ok := exp.(*memExport); ok && pinMemExports {
			pe := &pinExport{memExport: me}
			pins = append(pins, pe)
			exp = pe
		}
		if err := set.Add(name, "desc of "+name, exp); err != nil {
			t.Fatal(err)
		}
	}
	if len(pins) > 0 {
		// Runs after the Shutdown registered below: every pin released
		// exactly once by then.
		t.Cleanup(func() {
			for _, pe := range pins {
				pe.checkReleased(t)
			}
		})
	}
	if opts.Exports == nil {
		opts.Exports = set
	}
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	srv, err := NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{srv: srv, addr: ln.Addr().String(), exports: set, serveErr: make(chan error, 1)}
	go func() { ts.serveErr <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return ts
}

func sortedKeys(m map[string]Export) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	for i := range ks {
		for j := i + 1; j < len(ks); j++ {
			if ks[j] < ks[i] {
				ks[i], ks[j] = ks[j], ks[i]
			}
		}
	}
	return ks
}

// client is a test NBD client.
type client struct {
	t       testing.TB
	c       net.Conn
	br      *bufio.Reader
	sr      bool
	pending map[uint64]uint32 // READ cookie -> length, for simple replies
	size    uint64
	flags   uint16
	// batch, while non-nil, collects what write would send (see sendBatch).
	batch []byte
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	cl := &client{t: t, c: c, br: bufio.NewReader(c), pending: map[uint64]uint32{}}
	var g [greetingLen]byte
	if _, err := io.ReadFull(cl.br, g[:]); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	if be64(g[:]) != nbdMagic || be64(g[8:]) != optMagic || be16(g[16:]) != flagFixedNewstyle|flagNoZeroes {
		t.Fatalf("bad greeting % x", g)
	}
	return cl
}

func (c *client) write(b []byte) {
	c.t.Helper()
	if c.batch != nil {
		c.batch = append(c.batch, b...)
		return
	}
	if _, err := c.c.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// sendBatch sends everything fn writes in one write, so the server finds
// the requests queued together however fast it reads.
func (c *client) sendBatch(fn func()) {
	c.t.Helper()
	c.batch = make([]byte, 0, 4096)
	fn()
	b := c.batch
	c.batch = nil
	c.write(b)
}

func (c *client) sendFlags(f uint32) {
	var b [4]byte
	put32(b[:], f)
	c.write(b[:])
}

func (c *client) sendOpt(opt uint32, data []byte) {
	b := make([]byte, 16, 16+len(data))
	put64(b, optMagic)
	put32(b[8:], opt)
	put32(b[12:], uint32(len(data)))
	c.write(append(b, data...))
}

type optRep struct {
	opt, typ uint32
	data     []byte
}

func (c *client) readOptRep() (optRep, error) {
	var h [optReplyHeaderLen]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return optRep{}, err
	}
	if be64(h[:]) != optReplyMagic {
		return optRep{}, fmt.Errorf("bad option reply magic % x", h[:8])
	}
	r := optRep{opt: be32(h[8:]), typ: be32(h[12:]), data: make([]byte, be32(h[16:]))}
	_, err := io.ReadFull(c.br, r.data)
	return r, err
}

// optReplies reads replies to opt until ACK or an error reply.
func (c *client) optReplies(opt uint32) []optRep {
	c.t.Helper()
	var out []optRep
	for {
		r, err := c.readOptRep()
		if err != nil {
			c.t.Fatalf("option %s reply: %v", optionName(opt), err)
		}
		if r.opt != opt {
			c.t.Fatalf("reply for option %d, want %d", r.opt, opt)
		}
		out = append(out, r)
		if r.typ == repAck || r.typ&(1<<31) != 0 {
			return out
		}
	}
}

// last returns the final reply type.
func lastType(rs []optRep) uint32 { return rs[len(rs)-1].typ }

func infoData(name string, infos ...uint16) []byte {
	b := make([]byte, 4, 6+len(name)+2*len(infos))
	put32(b, uint32(len(name)))
	b = append(b, name...)
	b = append(b, byte(len(infos)>>8), byte(len(infos)))
	for _, i := range infos {
		b = append(b, byte(i>>8), byte(i))
	}
	return b
}

func metaData(name string, queries ...string) []byte {
	b := make([]byte, 4, 64)
	put32(b, uint32(len(name)))
	b = append(b, name...)
	b = put32a(b, uint32(len(queries)))
	for _, q := range queries {
		b = put32a(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

func put32a(b []byte, v uint32) []byte {
	return append(b, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// expectClosed asserts the server closes the connection without sending
// anything more.
func (c *client) expectClosed() {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := c.br.ReadByte()
	if err == nil {
		c.t.Fatalf("server sent %#x, want the connection closed", b)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("server did not close the connection")
	}
}

// goExport sends GO and returns the replies; on success the client is in
// transmission.
func (c *client) goExport(name string, infos ...uint16) []optRep {
	c.t.Helper()
	c.sendOpt(optGo, infoData(name, infos...))
	rs := c.optReplies(optGo)
	for _, r := range rs {
		if r.typ == repInfo && be16(r.data) == infoExport {
			c.size = be64(r.data[2:])
			c.flags = be16(r.data[10:])
		}
	}
	return rs
}

// open does the usual handshake: flags, optionally SR and
// base:allocation, GO on name.
func (c *client) open(name string, sr, meta bool) {
	c.t.Helper()
	c.sendFlags(clientFixedNewstyle | clientNoZeroes)
	c.connect(name, sr, meta)
}

// connect is open after the client flags.
func (c *client) connect(name string, sr, meta bool) {
	c.t.Helper()
	if sr {
		c.sendOpt(optStructuredReply, nil)
		if rs := c.optReplies(optStructuredReply); lastType(rs) != repAck {
			c.t.Fatalf("STRUCTURED_REPLY: %#x", lastType(rs))
		}
		c.sr = true
	}
	if meta {
		c.sendOpt(optSetMetaContext, metaData(name, metaContextBaseAllocation))
		if rs := c.optReplies(optSetMetaContext); len(rs) != 2 || rs[0].typ != repMetaContext {
			c.t.Fatalf("SET_META_CONTEXT replies %+v", rs)
		}
	}
	if rs := c.goExport(name, infoBlockSize); lastType(rs) != repAck {
		c.t.Fatalf("GO: %#x %q", lastType(rs), rs[len(rs)-1].data)
	}
}

func (c *client) request(typ, flags uint16, cookie, off uint64, length uint32, payload []byte) {
	c.t.Helper()
	b := make([]byte, requestLen, requestLen+len(payload))
	put32(b, requestMagic)
	put16(b[4:], flags)
	put16(b[6:], typ)
	put64(b[8:], cookie)
	put64(b[16:], off)
	put32(b[24:], length)
	if typ == cmdRead {
		c.pending[cookie] = length
	}
	c.write(append(b, payload...))
}

type chunk struct {
	flags, typ uint16
	payload    []byte
}

type reply struct {
	cookie uint64
	simple bool
	errno  uint32
	data   []byte // simple READ data
	chunks []chunk
	msg    string
}

// readReply reads one whole reply (all chunks until DONE).
func (c *client) readReply() (reply, error) {
	var r reply
	for {
		var m [4]byte
		if _, err := io.ReadFull(c.br, m[:]); err != nil {
			return r, err
		}
		switch be32(m[:]) {
		case simpleMagic:
			var h [12]byte
			if _, err := io.ReadFull(c.br, h[:]); err != nil {
				return r, err
			}
			r.simple = true
			r.errno = be32(h[:])
			r.cookie = be64(h[4:])
			if n, ok := c.pending[r.cookie]; ok {
				delete(c.pending, r.cookie)
				if r.errno == 0 {
					r.data = make([]byte, n)
					if _, err := io.ReadFull(c.br, r.data); err != nil {
						return r, err
					}
				}
			}
			return r, nil
		case structMagic:
			var h [16]byte
			if _, err := io.ReadFull(c.br, h[:]); err != nil {
				return r, err
			}
			ck := chunk{flags: be16(h[:]), typ: be16(h[2:]), payload: make([]byte, be32(h[12:]))}
			cookie := be64(h[4:])
			if len(r.chunks) > 0 && cookie != r.cookie {
				return r, fmt.Errorf("chunks of cookies %d and %d interleaved", r.cookie, cookie)
			}
			r.cookie = cookie
			if _, err := io.ReadFull(c.br, ck.payload); err != nil {
				return r, err
			}
			if ck.typ&0x8000 != 0 {
				r.errno = be32(ck.payload)
				r.msg = string(ck.payload[6 : 6+be16(ck.payload[4:])])
			}
			r.chunks = append(r.chunks, ck)
			if ck.flags&replyFlagDone != 0 {
				delete(c.pending, r.cookie)
				return r, nil
			}
		default:
			return r, fmt.Errorf("bad reply magic % x", m)
		}
	}
}

func (c *client) mustReply() reply {
	c.t.Helper()
	r, err := c.readReply()
	if err != nil {
		c.t.Fatalf("reading reply: %v", err)
	}
	return r
}

// do sends a request and reads its reply.
func (c *client) do(typ, flags uint16, off uint64, length uint32, payload []byte) reply {
	c.t.Helper()
	c.request(typ, flags, 77, off, length, payload)
	r := c.mustReply()
	if r.cookie != 77 {
		c.t.Fatalf("reply cookie %d, want 77", r.cookie)
	}
	return r
}

// readData assembles the data of a successful READ reply, checking the
// structured chunks cover [off, off+length) exactly once.
func (c *client) readData(r reply, off uint64, length uint32) []byte {
	c.t.Helper()
	if r.errno != 0 {
		c.t.Fatalf("READ failed: errno %d %q", r.errno, r.msg)
	}
	if r.simple {
		if c.sr {
			c.t.Fatalf("simple reply to READ with structured replies negotiated")
		}
		return r.data
	}
	out := make([]byte, length)
	covered := make([]bool, length)
	mark := func(o uint64, n int) {
		if o < off || o+uint64(n) > off+uint64(length) {
			c.t.Fatalf("chunk [%d,+%d) outside request [%d,+%d)", o, n, off, length)
		}
		for i := range n {
			if covered[o-off+uint64(i)] {
				c.t.Fatalf("chunk overlaps at %d", o+uint64(i))
			}
			covered[o-off+uint64(i)] = true
		}
	}
	for _, ck := range r.chunks {
		switch ck.typ {
		case chunkOffsetData:
			o := be64(ck.payload)
			mark(o, len(ck.payload)-8)
			copy(out[o-off:], ck.payload[8:])
		case chunkOffsetHole:
			if len(ck.payload) != 12 {
				c.t.Fatalf("hole chunk of %d bytes", len(ck.payload))
			}
			mark(be64(ck.payload), int(be32(ck.payload[8:])))
		case chunkNone:
		default:
			c.t.Fatalf("unexpected chunk type %d", ck.typ)
		}
	}
	for i, ok := range covered {
		if !ok {
			c.t.Fatalf("byte %d of READ not covered", i)
		}
	}
	return out
}

func (c *client) read(off uint64, length uint32) []byte {
	c.t.Helper()
	return c.readData(c.do(cmdRead, 0, off, length, nil), off, length)
}

func (c *client) mustOK(r reply) {
	c.t.Helper()
	if r.errno != 0 {
		c.t.Fatalf("errno %d (%s) %q, want success", r.errno, errnoName(r.errno), r.msg)
	}
}

// startTLS sends STARTTLS and runs the client side of the handshake.
func (c *client) startTLS(cfg *tls.Config) error {
	c.sendOpt(optStartTLS, nil)
	rs := c.optReplies(optStartTLS)
	if lastType(rs) != repAck {
		return fmt.Errorf("STARTTLS answered %#x", lastType(rs))
	}
	tc := tls.Client(c.c, cfg)
	if err := tc.Handshake(); err != nil {
		return err
	}
	// A TLS 1.3 server may reject the certificate after the client's
	// handshake finished; make it show up now.
	c.c = tc
	c.br = bufio.NewReader(tc)
	return nil
}

var timeZero time.Time
