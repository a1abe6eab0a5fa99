package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shalestore/shale/core"
)

// syncBuffer is a goroutine-safe log sink.
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

// env is a server on a real Unix socket with a client for it.
type env struct {
	fake   *fakeArray
	srv    *Server
	client *Client
	path   string
	log    *syncBuffer
}

func newEnv(t *testing.T, opts Options) *env {
	t.Helper()
	e := &env{fake: newFake(), log: &syncBuffer{}}
	if opts.Array == nil {
		opts.Array = e.fake
	}
	opts.Logger = slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	e.path = filepath.Join(t.TempDir(), "admin.sock")
	ln, err := Listen(e.path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	e.client = NewClient(e.path)
	t.Cleanup(func() {
		e.client.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if _, err := os.Stat(e.path); !os.IsNotExist(err) {
			t.Errorf("admin socket left behind after Shutdown: %v", err)
		}
	})
	return e
}

func names(vs []core.VolumeInfo) []string {
	out := []string{}
	for _, v := range vs {
		out = append(out, v.Name)
	}
	return out
}

// TestRoutes walks every route through the client, checking results
// against the fake's state.
func TestRoutes(t *testing.T) {
	e := newEnv(t, Options{})
	ctx := context.Background()
	c := e.client

	if vs, err := c.Volumes(ctx); err != nil || len(vs) != 0 {
		t.Fatalf("Volumes on empty array: %v, %v", vs, err)
	}
	info, err := c.CreateVolume(ctx, "db", 10<<30)
	if err != nil {
		t.Fatal(err)
	}
	want := core.VolumeInfo{Name: "db", Size: 10 << 30, Created: time.Unix(1700000000, 0).UTC()}
	if !reflect.DeepEqual(info, want) {
		t.Fatalf("CreateVolume = %+v, want %+v", info, want)
	}
	if _, err := c.CreateVolume(ctx, "web", 1<<20); err != nil {
		t.Fatal(err)
	}
	if vs, err := c.Volumes(ctx); err != nil || !reflect.DeepEqual(names(vs), []string{"db", "web"}) {
		t.Fatalf("Volumes = %v, %v", names(vs), err)
	}
	if info, err := c.ResizeVolume(ctx, "web", 2<<20); err != nil || info.Size != 2<<20 {
		t.Fatalf("ResizeVolume = %+v, %v", info, err)
	}
	if info, err := c.CreateSnapshot(ctx, "db", "s1"); err != nil || info.Name != "db@s1" || !info.Snapshot || info.Origin != "db" {
		t.Fatalf("CreateSnapshot = %+v, %v", info, err)
	}
	if _, err := c.CreateSnapshot(ctx, "web", "s1"); err != nil {
		t.Fatal(err)
	}
	if ss, err := c.Snapshots(ctx, ""); err != nil || !reflect.DeepEqual(names(ss), []string{"db@s1", "web@s1"}) {
		t.Fatalf("Snapshots(\"\") = %v, %v", names(ss), err)
	}
	if ss, err := c.Snapshots(ctx, "web"); err != nil || !reflect.DeepEqual(names(ss), []string{"web@s1"}) {
		t.Fatalf("Snapshots(web) = %v, %v", names(ss), err)
	}
	if info, err := c.Clone(ctx, "db@s1", "db2"); err != nil || info.Name != "db2" || info.Origin != "db@s1" || info.Size != 10<<30 {
		t.Fatalf("Clone = %+v, %v", info, err)
	}
	if err := c.DeleteSnapshot(ctx, "web@s1"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteVolume(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	if vs, _ := c.Volumes(ctx); !reflect.DeepEqual(names(vs), []string{"db2", "web"}) {
		t.Fatalf("after deletes: volumes %v", names(vs))
	}
	if ss, _ := c.Snapshots(ctx, ""); len(ss) != 0 {
		t.Fatalf("after deletes: snapshots %v", names(ss))
	}

	e.fake.stats = core.Stats{
		SpaceStats:    core.SpaceStats{LogicalBytes: 3000, PhysicalBytes: 1000, DataReduction: 3, FreeBytes: 5 << 30},
		CapacityBytes: 6 << 30,
		Volumes:       map[string]core.SpaceStats{"web": {LogicalBytes: 3000, PhysicalBytes: 1000, DataReduction: 3, FreeBytes: 5 << 30}},
		Counters:      map[string]int64{"writes": 7},
	}
	st, err := c.Stats(ctx)
	if err != nil || !reflect.DeepEqual(st, e.fake.stats) {
		t.Fatalf("Stats = %+v, %v; want %+v", st, err, e.fake.stats)
	}
	wantCalls := []string{"CreateVolume db", "CreateVolume web", "ResizeVolume web", "CreateSnapshot db@s1",
		"CreateSnapshot web@s1", "Clone db@s1 db2", "DeleteSnapshot web@s1", "DeleteVolume db"}
	if !reflect.DeepEqual(e.fake.calls, wantCalls) {
		t.Errorf("array calls %q, want %q", e.fake.calls, wantCalls)
	}
}

// TestStatsJSONKeys pins the JSON the CLI's stats --json prints.
func TestStatsJSONKeys(t *testing.T) {
	e := newEnv(t, Options{})
	e.fake.stats = core.Stats{
		SpaceStats: core.SpaceStats{LogicalBytes: 1, PhysicalBytes: 0, DataReduction: math.Inf(1), FreeBytes: 2},
		Volumes:    map[string]core.SpaceStats{"v": {DataReduction: math.NaN()}},
	}
	resp, err := e.client.http.Get("http://shale/v1/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("stats reply is not JSON (NaN or Inf leaked?): %v", err)
	}
	for _, k := range []string{"logical_bytes", "physical_bytes", "data_reduction", "free_bytes", "capacity_bytes", "volumes"} {
		if _, ok := m[k]; !ok {
			t.Errorf("stats JSON lacks %q: %v", k, m)
		}
	}
	if m["data_reduction"] != 0.0 {
		t.Errorf("infinite data_reduction sent as %v, want 0", m["data_reduction"])
	}
	if v := m["volumes"].(map[string]any)["v"].(map[string]any); v["data_reduction"] != 0.0 {
		t.Errorf("NaN volume data_reduction sent as %v, want 0", v["data_reduction"])
	}
}

// TestErrorMapping injects each core error class into each mutating route
// and checks the status, the code and that errors.Is holds on the client.
func TestErrorMapping(t *testing.T) {
	e := newEnv(t, Options{})
	ctx := context.Background()
	c := e.client
	classes := []struct {
		err    error
		status int
		code   string
	}{
		{core.ErrNotFound, 404, CodeNotFound},
		{core.ErrExists, 409, CodeExists},
		{core.ErrInvalid, 400, CodeInvalid},
		{core.ErrInUse, 409, CodeInUse},
		{core.ErrReadOnly, 409, CodeReadOnly},
		{core.ErrNoSpace, 507, CodeNoSpace},
		{core.ErrClosed, 503, CodeClosed},
		{core.ErrIO, 500, CodeIO},
		{errors.New("disk on fire"), 500, CodeInternal},
	}
	ops := map[string]func() error{
		"create":          func() error { _, err := c.CreateVolume(ctx, "v", 4096); return err },
		"resize":          func() error { _, err := c.ResizeVolume(ctx, "v", 4096); return err },
		"delete":          func() error { return c.DeleteVolume(ctx, "v") },
		"snapshot":        func() error { _, err := c.CreateSnapshot(ctx, "v", "s"); return err },
		"delete snapshot": func() error { return c.DeleteSnapshot(ctx, "v@s") },
		"clone":           func() error { _, err := c.Clone(ctx, "v@s", "w"); return err },
	}
	for _, cl := range classes {
		for opName, op := range ops {
			e.fake.mu.Lock()
			e.fake.fail = fmt.Errorf("volume %q: %w", "v", cl.err)
			e.fake.mu.Unlock()
			err := op()
			var ae *Error
			if !errors.As(err, &ae) {
				t.Fatalf("%s with %v: error %v (%T) is not *Error", opName, cl.err, err, err)
			}
			if ae.Status != cl.status || ae.Code != cl.code {
				t.Errorf("%s with %v: status %d code %q, want %d %q", opName, cl.err, ae.Status, ae.Code, cl.status, cl.code)
			}
			if cl.code != CodeInternal && !errors.Is(err, cl.err) {
				t.Errorf("%s with %v: errors.Is fails on the client: %v", opName, cl.err, err)
			}
			if cl.code == CodeInternal {
				for _, other := range classes[:len(classes)-1] {
					if errors.Is(err, other.err) {
						t.Errorf("%s: an unclassed error unwraps to %v", opName, other.err)
					}
				}
			}
			if want := fmt.Sprintf("volume %q: %v", "v", cl.err); err.Error() != want {
				t.Errorf("%s: message %q, want the server's %q", opName, err.Error(), want)
			}
		}
	}
}

// TestRealErrors checks errors the fake produces by its rules, not by
// injection, through the client.
func TestRealErrors(t *testing.T) {
	e := newEnv(t, Options{Reserved: func(name string) bool { return name == "ramvol" }})
	ctx := context.Background()
	c := e.client
	if _, err := c.CreateVolume(ctx, "a", 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSnapshot(ctx, "a", "s"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"duplicate volume", func() error { _, err := c.CreateVolume(ctx, "a", 1<<20); return err }(), core.ErrExists},
		{"bad size", func() error { _, err := c.CreateVolume(ctx, "b", 1000); return err }(), core.ErrInvalid},
		{"bad name", func() error { _, err := c.CreateVolume(ctx, "-x", 4096); return err }(), core.ErrInvalid},
		{"missing name", func() error { _, err := c.CreateVolume(ctx, "", 4096); return err }(), core.ErrInvalid},
		{"reserved name", func() error { _, err := c.CreateVolume(ctx, "ramvol", 4096); return err }(), core.ErrExists},
		{"clone onto reserved name", func() error { _, err := c.Clone(ctx, "a@s", "ramvol"); return err }(), core.ErrExists},
		{"resize missing", func() error { _, err := c.ResizeVolume(ctx, "nope", 4096); return err }(), core.ErrNotFound},
		{"resize snapshot", func() error { _, err := c.ResizeVolume(ctx, "a@s", 4096); return err }(), core.ErrReadOnly},
		{"delete missing", c.DeleteVolume(ctx, "nope"), core.ErrNotFound},
		{"snapshot missing volume", func() error { _, err := c.CreateSnapshot(ctx, "nope", "s"); return err }(), core.ErrNotFound},
		{"snapshot missing name", func() error { _, err := c.CreateSnapshot(ctx, "a", ""); return err }(), core.ErrInvalid},
		{"duplicate snapshot", func() error { _, err := c.CreateSnapshot(ctx, "a", "s"); return err }(), core.ErrExists},
		{"delete missing snapshot", c.DeleteSnapshot(ctx, "a@zz"), core.ErrNotFound},
		{"clone missing snapshot", func() error { _, err := c.Clone(ctx, "a@zz", "c"); return err }(), core.ErrNotFound},
		{"clone onto existing", func() error { _, err := c.Clone(ctx, "a@s", "a"); return err }(), core.ErrExists},
	}
	for _, tc := range cases {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: error %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	for _, call := range e.fake.calls {
		if strings.Contains(call, "ramvol") {
			t.Errorf("a reserved name reached the array: %s", call)
		}
	}
}

// TestMalformedRequests sends raw HTTP the client never would.
func TestMalformedRequests(t *testing.T) {
	e := newEnv(t, Options{})
	h := e.srv.Handler()
	cases := []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"POST", "/v1/volumes", `{"name":"a","size":"10G"}`, 400, CodeInvalid},
		{"POST", "/v1/volumes", `{"name":"a","size":4096,"colour":"red"}`, 400, CodeInvalid},
		{"POST", "/v1/volumes", `{"name":"a","size":4096} {}`, 400, CodeInvalid},
		{"POST", "/v1/volumes", `{"name":"a",`, 400, CodeInvalid},
		{"POST", "/v1/volumes", ``, 400, CodeInvalid},
		{"POST", "/v1/volumes", `[1,2]`, 400, CodeInvalid},
		{"POST", "/v1/volumes", `{"name":"a","size":` + strings.Repeat("9", MaxRequestBytes) + `}`, 413, CodeTooLarge},
		{"PATCH", "/v1/volumes/a", `{"size":-1}`, 400, CodeInvalid}, // by the array
		{"POST", "/v1/snapshots", `{"volume":"a"}`, 400, CodeInvalid},
		{"POST", "/v1/clones", `{"volume":"a"}`, 400, CodeInvalid},
		{"GET", "/v2/volumes", ``, 404, CodeNoRoute},
		{"PUT", "/v1/volumes", ``, 404, CodeNoRoute},
		{"GET", "/", ``, 404, CodeNoRoute},
	}
	for _, tc := range cases {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body)))
		var eb errorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil {
			t.Errorf("%s %s %.40q: body %q is not JSON", tc.method, tc.path, tc.body, rec.Body.String())
			continue
		}
		if rec.Code != tc.status || eb.Code != tc.code || eb.Error == "" {
			t.Errorf("%s %s %.40q: %d %+v, want %d %s", tc.method, tc.path, tc.body, rec.Code, eb, tc.status, tc.code)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: Content-Type %q", tc.method, tc.path, ct)
		}
	}
	if len(e.fake.calls) != 1 { // only the PATCH reached the array
		t.Errorf("malformed requests reached the array: %q", e.fake.calls)
	}
}

