package nbd

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func twoExports(t *testing.T) *testServer {
	return startServer(t, Options{}, map[string]Export{
		"a": newMemExport(1<<20, allFeatures),
		"b": newMemExport(2<<20, Features{ReadOnly: true}),
	})
}

func TestClientFlags(t *testing.T) {
	ts := twoExports(t)
	for _, tc := range []struct {
		flags uint32
		ok    bool
	}{
		{0, true},
		{clientFixedNewstyle, true},
		{clientFixedNewstyle | clientNoZeroes, true},
		{clientNoZeroes, true},
		{1 << 2, false},
		{clientFixedNewstyle | 1<<31, false},
	} {
		c := dial(t, ts.addr)
		c.sendFlags(tc.flags)
		if !tc.ok {
			c.expectClosed()
			continue
		}
		c.sendOpt(optList, nil)
		if rs := c.optReplies(optList); lastType(rs) != repAck {
			t.Errorf("flags %#x: LIST ended %#x", tc.flags, lastType(rs))
		}
	}
}

func TestExportName(t *testing.T) {
	ts := twoExports(t)
	for _, noZeroes := range []bool{false, true} {
		c := dial(t, ts.addr)
		f := uint32(clientFixedNewstyle)
		if noZeroes {
			f |= clientNoZeroes
		}
		c.sendFlags(f)
		c.sendOpt(optExportName, []byte("b"))
		want := 10
		if !noZeroes {
			want += 124
		}
		b := make([]byte, want)
		if _, err := io.ReadFull(c.br, b); err != nil {
			t.Fatal(err)
		}
		if be64(b) != 2<<20 {
			t.Errorf("size %d", be64(b))
		}
		if fl := be16(b[8:]); fl&tflagHasFlags == 0 || fl&tflagReadOnly == 0 {
			t.Errorf("flags %#x", fl)
		}
		if !noZeroes && !bytes.Equal(b[10:], make([]byte, 124)) {
			t.Errorf("padding not zero")
		}
		// Transmission works right away (no structured replies).
		r := c.do(cmdRead, 0, 0, 512, nil)
		if !r.simple || r.errno != 0 || len(r.data) != 512 {
			t.Errorf("READ after EXPORT_NAME: %+v", r)
		}
		// Nothing beyond the padding: the next bytes are the reply.
	}
	// Default export and unknown export.
	c := dial(t, ts.addr)
	c.sendFlags(clientFixedNewstyle | clientNoZeroes)
	c.sendOpt(optExportName, nil)
	b := make([]byte, 10)
	if _, err := io.ReadFull(c.br, b); err != nil || be64(b) != 1<<20 {
		t.Fatalf("default export: size %d err %v", be64(b), err)
	}
	c = dial(t, ts.addr)
	c.sendFlags(clientFixedNewstyle | clientNoZeroes)
	c.sendOpt(optExportName, []byte("nope"))
	c.expectClosed()
}

func TestAbort(t *testing.T) {
	ts := twoExports(t)
	c := dial(t, ts.addr)
	c.sendFlags(clientFixedNewstyle)
	c.sendOpt(optAbort, []byte("ignored data"))
	if rs := c.optReplies(optAbort); lastType(rs) != repAck || len(rs[0].data) != 0 {
		t.Fatalf("ABORT: %+v", rs)
	}
	c.expectClosed()
}

func TestList(t *testing.T) {
	ts := twoExports(t)
	c := dial(t, ts.addr)
	c.sendFlags(clientFixedNewstyle | clientNoZeroes)
	c.sendOpt(optList, nil)
	rs := c.optReplies(optList)
	if len(rs) != 3 || lastType(rs) != repAck {
		t.Fatalf("LIST replies %+v", rs)
	}
	for i, name := range []string{"a", "b"} {
		d := rs[i].data
		if rs[i].typ != repServer || be32(d) != uint32(len(name)) || string(d[4:4+len(name)]) != name || string(d[4+len(name):]) != "desc of "+name {
			t.Errorf("server reply %d: %q", i, d)
		}
	}
	c.sendOpt(optList, []byte("x"))
	if rs := c.optReplies(optList); lastType(rs) != repErrInvalid {
		t.Errorf("LIST with data: %#x", lastType(rs))
	}
}

