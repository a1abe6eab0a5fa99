package nbd

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fuzzServer returns a server with small limits, for fuzzing.
func fuzzServer(t testing.TB) *Server {
	set := NewExportSet()
	set.Add("a", "fuzz export", newMemExport(1<<20, allFeatures))
	nb := allFeatures
	nb.NonBlocking = true
	set.Add("nb", "inline export", newMemExport(1<<20, nb))
	set.Add("ro", "", newMemExport(64<<10, Features{ReadOnly: true, BlockSize: BlockSize{Min: 512}}))
	s, err := NewServer(Options{Exports: set, Logger: quietLogger(), MaxPayload: 64 << 10, MaxInFlight: 4, MaxOptions: 16, MaxExtents: 64, HandshakeTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// runConn feeds input to one server connection over a pipe, discards
// what the server sends, and fails if the server does not finish once
// the input is exhausted and the client hangs up.
func runConn(t testing.TB, s *Server, input []byte) {
	srvSide, cliSide := net.Pipe()
	s.mu.Lock()
	c := newConn(s, srvSide)
	s.conns[c] = struct{}{}
	s.stats.connsActive.Add(1)
	s.mu.Unlock()
	go c.serve()
	go io.Copy(io.Discard, cliSide)
	cliSide.SetWriteDeadline(time.Now().Add(5 * time.Second))
	cliSide.Write(input)
	cliSide.Close()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("server connection did not finish")
	}
}

func FuzzHandshake(f *testing.F) {
	for _, seed := range handshakeSeeds() {
		f.Add(seed)
	}
	s := fuzzServer(f)
	f.Fuzz(func(t *testing.T, input []byte) {
		runConn(t, s, input)
	})
}

func FuzzRequest(f *testing.F) {
	for _, seed := range requestSeeds() {
		f.Add(seed)
	}
	s := fuzzServer(f)
	prefixes := [][]byte{goPrefix("a"), goPrefix("nb")}
	f.Fuzz(func(t *testing.T, input []byte) {
		// The input's length picks the export: workers or inline.
		prefix := prefixes[len(input)%2]
		runConn(t, s, append(prefix[:len(prefix):len(prefix)], input...))
	})
}

// Wire builders for seeds.

func optBytes(opt uint32, data []byte) []byte {
	b := make([]byte, 16, 16+len(data))
	put64(b, optMagic)
	put32(b[8:], opt)
	put32(b[12:], uint32(len(data)))
	return append(b, data...)
}

func reqBytes(typ, flags uint16, cookie, off uint64, length uint32, payload []byte) []byte {
	b := make([]byte, requestLen, requestLen+len(payload))
	put32(b, requestMagic)
	put16(b[4:], flags)
	put16(b[6:], typ)
	put64(b[8:], cookie)
	put64(b[16:], off)
	put32(b[24:], length)
	return append(b, payload...)
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

var clientFlags3 = []byte{0, 0, 0, 3}

// goPrefix is a full handshake: SR, base:allocation, GO export.
func goPrefix(export string) []byte {
	return cat(clientFlags3,
		optBytes(optStructuredReply, nil),
		optBytes(optSetMetaContext, metaData(export, metaContextBaseAllocation)),
		optBytes(optGo, infoData(export, infoBlockSize)))
}

func handshakeSeeds() [][]byte {
	return [][]byte{
		cat(clientFlags3, optBytes(optList, nil), optBytes(optAbort, nil)),
		cat(clientFlags3, optBytes(optInfo, infoData("a", infoName, infoDescription, infoBlockSize)), optBytes(optAbort, nil)),
		cat(clientFlags3, optBytes(optListMetaContext, metaData("a")), optBytes(optListMetaContext, metaData("a", "qemu:"))),
		cat(clientFlags3, optBytes(optStartTLS, nil), optBytes(optExtendedHeaders, nil), optBytes(99, []byte("xyz"))),
		cat([]byte{0, 0, 0, 1}, optBytes(optExportName, []byte("a")), reqBytes(cmdRead, 0, 1, 0, 512, nil), reqBytes(cmdDisc, 0, 2, 0, 0, nil)),
		cat(clientFlags3, optBytes(optExportName, []byte("nope"))),
		cat(goPrefix("a"), reqBytes(cmdRead, 0, 1, 0, 4096, nil), reqBytes(cmdDisc, 0, 2, 0, 0, nil)),
		cat(clientFlags3, optBytes(optGo, infoData("ro"))),
		[]byte("NBDMAGIC garbage"),
	}
}

func requestSeeds() [][]byte {
	return [][]byte{
		reqBytes(cmdRead, 0, 1, 0, 4096, nil),
		cat(reqBytes(cmdWrite, cmdFlagFUA, 2, 4096, 8, []byte("abcdefgh")), reqBytes(cmdRead, cmdFlagDF, 3, 4096, 8, nil)),
		reqBytes(cmdBlockStatus, cmdFlagReqOne, 4, 0, 1<<20, nil),
		cat(reqBytes(cmdTrim, 0, 5, 0, 8192, nil), reqBytes(cmdWriteZeroes, cmdFlagNoHole|cmdFlagFastZero, 6, 0, 4096, nil), reqBytes(cmdCache, 0, 7, 0, 4096, nil)),
		cat(reqBytes(cmdFlush, 0, 8, 0, 0, nil), reqBytes(cmdDisc, 0, 9, 0, 0, nil)),
		reqBytes(cmdWrite, 0, 10, 1<<20, 4, []byte("abcd")),
		reqBytes(cmdWrite, 0, 11, 0, 100<<10, nil),
		reqBytes(99, 0xffff, 12, 1<<63, 1<<31, nil),
		[]byte{0x25, 0x60, 0x95, 0x14},
	}
}

// TestWriteFuzzSeeds rewrites testdata/fuzz from the seed builders when
// NBD_WRITE_FUZZ_SEEDS=1; otherwise it checks the committed corpus exists.
func TestWriteFuzzSeeds(t *testing.T) {
	for name, seeds := range map[string][][]byte{"FuzzHandshake": handshakeSeeds(), "FuzzRequest": requestSeeds()} {
		dir := filepath.Join("testdata", "fuzz", name)
		if os.Getenv("NBD_WRITE_FUZZ_SEEDS") != "1" {
			ents, err := os.ReadDir(dir)
			if err != nil || len(ents) < len(seeds) {
				t.Errorf("%s: committed seed corpus missing (%v); run with NBD_WRITE_FUZZ_SEEDS=1", dir, err)
			}
			continue
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, s := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%02d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
