package nbd

import (
	"bytes"
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// modes runs f with the export's calls on workers and inline on the
// reader (Features.NonBlocking), each with READ data copied (ReadAt) and
// pinned (PinReader, zero-copy).
func modes(t *testing.T, f func(t *testing.T, feat Features)) {
	for _, pin := range []bool{false, true} {
		for _, nb := range []bool{false, true} {
			name := map[bool]string{false: "workers", true: "inline"}[nb]
			if pin {
				name += "-pinned"
			}
			t.Run(name, func(t *testing.T) {
				pinMemExports = pin
				defer func() { pinMemExports = false }()
				feat := allFeatures
				feat.NonBlocking = nb
				f(t, feat)
			})
		}
	}
}

func TestCommands(t *testing.T) { modes(t, testCommands) }

func testCommands(t *testing.T, feat Features) {
	for _, sr := range []bool{false, true} {
		t.Run(map[bool]string{false: "simple", true: "structured"}[sr], func(t *testing.T) {
			exp := newMemExport(1<<20, feat)
			ts := startServer(t, Options{}, map[string]Export{"a": exp})
			c := dial(t, ts.addr)
			c.open("a", sr, sr)
			want := tflagHasFlags | tflagSendFlush | tflagSendFUA | tflagSendTrim | tflagSendWriteZeroes | tflagCanMultiConn | tflagSendCache | tflagSendFastZero
			if sr {
				want |= tflagSendDF
			}
			if c.flags != uint16(want) || c.size != 1<<20 {
				t.Fatalf("flags %#x want %#x, size %d", c.flags, want, c.size)
			}
			p := pattern(8192, 3)
			c.mustOK(c.do(cmdWrite, 0, 4096, 8192, p))
			c.mustOK(c.do(cmdWrite, cmdFlagFUA, 65536, 4096, p[:4096]))
			if got := c.read(4096, 8192); !bytes.Equal(got, p) {
				t.Fatalf("read back differs")
			}
			// FUA is accepted on every command when SEND_FUA is advertised.
			c.readData(c.do(cmdRead, cmdFlagFUA, 0, 512, nil), 0, 512)
			c.mustOK(c.do(cmdFlush, 0, 0, 0, nil))
			c.mustOK(c.do(cmdFlush, cmdFlagFUA, 0, 0, nil))
			if exp.flushes.Load() != 2 {
				t.Errorf("flushes %d", exp.flushes.Load())
			}
			c.mustOK(c.do(cmdTrim, 0, 4096, 4096, nil))
			if got := c.read(4096, 4096); !bytes.Equal(got, make([]byte, 4096)) {
				t.Errorf("trimmed range not zero")
			}
			c.mustOK(c.do(cmdWriteZeroes, cmdFlagNoHole|cmdFlagFUA, 8192, 100, nil))
			if f := exp.lastZero.Load().(ZeroFlags); !f.NoHole || !f.FUA || f.FastZero {
				t.Errorf("zero flags %+v", f)
			}
			c.mustOK(c.do(cmdWriteZeroes, cmdFlagFastZero, 8192, 4096, nil))
			if got := c.read(8192, 4096); !bytes.Equal(got, make([]byte, 4096)) {
				t.Errorf("zeroed range not zero")
			}
			c.mustOK(c.do(cmdCache, cmdFlagFUA, 0, 1<<20, nil))
			// Length 0 is a successful no-op.
			for _, typ := range []uint16{cmdWrite, cmdTrim, cmdWriteZeroes, cmdCache} {
				c.mustOK(c.do(typ, 0, 4096, 0, nil))
			}
			r := c.do(cmdRead, 0, 4096, 0, nil)
			c.mustOK(r)
			if sr && (len(r.chunks) != 1 || r.chunks[0].typ != chunkNone) {
				t.Errorf("READ of 0 bytes: %+v", r.chunks)
			}
			// Payload-less commands may exceed the maximum payload.
			c.mustOK(c.do(cmdWriteZeroes, 0, 0, 1<<20, nil))
			// DISC: no reply, connection closed.
			c.request(cmdDisc, 0, 1, 0, 0, nil)
			c.expectClosed()
		})
	}
}

func TestStructuredRead(t *testing.T) { modes(t, testStructuredRead) }

func testStructuredRead(t *testing.T, feat Features) {
	exp := newMemExport(1<<20, feat)
	ts := startServer(t, Options{}, map[string]Export{"a": exp})
	c := dial(t, ts.addr)
	c.open("a", true, true)
	const k = 64 << 10
	p := pattern(k, 9)
	c.mustOK(c.do(cmdWrite, 0, 2*k, k, p))
	// [0,128K) zero, [128K,192K) data, [192K,256K) zero: hole, data, hole.
	r := c.do(cmdRead, 0, 0, 4*k, nil)
	got := c.readData(r, 0, 4*k)
	if !bytes.Equal(got[2*k:3*k], p) || !bytes.Equal(got[:2*k], make([]byte, 2*k)) {
		t.Fatalf("sparse read content wrong")
	}
	var types []uint16
	for _, ck := range r.chunks {
		types = append(types, ck.typ)
	}
	if len(types) != 3 || types[0] != chunkOffsetHole || types[1] != chunkOffsetData || types[2] != chunkOffsetHole {
		t.Errorf("chunk types %v", types)
	}
	for i, ck := range r.chunks {
		if done := ck.flags&replyFlagDone != 0; done != (i == len(r.chunks)-1) {
			t.Errorf("chunk %d DONE=%v", i, done)
		}
	}
	// DF: exactly one data chunk.
	r = c.do(cmdRead, cmdFlagDF, 0, 4*k, nil)
	got = c.readData(r, 0, 4*k)
	if len(r.chunks) != 1 || r.chunks[0].typ != chunkOffsetData || !bytes.Equal(got[2*k:3*k], p) {
		t.Errorf("DF read: %d chunks", len(r.chunks))
	}
	// Small reads are sent dense.
	r = c.do(cmdRead, 0, 0, 4096, nil)
	if len(r.chunks) != 1 || r.chunks[0].typ != chunkOffsetData {
		t.Errorf("small read chunks %+v", r.chunks)
	}
	// All zeros: a single hole.
	r = c.do(cmdRead, 0, 4*k, k, nil)
	c.readData(r, 4*k, k)
	if len(r.chunks) != 1 || r.chunks[0].typ != chunkOffsetHole {
		t.Errorf("zero read chunks %+v", r.chunks)
	}
	p = p[:4096]
	// Many alternating extents: bounded chunk count, still exact.
	for i := 0; i < 100; i++ {
		c.mustOK(c.do(cmdWrite, 0, uint64(131072+8192*i), 4096, p))
	}
	r = c.do(cmdRead, 0, 131072, 8192*100, nil)
	got = c.readData(r, 131072, 8192*100)
	if len(r.chunks) > maxReadChunks+1 {
		t.Errorf("%d chunks", len(r.chunks))
	}
	for i := 0; i < 100; i++ {
		if !bytes.Equal(got[8192*i:8192*i+4096], p) {
			t.Fatalf("block %d wrong", i)
		}
	}
	// Dense reads when asked.
	ts2 := startServer(t, Options{DenseReads: true}, map[string]Export{"a": exp})
	c2 := dial(t, ts2.addr)
	c2.open("a", true, false)
	if r := c2.do(cmdRead, 0, 0, 4*k, nil); len(r.chunks) != 1 || r.chunks[0].typ != chunkOffsetData {
		t.Errorf("dense read: %+v", r.chunks)
	}
}

func TestReadError(t *testing.T) {
	for _, pin := range []bool{false, true} {
		t.Run(map[bool]string{false: "copied", true: "pinned"}[pin], func(t *testing.T) {
			pinMemExports = pin
			defer func() { pinMemExports = false }()
			testReadError(t)
		})
	}
}

func testReadError(t *testing.T) {
	exp := newMemExport(1<<20, allFeatures)
	ts := startServer(t, Options{}, map[string]Export{"a": exp})
	// Simple: error reply without data, connection stays up.
	c := dial(t, ts.addr)
	c.open("a", false, false)
	c.mustOK(c.do(cmdWrite, 0, 4096, 4096, pattern(4096, 1)))
	exp.failOff.Store(5000)
	if r := c.do(cmdRead, 0, 4096, 4096, nil); r.errno != errIO || len(r.data) != 0 {
		t.Errorf("simple read error: %+v", r)
	}
	if r := c.do(cmdWrite, 0, 4096, 4096, pattern(4096, 1)); r.errno != errIO {
		t.Errorf("write error: %+v", r)
	}
	c.read(0, 512)
	// Structured: an ERROR chunk with a short message, never a simple reply.
	c = dial(t, ts.addr)
	c.open("a", true, true)
	r := c.do(cmdRead, 0, 4096, 4096, nil)
	if r.simple || r.errno != errIO || len(r.chunks) != 1 || r.chunks[0].typ != chunkError || len(r.chunks[0].payload) > 1000 || r.msg == "" {
		t.Errorf("structured read error: %+v", r)
	}
	c.read(0, 512)
}

func TestBlockStatus(t *testing.T) { modes(t, testBlockStatus) }

func testBlockStatus(t *testing.T, feat Features) {
	exp := newMemExport(1<<20, feat)
	ts := startServer(t, Options{MaxExtents: 4}, map[string]Export{"a": exp})
	c := dial(t, ts.addr)
	c.open("a", true, true)
	for _, off := range []uint64{8192, 12288, 32768} {
		c.mustOK(c.do(cmdWrite, 0, off, 4096, pattern(4096, 1)))
	}
	type desc struct{ len, flags uint32 }
	parse := func(r reply) []desc {
		t.Helper()
		c.mustOK(r)
		if len(r.chunks) != 1 || r.chunks[0].typ != chunkBlockStatus || r.chunks[0].flags&replyFlagDone == 0 {
			t.Fatalf("block status chunks %+v", r.chunks)
		}
		p := r.chunks[0].payload
		if be32(p) != baseAllocationID || (len(p)-4)%8 != 0 {
			t.Fatalf("payload %x", p)
		}
		var out []desc
		for p = p[4:]; len(p) > 0; p = p[8:] {
			out = append(out, desc{be32(p), be32(p[4:])})
		}
		return out
	}
	hz := uint32(ExtentHole | ExtentZero)
	got := parse(c.do(cmdBlockStatus, 0, 0, 65536, nil))
	want := []desc{{8192, hz}, {8192, 0}, {16384, hz}, {4096, 0}}
	if len(got) != len(want) {
		t.Fatalf("descriptors %v want %v (MaxExtents 4 cuts the tail)", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("descriptor %d: %v want %v", i, got[i], want[i])
		}
	}
	// REQ_ONE: one descriptor, clipped to the request.
	got = parse(c.do(cmdBlockStatus, cmdFlagReqOne, 0, 4096, nil))
	if len(got) != 1 || got[0] != (desc{4096, hz}) {
		t.Errorf("REQ_ONE: %v", got)
	}
	got = parse(c.do(cmdBlockStatus, cmdFlagReqOne, 8192, 65536, nil))
	if len(got) != 1 || got[0] != (desc{8192, 0}) {
		t.Errorf("REQ_ONE coalesced: %v", got)
	}
	// Tail: clipped at the end of the request and the export.
	got = parse(c.do(cmdBlockStatus, 0, 1<<20-4096, 4096, nil))
	if len(got) != 1 || got[0] != (desc{4096, hz}) {
		t.Errorf("tail: %v", got)
	}
}

// TestBadRequests covers the transmission rows of the checklist's §1.10:
// each bad request gets its prescribed error and the connection goes on
// (the follow-up READ proves the stream is in sync), or is dropped.
func TestBadRequests(t *testing.T) { modes(t, testBadRequests) }

func testBadRequests(t *testing.T, feat Features) {
	exports := map[string]Export{
		"rw":      newMemExport(1<<20, feat),
		"ro":      newMemExport(1<<20, Features{ReadOnly: true, Flush: true, Extents: true}),
		"plain":   newMemExport(1<<20, Features{}),
		"aligned": newMemExport(1<<20, Features{Flush: true, BlockSize: BlockSize{Min: 512}}),
		"nofast":  newMemExport(1<<20, Features{WriteZeroes: true}),
	}
	ts := startServer(t, Options{MaxPayload: 64 << 10}, exports)
	for _, tc := range []struct {
		name    string
		export  string
		sr      bool
		meta    bool
		typ     uint16
		flags   uint16
		off     uint64
		length  uint32
		payload bool // send length bytes of WRITE payload
		errno   uint32
		drop    bool
	}{
		{name: "unknown command", export: "rw", typ: 99, length: 4096, errno: errInval},
		{name: "RESIZE unsupported", export: "rw", typ: 8, off: 4096, errno: errInval},
		{name: "unknown flag", export: "rw", typ: cmdRead, flags: 1 << 9, length: 512, errno: errInval},
		{name: "inapplicable flag", export: "rw", typ: cmdWrite, flags: cmdFlagNoHole, length: 512, payload: true, errno: errInval},
		{name: "DF without SR", export: "rw", typ: cmdRead, flags: cmdFlagDF, length: 512, errno: errInval},
		{name: "REQ_ONE on READ", export: "rw", sr: true, typ: cmdRead, flags: cmdFlagReqOne, length: 512, errno: errInval},
		{name: "FUA unadvertised", export: "plain", typ: cmdWrite, flags: cmdFlagFUA, length: 512, payload: true, errno: errInval},
		{name: "FAST_ZERO unadvertised", export: "nofast", typ: cmdWriteZeroes, flags: cmdFlagFastZero, length: 512, errno: errInval},
		{name: "read past end", export: "rw", typ: cmdRead, off: 1<<20 - 512, length: 1024, errno: errInval},
		{name: "read offset overflow", export: "rw", typ: cmdRead, off: 1<<64 - 512, length: 1024, errno: errInval},
		{name: "write past end", export: "rw", typ: cmdWrite, off: 1 << 20, length: 512, payload: true, errno: errNoSpc},
		{name: "zero past end", export: "rw", typ: cmdWriteZeroes, off: 1 << 20, length: 512, errno: errNoSpc},
		{name: "trim past end", export: "rw", typ: cmdTrim, off: 1 << 20, length: 512, errno: errInval},
		{name: "cache past end", export: "rw", typ: cmdCache, off: 1 << 20, length: 512, errno: errInval},
		{name: "block status past end", export: "rw", sr: true, meta: true, typ: cmdBlockStatus, off: 1 << 20, length: 512, errno: errInval},
		{name: "misaligned read", export: "aligned", typ: cmdRead, off: 100, length: 512, errno: errInval},
		{name: "misaligned write", export: "aligned", typ: cmdWrite, off: 512, length: 100, payload: true, errno: errInval},
		{name: "oversize read", export: "rw", typ: cmdRead, length: 64<<10 + 1, errno: errInval},
		{name: "oversize read SR", export: "rw", sr: true, typ: cmdRead, length: 64<<10 + 1, errno: errInval},
		{name: "oversize write drained", export: "rw", typ: cmdWrite, length: 100 << 10, payload: true, errno: errInval},
		{name: "huge write dropped", export: "rw", typ: cmdWrite, length: 200 << 10, drop: true},
		{name: "flush unadvertised", export: "plain", typ: cmdFlush, errno: errInval},
		{name: "trim unadvertised", export: "plain", typ: cmdTrim, length: 512, errno: errInval},
		{name: "zero unadvertised", export: "plain", typ: cmdWriteZeroes, length: 512, errno: errInval},
		{name: "cache unadvertised", export: "plain", typ: cmdCache, length: 512, errno: errInval},
		{name: "block status unadvertised", export: "plain", sr: true, meta: false, typ: cmdBlockStatus, length: 512, errno: errInval},
		{name: "block status without context", export: "rw", sr: true, typ: cmdBlockStatus, length: 512, errno: errInval},
		{name: "block status length 0", export: "rw", sr: true, meta: true, typ: cmdBlockStatus, errno: errInval},
		{name: "write read-only", export: "ro", typ: cmdWrite, length: 4096, payload: true, errno: errPerm},
		{name: "write read-only SR", export: "ro", sr: true, typ: cmdWrite, length: 4096, payload: true, errno: errPerm},
		{name: "trim read-only", export: "ro", typ: cmdTrim, length: 4096, errno: errPerm},
		{name: "zero read-only", export: "ro", typ: cmdWriteZeroes, length: 4096, errno: errPerm},
		{name: "flush with offset", export: "rw", typ: cmdFlush, off: 512, errno: errInval},
		{name: "flush with length", export: "rw", typ: cmdFlush, length: 512, errno: errInval},
		{name: "bad magic", export: "rw", typ: 0xffff, drop: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, ts.addr)
			c.open(tc.export, tc.sr, tc.meta)
			var payload []byte
			if tc.payload {
				payload = pattern(int(tc.length), 5)
			}
			if tc.typ == 0xffff {
				c.write(make([]byte, requestLen))
				c.expectClosed()
				return
			}
			c.request(tc.typ, tc.flags, 5, tc.off, tc.length, payload)
			if tc.drop {
				// The server may not read the payload; just expect EOF.
				c.expectClosed()
				return
			}
			r := c.mustReply()
			if r.cookie != 5 || r.errno != tc.errno {
				t.Fatalf("reply cookie %d errno %d (%s) %q, want errno %d (%s)", r.cookie, r.errno, errnoName(r.errno), r.msg, tc.errno, errnoName(tc.errno))
			}
			if tc.sr {
				if r.simple && tc.typ == cmdRead {
					t.Errorf("simple error reply to READ under SR")
				}
				if !r.simple && r.msg == "" {
					t.Errorf("structured error without message")
				}
			}
			if !tc.sr && !r.simple {
				t.Errorf("structured reply without SR")
			}
			// The stream is still in sync.
			c.read(0, 512)
		})
	}
	st := ts.srv.Stats()
	if st.Errors["EINVAL"] == 0 || st.Errors["EPERM"] == 0 || st.Errors["ENOSPC"] == 0 || st.Commands["read"].Requests == 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestOutOfOrder holds the first READ in the export and checks that the