func parseInfos(t *testing.T, rs []optRep) map[uint16][]byte {
	t.Helper()
	m := map[uint16][]byte{}
	for _, r := range rs[:len(rs)-1] {
		if r.typ != repInfo {
			t.Fatalf("reply type %#x before ACK", r.typ)
		}
		m[be16(r.data)] = r.data[2:]
	}
	return m
}

func TestInfoGo(t *testing.T) {
	aligned := newMemExport(1<<20, Features{Flush: true, BlockSize: BlockSize{Min: 512, Preferred: 4096, Max: 1 << 20}})
	ts := startServer(t, Options{}, map[string]Export{"a": aligned, "b": newMemExport(4096, Features{})})
	c := dial(t, ts.addr)
	c.sendFlags(clientFixedNewstyle | clientNoZeroes)

	// INFO without requests: EXPORT and BLOCK_SIZE with min 1.
	c.sendOpt(optInfo, infoData("a"))
	rs := c.optReplies(optInfo)
	if lastType(rs) != repAck {
		t.Fatalf("INFO: %#x", lastType(rs))
	}
	in := parseInfos(t, rs)
	if len(in[infoExport]) != 10 || be64(in[infoExport]) != 1<<20 {
		t.Errorf("INFO_EXPORT %x", in[infoExport])
	}
	if fl := be16(in[infoExport][8:]); fl != tflagHasFlags|tflagSendFlush|tflagSendFUA {
		t.Errorf("flags %#x", fl)
	}
	if _, ok := in[infoName]; ok {
		t.Errorf("NAME sent unrequested")
	}
	bs := in[infoBlockSize]
	if len(bs) != 12 || be32(bs) != 1 || be32(bs[4:]) != 4096 || be32(bs[8:]) != 1<<20 {
		t.Errorf("BLOCK_SIZE unrequested %x", bs)
	}

	// INFO with NAME, DESCRIPTION, BLOCK_SIZE and an unknown request.
	c.sendOpt(optInfo, infoData("", infoName, infoDescription, infoBlockSize, 999))
	in = parseInfos(t, c.optReplies(optInfo))
	if string(in[infoName]) != "a" || string(in[infoDescription]) != "desc of a" || be32(in[infoBlockSize]) != 512 {
		t.Errorf("INFO replies %v", in)
	}

	for _, tc := range []struct {
		name string
		data []byte
		want uint32
	}{
		{"unknown export", infoData("zzz"), repErrUnknown},
		{"short", []byte{0, 0, 0}, repErrInvalid},
		{"name too long for option", append([]byte{0, 0, 0, 9, 'a'}, 0, 0), repErrInvalid},
		{"request count mismatch", append(infoData("a", infoName), 0), repErrInvalid},
		{"name over 4096", infoData(strings.Repeat("x", 4097)), repErrInvalid},
	} {
		c.sendOpt(optInfo, tc.data)
		rs := c.optReplies(optInfo)
		if len(rs) != 1 || rs[0].typ != tc.want {
			t.Errorf("%s: replies %+v, want only %#x", tc.name, rs, tc.want)
		}
	}
	// GO on an unknown export fails and negotiation goes on.
	if rs := c.goExport("zzz"); lastType(rs) != repErrUnknown {
		t.Errorf("GO unknown: %#x", lastType(rs))
	}
	rs = c.goExport("a", infoBlockSize)
	if lastType(rs) != repAck || be32(parseInfos(t, rs)[infoBlockSize]) != 512 {
		t.Fatalf("GO: %+v", rs)
	}
	// In transmission now; misaligned requests get EINVAL.
	if r := c.do(cmdRead, 0, 1, 512, nil); r.errno != errInval {
		t.Errorf("misaligned READ: errno %d", r.errno)
	}
	if r := c.do(cmdRead, 0, 512, 512, nil); r.errno != 0 {
		t.Errorf("aligned READ: errno %d", r.errno)
	}
}

