// Command shale is the shale storage server: it serves volumes over NBD,
// and the client of its administration API.
//
//	shale serve [--config FILE] [--data-dir DIR] [--listen ADDR] [--socket PATH] [--log-level L]
//	shale volume create NAME SIZE | list | resize NAME SIZE | delete NAME
//	shale snapshot create VOLUME SNAP | list [VOLUME] | delete VOLUME@SNAP
//	shale clone VOLUME@SNAP NEWVOLUME
//	shale stats [--json]
//	shale version
//
// The admin commands find the server's admin socket (DATA_DIR/admin.sock)
// from --admin-socket, --data-dir, SHALE_DATA_DIR or the --config file,
// as serve finds its data directory. They exit 1 on any failure.
//
// At start-up shale raises GOMAXPROCS to at least backend.MinIOProcs (8)
// unless the GOMAXPROCS environment variable is set: the file and nvme
// drive backends block a goroutine, and with it a P, in pread/pwrite for
// each I/O, and with as few Ps as a small machine has CPUs they keep only
// a few I/Os in flight (backend.MinIOProcs has the measurements).
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/shalestore/shale/admin"
	"github.com/shalestore/shale/backend"
	"github.com/spf13/cobra"
)

func main() {
	backend.SetIOProcs()
	if err := newRoot().Execute(); err != nil {
		if errors.Is(err, admin.ErrNotRunning) {
			fmt.Fprintln(os.Stderr, err) // already starts "shale is not running"
		} else {
			fmt.Fprintln(os.Stderr, "shale:", err)
		}
		os.Exit(1)
	}
}

// newRoot returns the command tree.
func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "shale",
		Short:         "shale: an all-flash storage array in software, served over NBD",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(serveCmd(), volumeCmd(), snapshotCmd(), cloneCmd(), statsCmd(), versionCmd())
	return root
}
