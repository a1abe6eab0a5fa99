// Command shale is the shale storage server: it serves volumes over NBD.
//
//	shale serve [--config FILE] [--listen ADDR] [--socket PATH] [--log-level L]
//	shale version
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
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