func TestUnknownOptionsKeepSync(t *testing.T) {
	ts := twoExports(t)
	c := dial(t, ts.addr)
	c.sendFlags(clientFixedNewstyle | clientNoZeroes)
	for _, opt := range []uint32{optPeekExport, optExtendedHeaders, 12, 1000, 0xffffffff} {
		c.sendOpt(opt, []byte("some data the server must skip"))
		if rs := c.optReplies(opt); len(rs) != 1 || rs[0].typ != repErrUnsup {
			t.Errorf("option %d: %+v", opt, rs)
		}
	}
	c.sendOpt(optExtendedHeaders, nil)
	if rs := c.optReplies(optExtendedHeaders); rs[0].typ != repErrUnsup {
		t.Errorf("EXTENDED_HEADERS: %#x", rs[0].typ)
	}
	c.sendOpt(optStructuredReply, []byte{1})
	if rs := c.optReplies(optStructuredReply); rs[0].typ != repErrInvalid {
		t.Errorf("SR with data: %#x", rs[0].typ)
	}
	c.connect("a", true, true)
	c.mustOK(c.do(cmdFlush, 0, 0, 0, nil))
}

func TestOptionLimits(t *testing.T) {
	ts := startServer(t, Options{MaxOptions: 4, MaxOptionBytes: 8192}, map[string]Export{"a": newMemExport(4096, Features{})})
	// Too many options.
	c := dial(t, ts.addr)
	c.sendFlags(clientFixedNewstyle)
	for range 4 {
		c.sendOpt(optList, nil)
		c.optReplies(optList)
	}
	c.sendOpt(optList, nil)
	c.expectClosed()
	// Bad option magic.
	c = dial(t, ts.addr)
	c.sendFlags(clientFixedNewstyle)
	c.write(make([]byte, 16))
	c.expectClosed()
	// Oversized option data is skipped and refused, the stream stays in sync.
	c = dial(t, ts.addr)
	c.sendFlags(clientFixedNewstyle)
	c.sendOpt(77, make([]byte, 10000))
	if rs := c.optReplies(77); rs[0].typ != repErrTooBig {
		t.Errorf("oversized option: %#x", rs[0].typ)
	}
	c.sendOpt(optList, nil)
	if rs := c.optReplies(optList); lastType(rs) != repAck {
		t.Errorf("LIST after oversized option: %#x", lastType(rs))
	}
	// Absurd length: dropped.
	c = dial(t, ts.addr)
	c.sendFlags(clientFixedNewstyle)
	h := make([]byte, 16)
	put64(h, optMagic)
	put32(h[8:], optList)
	put32(h[12:], 1<<30)
	c.write(h)
	c.expectClosed()
	// Oversized EXPORT_NAME: dropped.
	c = dial(t, ts.addr)
	c.sendFlags(clientFixedNewstyle)
	c.sendOpt(optExportName, make([]byte, 9000))
	c.expectClosed()
}

