package backend

import (
	"os"
	"runtime"
	"testing"
)

func TestIOProcs(t *testing.T) {
	for _, c := range []struct{ cur, want int }{
		{1, MinIOProcs},
		{2, MinIOProcs},
		{MinIOProcs - 1, MinIOProcs},
		{MinIOProcs, MinIOProcs},
		{MinIOProcs + 1, MinIOProcs + 1},
		{64, 64},
	} {
		if got := IOProcs(c.cur); got != c.want {
			t.Errorf("IOProcs(%d) = %d, want %d", c.cur, got, c.want)
		}
	}
}

// TestSetIOProcs checks that SetIOProcs raises a low GOMAXPROCS, leaves a
// high one alone, and never overrides the GOMAXPROCS environment variable.
// It changes the process's GOMAXPROCS, so it does not run in parallel and
// restores the setting it found.
func TestSetIOProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	env, hadEnv := os.LookupEnv("GOMAXPROCS")
	if hadEnv {
		t.Cleanup(func() { os.Setenv("GOMAXPROCS", env) })
	}
	for _, c := range []struct {
		name      string
		env       bool
		cur, want int
	}{
		{"low", false, 2, MinIOProcs},
		{"one", false, 1, MinIOProcs},
		{"high", false, MinIOProcs + 3, MinIOProcs + 3},
		{"env wins", true, 2, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.env {
				t.Setenv("GOMAXPROCS", "2")
			} else {
				os.Unsetenv("GOMAXPROCS")
			}
			runtime.GOMAXPROCS(c.cur)
			if got := SetIOProcs(); got != c.want {
				t.Errorf("SetIOProcs() from %d = %d, want %d", c.cur, got, c.want)
			}
			if got := runtime.GOMAXPROCS(0); got != c.want {
				t.Errorf("GOMAXPROCS after SetIOProcs() from %d = %d, want %d", c.cur, got, c.want)
			}
		})
	}
}
