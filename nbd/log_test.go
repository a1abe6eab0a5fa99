package nbd

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestConnectionLog checks the one line per connection open and close.
func TestConnectionLog(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	ts := startServer(t, Options{Logger: log}, map[string]Export{"a": newMemExport(1<<20, allFeatures)})
	c := dial(t, ts.addr)
	c.open("a", true, true)
	c.mustOK(c.do(cmdWrite, 0, 0, 4096, pattern(4096, 1)))
	c.read(0, 4096)
	c.request(cmdDisc, 0, 1, 0, 0, nil)
	c.expectClosed()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(buf.String(), "nbd connection closed") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	out := buf.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 log lines, got:\n%s", out)
	}
	for _, want := range []string{"nbd connection open", "remote=127.0.0.1:", "export=a", "structured_replies=true", "meta_context=base:allocation", "tls=false", "flags=0x"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("open line lacks %q: %s", want, lines[0])
		}
	}
	for _, want := range []string{"nbd connection closed", "export=a", "requests=3", "read_bytes=4096", "write_bytes=4096", `reason="client disconnected (DISC)"`} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("close line lacks %q: %s", want, lines[1])
		}
	}
	st := ts.srv.Stats()
	if st.Commands["write"].Bytes != 4096 || st.Commands["read"].Requests != 1 || st.Commands["disc"].Requests != 1 || st.ConnectionsTotal != 1 {
		t.Errorf("stats %+v", st)
	}
}
