package e2e

import "testing"

// TestNbdshErrors sends bad requests (libnbd strict mode off) and checks
// each error code, and that the server keeps serving.
func TestNbdshErrors(t *testing.T) {
	s := startServer(t, stdVolumes)
	out := python(t, "errors.py", "nbd://"+s.addr)
	t.Logf("errors.py:\n%s", out)
}

// TestNbdshOptMode drives the handshake option by option.
func TestNbdshOptMode(t *testing.T) {
	s := startServer(t, stdVolumes)
	python(t, "optmode.py", "nbd://"+s.addr)
}

// TestNbdshFallback uses simple replies only and the old EXPORT_NAME
// handshake.
func TestNbdshFallback(t *testing.T) {
	s := startServer(t, stdVolumes)
	python(t, "fallback.py", "nbd://"+s.addr)
}