// second one's reply overtakes it.
func TestOutOfOrder(t *testing.T) {
	exp := newMemExport(1<<20, allFeatures)
	ts := startServer(t, Options{}, map[string]Export{"a": exp})
	c := dial(t, ts.addr)
	c.open("a", true, false)
	c.mustOK(c.do(cmdWrite, 0, 0, 8192, pattern(8192, 1)))
	exp.gateOff.Store(0)
	c.request(cmdRead, 0, 1, 0, 4096, nil)
	<-exp.entered
	c.request(cmdRead, 0, 2, 4096, 4096, nil)
	c.request(cmdWrite, 0, 3, 8192, 4096, pattern(4096, 1))
	got := map[uint64]bool{}
	for range 2 {
		r := c.mustReply()
		if r.cookie == 1 {
			t.Fatalf("held request answered first")
		}
		got[r.cookie] = true
	}
	close(exp.gate)
	if r := c.mustReply(); r.cookie != 1 || r.errno != 0 {
		t.Fatalf("held reply %+v", r)
	}
	if !got[2] || !got[3] {
		t.Errorf("replies %v", got)
	}
}

// TestConcurrentModel runs several connections, each with many requests
// in flight on its own region, against a model, under -race.
func TestConcurrentModel(t *testing.T) { modes(t, testConcurrentModel) }