// TestLogOnePerOperation checks one log line per mutating operation, Warn
// with the code when it failed.
func TestLogOnePerOperation(t *testing.T) {
	e := newEnv(t, Options{})
	ctx := context.Background()
	e.client.CreateVolume(ctx, "v", 4096)
	e.client.CreateVolume(ctx, "v", 4096)
	e.client.Volumes(ctx)
	log := e.log.String()
	if n := strings.Count(log, `msg="admin create volume" volume=v size=4096`); n != 1 {
		t.Errorf("%d success lines, want 1:\n%s", n, log)
	}
	if n := strings.Count(log, `level=WARN msg="admin create volume failed" volume=v size=4096`); n != 1 || !strings.Contains(log, "code=exists") {
		t.Errorf("%d failure lines with code, want 1:\n%s", n, log)
	}
	if !strings.Contains(log, `level=DEBUG msg="admin list volumes" n=1`) {
		t.Errorf("no debug line for the list:\n%s", log)
	}
}

// TestNotRunning: no socket, and a socket file nobody listens on.
func TestNotRunning(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "admin.sock")
	_, err := NewClient(missing).Volumes(context.Background())
	if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "shale is not running: no admin socket at "+missing) {
		t.Errorf("missing socket: %v", err)
	}

	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	_, err = NewClient(stale).Stats(context.Background())
	if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), stale) {
		t.Errorf("stale socket: %v", err)
	}
}

