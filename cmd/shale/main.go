// Command shale is the shale storage server: it serves volumes over NBD.
//
//	shale serve [--config FILE] [--listen ADDR] [--socket PATH] [--log-level L]
//	shale version
//
// At start-up shale raises GOMAXPROCS to at least backend.MinIOProcs (8)
// unless the GOMAXPROCS environment variable is set: the file and nvme
// drive backends block a goroutine, and with it a P, in pread/pwrite for
// each I/O, and with as few Ps as a small machine has CPUs they keep only
// a few I/Os in flight (backend.MinIOProcs has the measurements).
package main

import (
	"fmt"
	"os"

	"github.com/shalestore/shale/backend"
	"github.com/spf13/cobra"
)

func main() {
	backend.SetIOProcs()
	root := &cobra.Command{
		Use:           "shale",
		Short:         "shale: an all-flash storage array in software, served over NBD",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(serveCmd(), versionCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "shale:", err)
		os.Exit(1)
	}
}
