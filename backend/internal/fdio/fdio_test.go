//go:build linux

package fdio

import (
	"errors"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/shalestore/shale/backend"
	"golang.org/x/sys/unix"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		op   string
		err  error
		want error
	}{
		{"read", unix.EIO, backend.ErrFailed},
		{"write", unix.EIO, backend.ErrFailed},
		{"write", unix.ENOSPC, backend.ErrFailed},
		{"read", unix.ENODATA, backend.ErrCorrupt},
		{"read", unix.EBADMSG, backend.ErrCorrupt},
		{"read", unix.EILSEQ, backend.ErrCorrupt},
		{"write", unix.ENODATA, backend.ErrFailed}, // medium errors are a read's news
		{"read", io.EOF, backend.ErrFailed},
		{"read", os.ErrClosed, backend.ErrClosed},
		{"sync", fmt.Errorf("wrapped: %w", os.ErrClosed), backend.ErrClosed},
	}
	for _, c := range cases {
		got := Classify(c.op, c.err)
		if !errors.Is(got, c.want) {
			t.Errorf("Classify(%s, %v) = %v, want class %v", c.op, c.err, got, c.want)
		}
		if c.err != io.EOF && !errors.Is(got, c.err) {
			t.Errorf("Classify(%s, %v) = %v lost the cause", c.op, c.err, got)
		}
	}
}
