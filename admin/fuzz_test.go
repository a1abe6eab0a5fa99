package admin

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// fuzzRoutes are the method and path a fuzz input picks by index.
var fuzzRoutes = []struct{ method, path string }{
	{"GET", "/v1/volumes"},
	{"POST", "/v1/volumes"},
	{"PATCH", "/v1/volumes/a"},
	{"DELETE", "/v1/volumes/a"},
	{"GET", "/v1/snapshots?volume=a"},
	{"POST", "/v1/snapshots"},
	{"DELETE", "/v1/snapshots/a@s"},
	{"POST", "/v1/clones"},
	{"GET", "/v1/stats"},
}

// FuzzHandler sends arbitrary bodies to every route of a server on a fake
// array that holds volume "a" and snapshot "a@s". Whatever the body, the
// server must answer with a JSON body, never 500 (the fake has no internal
// errors), and with an error code on every failure.
func FuzzHandler(f *testing.F) {
	for i, body := range []string{
		``, `{}`, `{"name":"b","size":4096}`, `{"size":8192}`, `{"volume":"a","name":"t"}`,
		`{"snapshot":"a@s","volume":"c"}`, `{"name":"b","size":1e30}`, `{"name":"\u0000","size":-512}`,
		`{"name":"b","size":4096,"x":1}`, `null`, `"str"`, `{"name":"b","size":4096}{}`,
	} {
		f.Add(uint8(i), []byte(body))
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		fake := newFake()
		fake.vols["a"] = fakeVolume("a", false)
		fake.vols["a@s"] = fakeVolume("a@s", true)
		srv, err := NewServer(Options{Array: fake, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		r := fuzzRoutes[int(route)%len(fuzzRoutes)]
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest(r.method, r.path, strings.NewReader(string(body))))
		if rec.Code >= 500 {
			t.Fatalf("%s %s %q: status %d %s", r.method, r.path, body, rec.Code, rec.Body)
		}
		if rec.Code == http.StatusNoContent {
			return
		}
		var m map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
			t.Fatalf("%s %s %q: reply %q is not a JSON object", r.method, r.path, body, rec.Body)
		}
		if rec.Code >= 300 && (m["error"] == "" || m["code"] == "") {
			t.Fatalf("%s %s %q: failure without error and code: %s", r.method, r.path, body, rec.Body)
		}
	})
}