func testConcurrentModel(t *testing.T, feat Features) {
	const region = 256 << 10
	const conns = 4
	exp := newMemExport(conns*region, feat)
	ts := startServer(t, Options{MaxInFlight: 8, MaxInFlightBytes: 64 << 10}, map[string]Export{"a": exp})
	var wg sync.WaitGroup
	for ci := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(ci), 1))
			c := dial(t, ts.addr)
			c.open("a", ci%2 == 0, false)
			base := uint64(ci * region)
			model := make([]byte, region)
			for round := 0; round < 20; round++ {
				// A burst of writes to distinct blocks, in flight together.
				type w struct {
					off  uint64
					data []byte
				}
				var ws []w
				perm := rng.Perm(region / 4096)[:16]
				for i, blk := range perm {
					n := 512 * (1 + rng.IntN(8))
					d := make([]byte, n)
					for k := range d {
						d[k] = byte(rng.Uint32())
					}
					ws = append(ws, w{uint64(blk * 4096), d})
					c.request(cmdWrite, 0, uint64(i), base+uint64(blk*4096), uint32(n), d)
				}
				seen := map[uint64]bool{}
				for range ws {
					r := c.mustReply()
					if r.errno != 0 || seen[r.cookie] {
						t.Errorf("write reply %+v", r)
						return
					}
					seen[r.cookie] = true
				}
				for _, x := range ws {
					copy(model[x.off:], x.data)
				}
				// Reads in flight together.
				offs := make(map[uint64]uint64)
				for i := range 16 {
					off := uint64(rng.IntN(region/512-64)) * 512
					offs[uint64(100+i)] = off
					c.request(cmdRead, 0, uint64(100+i), base+off, 32<<10, nil)
				}
				for range 16 {
					r := c.mustReply()
					off, ok := offs[r.cookie]
					if !ok {
						t.Errorf("unknown cookie %d", r.cookie)
						return
					}
					delete(offs, r.cookie)
					got := c.readData(r, base+off, 32<<10)
					if !bytes.Equal(got, model[off:off+32<<10]) {
						t.Errorf("conn %d round %d: read at %d differs from model", ci, round, off)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

func TestShutdownDrains(t *testing.T) {
	exp := newMemExport(1<<20, allFeatures)
	exp.gateOff.Store(0)
	ts := startServer(t, Options{}, map[string]Export{"a": exp})
	c := dial(t, ts.addr)
	c.open("a", false, false)
	neg := dial(t, ts.addr)
	neg.sendFlags(clientFixedNewstyle)
	c.request(cmdRead, 0, 1, 0, 4096, nil)
	<-exp.entered
	done := make(chan error, 1)
	go func() { done <- ts.srv.Shutdown(context.Background()) }()
	// New requests get ESHUTDOWN while the held one is in flight.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.request(cmdRead, 0, 2, 4096, 512, nil)
		r := c.mustReply()
		if r.errno == errShutdown {
			break
		}
		if r.cookie != 2 || time.Now().After(deadline) {
			t.Fatalf("reply %+v", r)
		}
	}
	// A negotiating connection gets ERR_SHUTDOWN.
	neg.sendOpt(optList, nil)
	if rs := neg.optReplies(optList); rs[0].typ != repErrShutdown {
		t.Errorf("option during shutdown: %#x", rs[0].typ)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(exp.gate)
	if r := c.mustReply(); r.cookie != 1 || r.errno != 0 || len(r.data) != 4096 {
		t.Fatalf("held reply %+v", r)
	}
	c.expectClosed()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-ts.serveErr; err != ErrServerClosed {
		t.Errorf("Serve returned %v", err)
	}
	if n := ts.srv.Stats().ConnectionsActive; n != 0 {
		t.Errorf("%d connections left", n)
	}
}

func TestShutdownDeadline(t *testing.T) {
	exp := newMemExport(1<<20, allFeatures)
	exp.gateOff.Store(0)
	ts := startServer(t, Options{}, map[string]Export{"a": exp})
	c := dial(t, ts.addr)
	c.open("a", false, false)
	c.request(cmdRead, 0, 1, 0, 4096, nil)
	<-exp.entered
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != context.DeadlineExceeded {
		t.Fatalf("Shutdown: %v", err)
	}
	c.expectClosed()
}

func TestMaxConnections(t *testing.T) {
	ts := startServer(t, Options{MaxConnections: 1}, map[string]Export{"a": newMemExport(4096, Features{})})
	c1 := dial(t, ts.addr)
	c1.open("a", false, false)
	c2 := dial(t, ts.addr)
	c2.sendFlags(clientFixedNewstyle)
	c2.sendOpt(optList, nil)
	if rs := c2.optReplies(optList); rs[0].typ != repErrPolicy {
		t.Errorf("over the limit: %#x", rs[0].typ)
	}
	c2.expectClosed()
	c1.read(0, 512)
	if ts.srv.Stats().ConnectionsRefused != 1 {
		t.Errorf("refused count %d", ts.srv.Stats().ConnectionsRefused)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	ts := startServer(t, Options{HandshakeTimeout: 100 * time.Millisecond}, map[string]Export{"a": newMemExport(4096, Features{})})
	c := dial(t, ts.addr)
	c.expectClosed()
}

// TestShutdownIdle: idle connections, inline or not, close promptly.
func TestShutdownIdle(t *testing.T) {
	inline := allFeatures
	inline.NonBlocking = true
	ts := startServer(t, Options{}, map[string]Export{"a": newMemExport(1<<20, allFeatures), "b": newMemExport(1<<20, inline)})
	var cs []*client
	for _, name := range []string{"a", "b"} {
		c := dial(t, ts.addr)
		c.open(name, true, false)
		c.read(0, 4096)
		cs = append(cs, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %v", d)
	}
	for _, c := range cs {
		c.expectClosed()
	}
}

// TestInlineWithWorkers mixes, on one connection to a NonBlocking export,
// small requests the reader runs inline (their replies held for one
// writev) with large ones that go to workers, whose writer may send the
// held replies. Under -race this caught the reader reading a held reply
// after a worker had sent and recycled it.
func TestInlineWithWorkers(t *testing.T) {
	for _, pin := range []bool{false, true} {
		t.Run(map[bool]string{false: "copied", true: "pinned"}[pin], func(t *testing.T) {
			pinMemExports = pin
			defer func() { pinMemExports = false }()
			testInlineWithWorkers(t)
		})
	}
}

func testInlineWithWorkers(t *testing.T) {
	feat := allFeatures
	feat.NonBlocking = true
	const big = 2 * maxInlineBytes // runs on a worker
	exp := newMemExport(8<<20, feat)
	ts := startServer(t, Options{}, map[string]Export{"a": exp})
	c := dial(t, ts.addr)
	c.open("a", true, false)
	model := make([]byte, 8<<20)
	for round := range 30 {
		const n = 48
		for i := range n {
			if i%3 == 2 {
				c.request(cmdRead, 0, uint64(i), uint64(4<<20), big, nil)
				continue
			}
			off := uint64((round*n + i) % 1024 * 4096)
			d := pattern(4096, byte(round+i))
			copy(model[off:], d)
			c.request(cmdWrite, 0, uint64(i), off, 4096, d)
		}
		for range n {
			r := c.mustReply()
			if r.errno != 0 {
				t.Fatalf("round %d: reply %+v", round, r)
			}
			if r.cookie%3 == 2 {
				if got := c.readData(r, 4<<20, big); !bytes.Equal(got, model[4<<20:4<<20+big]) {
					t.Fatalf("round %d: read differs", round)
				}
			}
		}
	}
	if got := c.read(0, 4<<20); !bytes.Equal(got, model[:4<<20]) {
		t.Fatalf("data differs from the model")
	}
}