func TestMetaContext(t *testing.T) {
	ts := startServer(t, Options{}, map[string]Export{
		"a":     newMemExport(1<<20, allFeatures),
		"plain": newMemExport(1<<20, Features{}),
	})
	c := dial(t, ts.addr)
	c.sendFlags(clientFixedNewstyle | clientNoZeroes)
	metaNames := func(rs []optRep) []string {
		var out []string
		for _, r := range rs[:len(rs)-1] {
			if r.typ != repMetaContext {
				t.Fatalf("reply %#x before ACK", r.typ)
			}
			out = append(out, string(r.data[4:]))
		}
		return out
	}
	// SET before SR is invalid.
	c.sendOpt(optSetMetaContext, metaData("a", "base:allocation"))
	if rs := c.optReplies(optSetMetaContext); rs[0].typ != repErrInvalid {
		t.Errorf("SET before SR: %#x", rs[0].typ)
	}
	c.sendOpt(optStructuredReply, nil)
	c.optReplies(optStructuredReply)

	for _, tc := range []struct {
		opt     uint32
		export  string
		queries []string
		want    []string
	}{
		{optListMetaContext, "a", nil, []string{"base:allocation"}},
		{optListMetaContext, "a", []string{"qemu:"}, nil},
		{optListMetaContext, "a", []string{"base:"}, []string{"base:allocation"}},
		{optListMetaContext, "a", []string{"base:allocation", "x:y"}, []string{"base:allocation"}},
		{optListMetaContext, "plain", nil, nil},
		{optSetMetaContext, "a", []string{"base:allocation"}, []string{"base:allocation"}},
		{optSetMetaContext, "a", []string{"base:allocation", "base:allocation"}, []string{"base:allocation"}},
		{optSetMetaContext, "a", []string{"base:"}, nil},
		{optSetMetaContext, "a", []string{"other:thing", "base:nothing"}, nil},
		{optSetMetaContext, "a", nil, nil},
		{optSetMetaContext, "plain", []string{"base:allocation"}, nil},
	} {
		c.sendOpt(tc.opt, metaData(tc.export, tc.queries...))
		rs := c.optReplies(tc.opt)
		if lastType(rs) != repAck {
			t.Errorf("%s %s %q: ended %#x", optionName(tc.opt), tc.export, tc.queries, lastType(rs))
			continue
		}
		got := metaNames(rs)
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%s %s %q: contexts %q, want %q", optionName(tc.opt), tc.export, tc.queries, got, tc.want)
		}
		if tc.opt == optSetMetaContext && len(rs) == 2 && be32(rs[0].data) != baseAllocationID {
			t.Errorf("SET context id %d", be32(rs[0].data))
		}
		if tc.opt == optListMetaContext && len(rs) == 2 && be32(rs[0].data) != 0 {
			t.Errorf("LIST context id %d", be32(rs[0].data))
		}
	}
	for _, bad := range [][]byte{
		{0, 0, 0},
		{0, 0, 0, 5, 'a', 0, 0, 0, 0},
		append(metaData("a"), 0),                       // trailing byte
		{0, 0, 0, 1, 'a', 0, 0, 0, 1, 0, 0, 0, 9, 'b'}, // query overruns
		{0, 0, 0, 1, 'a', 0, 0, 0, 2, 0, 0, 0, 0},      // count overruns
	} {
		c.sendOpt(optListMetaContext, bad)
		if rs := c.optReplies(optListMetaContext); len(rs) != 1 || rs[0].typ != repErrInvalid {
			t.Errorf("malformed %x: %+v", bad, rs)
		}
	}
	c.sendOpt(optListMetaContext, metaData("zz"))
	if rs := c.optReplies(optListMetaContext); rs[0].typ != repErrUnknown {
		t.Errorf("unknown export: %#x", rs[0].typ)
	}
	// A failed SET still clears the selection: GO, then BLOCK_STATUS fails.
	c.sendOpt(optSetMetaContext, metaData("a", "base:allocation"))
	c.optReplies(optSetMetaContext)
	c.sendOpt(optSetMetaContext, []byte{1})
	c.optReplies(optSetMetaContext)
	c.goExport("a", infoBlockSize)
	if r := c.do(cmdBlockStatus, 0, 0, 4096, nil); r.errno != errInval {
		t.Errorf("BLOCK_STATUS after failed SET: errno %d", r.errno)
	}
}

func TestMetaContextOtherExport(t *testing.T) {
	ts := startServer(t, Options{}, map[string]Export{
		"a": newMemExport(1<<20, allFeatures),
		"b": newMemExport(1<<20, allFeatures),
	})
	c := dial(t, ts.addr)
	c.sendFlags(clientFixedNewstyle | clientNoZeroes)
	c.sendOpt(optStructuredReply, nil)
	c.optReplies(optStructuredReply)
	c.sendOpt(optSetMetaContext, metaData("a", "base:allocation"))
	c.optReplies(optSetMetaContext)
	c.goExport("b")
	if r := c.do(cmdBlockStatus, 0, 0, 4096, nil); r.errno != errInval {
		t.Errorf("BLOCK_STATUS on another export: errno %d", r.errno)
	}
	// The default export's canonical name matches.
	c = dial(t, ts.addr)
	c.sendFlags(clientFixedNewstyle | clientNoZeroes)
	c.sendOpt(optStructuredReply, nil)
	c.optReplies(optStructuredReply)
	c.sendOpt(optSetMetaContext, metaData("", "base:allocation"))
	c.optReplies(optSetMetaContext)
	c.goExport("a")
	c.mustOK(c.do(cmdBlockStatus, 0, 0, 4096, nil))
}

func TestNonFixedClient(t *testing.T) {
	ts := twoExports(t)
	c := dial(t, ts.addr)
	c.sendFlags(0)
	c.sendOpt(optStartTLS, nil)
	if rs := c.optReplies(optStartTLS); rs[0].typ != repErrPolicy {
		t.Errorf("STARTTLS without fixed newstyle: %#x", rs[0].typ)
	}
	c.sendOpt(optExportName, []byte("a"))
	b := make([]byte, 134)
	if _, err := io.ReadFull(c.br, b); err != nil {
		t.Fatal(err)
	}
}