// TestListen checks the socket's mode and the stale/live/in-the-way cases.
func TestListen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "admin.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode %v, %v; want a 0600 socket", fi.Mode(), err)
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "another shale server") {
		t.Errorf("second Listen on a live socket: %v", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ln, err = Listen(path) // stale: replaced
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket not removed on Close: %v", err)
	}
	if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "precious" {
		t.Errorf("Listen harmed a regular file in its way")
	}
	long := filepath.Join(dir, strings.Repeat("d", 120), "admin.sock")
	if _, err := Listen(long); err == nil || !strings.Contains(err.Error(), "data_dir") {
		t.Errorf("Listen on a too-long path: %v", err)
	}
}

// TestShutdownDrains: an operation in progress completes and its client
// gets the reply although Shutdown was called meanwhile.
func TestShutdownDrains(t *testing.T) {
	fake := newFake()
	srv, err := NewServer(Options{Array: fake, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fake.block = make(chan struct{})
	c := NewClient(path)
	defer c.Close()
	got := make(chan error, 1)
	go func() { _, err := c.CreateVolume(context.Background(), "v", 4096); got <- err }()
	for {
		fake.mu.Lock()
		n := len(fake.calls)
		fake.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	select {
	case <-shut:
		t.Fatal("Shutdown returned while an operation was in progress")
	case <-time.After(100 * time.Millisecond):
	}
	close(fake.block)
	if err := <-got; err != nil {
		t.Errorf("operation in progress at Shutdown: %v", err)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if _, err := c.Volumes(context.Background()); !errors.Is(err, ErrNotRunning) {
		t.Errorf("after Shutdown: %v", err)
	}
}

// TestInflightLimit: at most MaxInflightRequests operations reach the
// array at once; one more waits for a slot until its deadline
// (RequestTimeout) and is refused as busy.
func TestInflightLimit(t *testing.T) {
	e := newEnv(t, Options{RequestTimeout: 300 * time.Millisecond})
	e.fake.block = make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, MaxInflightRequests+1)
	for i := 0; i < MaxInflightRequests+1; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.client.CreateVolume(context.Background(), fmt.Sprintf("v%d", i), 4096)
			errs <- err
		}()
	}
	// MaxInflightRequests calls reach the array; the last times out
	// waiting for a slot and is refused as busy.
	err := <-errs
	if !errors.Is(err, core.ErrInUse) || !strings.Contains(err.Error(), "busy") {
		t.Errorf("request beyond the limit: %v", err)
	}
	calls := func() int {
		e.fake.mu.Lock()
		defer e.fake.mu.Unlock()
		return len(e.fake.calls)
	}
	// The requests holding slots reach the array (at once, unless the
	// machine is very busy) and no more than they do.
	for deadline := time.Now().Add(5 * time.Second); calls() < MaxInflightRequests && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	if n := calls(); n != MaxInflightRequests {
		t.Errorf("%d calls reached the array, want %d", n, MaxInflightRequests)
	}
	close(e.fake.block)
	wg.Wait()
}

// TestClientNonJSONError: a proxy or foreign server's plain-text error
// still becomes an *Error with the status's class.
func TestClientNonJSONError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "nothing here", http.StatusNotFound)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	c := NewClient(path)
	defer c.Close()
	err = c.DeleteVolume(context.Background(), "x")
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != 404 || !errors.Is(err, core.ErrNotFound) || !strings.Contains(err.Error(), "nothing here") {
		t.Errorf("plain-text 404: %v", err)
	}
}
