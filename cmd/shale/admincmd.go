package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/shalestore/shale/admin"
	"github.com/shalestore/shale/config"
	"github.com/shalestore/shale/core"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// adminFlags are the flags every admin command takes to find the server's
// admin socket the way `shale serve` finds its data directory.
type adminFlags struct {
	config string
	socket string
}

func (a *adminFlags) register(f *pflag.FlagSet) {
	f.StringVarP(&a.config, "config", "c", "", "configuration file (YAML) of the server, for its data_dir")
	f.String("data-dir", "", "the server's data directory (default ./shale-data, or SHALE_DATA_DIR)")
	f.StringVar(&a.socket, "admin-socket", "", "admin socket path (default DATA_DIR/admin.sock)")
}

// client finds the admin socket (--admin-socket, else data_dir from
// --data-dir, SHALE_DATA_DIR, the --config file, the default) and returns
// a client for it.
func (a *adminFlags) client(cmd *cobra.Command) (*admin.Client, error) {
	path := a.socket
	if path == "" {
		v := config.New()
		if err := v.BindPFlag("data_dir", cmd.Flags().Lookup("data-dir")); err != nil {
			return nil, err
		}
		var err error
		if path, err = config.AdminSocket(v, a.config); err != nil {
			return nil, err
		}
	}
	return admin.NewClient(path), nil
}

// adminContext ends on SIGINT or SIGTERM.
func adminContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// adminRun wraps an admin command's body with the client and context.
func adminRun(a *adminFlags, body func(ctx context.Context, c *admin.Client, out io.Writer, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := a.client(cmd)
		if err != nil {
			return err
		}
		defer c.Close()
		ctx, stop := adminContext()
		defer stop()
		return body(ctx, c, cmd.OutOrStdout(), args)
	}
}

// parseSize parses a size argument: 4096, 512M, 10G, 1T (K = 1024).
func parseSize(s string) (int64, error) {
	n, err := config.ParseSize(s)
	if err != nil {
		return 0, fmt.Errorf("size: %w", err)
	}
	return int64(n), nil
}

func printJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printVolumes prints volumes or snapshots as a table.
func printVolumes(out io.Writer, vols []core.VolumeInfo, snapshots bool) error {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	if snapshots {
		fmt.Fprintln(tw, "NAME\tSIZE\tCREATED")
	} else {
		fmt.Fprintln(tw, "NAME\tSIZE\tORIGIN\tCREATED")
	}
	for _, v := range vols {
		created := "-"
		if !v.Created.IsZero() {
			created = v.Created.Local().Format(time.DateTime)
		}
		if snapshots {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", v.Name, iec(v.Size), created)
		} else {
			origin := v.Origin
			if origin == "" {
				origin = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.Name, iec(v.Size), origin, created)
		}
	}
	return tw.Flush()
}

func volumeCmd() *cobra.Command {
	var a adminFlags
	cmd := &cobra.Command{
		Use:   "volume",
		Short: "Create, list, resize and delete volumes of a running server",
	}
	a.register(cmd.PersistentFlags())
	var listJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List volumes",
		Args:  cobra.NoArgs,
		RunE: adminRun(&a, func(ctx context.Context, c *admin.Client, out io.Writer, args []string) error {
			vols, err := c.Volumes(ctx)
			if err != nil {
				return err
			}
			if listJSON {
				return printJSON(out, vols)
			}
			return printVolumes(out, vols, false)
		}),
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print JSON")
	cmd.AddCommand(
		&cobra.Command{
			Use:     "create NAME SIZE",
			Short:   "Create an empty volume (SIZE: 4096, 512M, 10G, 1T; K = 1024)",
			Example: "  shale volume create db 10G",
			Args:    cobra.ExactArgs(2),
			RunE: adminRun(&a, func(ctx context.Context, c *admin.Client, out io.Writer, args []string) error {
				size, err := parseSize(args[1])
				if err != nil {
					return err
				}
				info, err := c.CreateVolume(ctx, args[0], size)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "created volume %s (%s)\n", info.Name, iec(info.Size))
				return nil
			}),
		},
		list,
		&cobra.Command{
			Use:   "resize NAME SIZE",
			Short: "Grow or shrink a volume (data beyond a shrunk end is lost)",
			Args:  cobra.ExactArgs(2),
			RunE: adminRun(&a, func(ctx context.Context, c *admin.Client, out io.Writer, args []string) error {
				size, err := parseSize(args[1])
				if err != nil {
					return err
				}
				info, err := c.ResizeVolume(ctx, args[0], size)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "resized volume %s to %s\n", info.Name, iec(info.Size))
				return nil
			}),
		},
		&cobra.Command{
			Use:   "delete NAME",
			Short: "Delete a volume and its snapshots (clones of them stay)",
			Args:  cobra.ExactArgs(1),
			RunE: adminRun(&a, func(ctx context.Context, c *admin.Client, out io.Writer, args []string) error {
				if err := c.DeleteVolume(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(out, "deleted volume %s\n", args[0])
				return nil
			}),
		},
	)
	return cmd
}

func snapshotCmd() *cobra.Command {
	var a adminFlags
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Create, list and delete snapshots (served read-only as VOLUME@SNAPSHOT)",
	}
	a.register(cmd.PersistentFlags())
	var listJSON bool
	list := &cobra.Command{
		Use:   "list [VOLUME]",
		Short: "List the snapshots of VOLUME, or of every volume",
		Args:  cobra.MaximumNArgs(1),
		RunE: adminRun(&a, func(ctx context.Context, c *admin.Client, out io.Writer, args []string) error {
			vol := ""
			if len(args) == 1 {
				vol = args[0]
			}
			snaps, err := c.Snapshots(ctx, vol)
			if err != nil {
				return err
			}
			if listJSON {
				return printJSON(out, snaps)
			}
			return printVolumes(out, snaps, true)
		}),
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print JSON")
	cmd.AddCommand(
		&cobra.Command{
			Use:     "create VOLUME SNAPSHOT",
			Short:   "Freeze VOLUME's current contents as VOLUME@SNAPSHOT",
			Example: "  shale snapshot create db before-upgrade\n  shale snapshot create db@before-upgrade",
			Args:    cobra.RangeArgs(1, 2),
			RunE: adminRun(&a, func(ctx context.Context, c *admin.Client, out io.Writer, args []string) error {
				vol, snap, err := snapshotArgs(args)
				if err != nil {
					return err
				}
				info, err := c.CreateSnapshot(ctx, vol, snap)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "created snapshot %s\n", info.Name)
				return nil
			}),
		},
		list,
		&cobra.Command{
			Use:   "delete VOLUME@SNAPSHOT",
			Short: "Delete a snapshot (clones made from it stay)",
			Args:  cobra.ExactArgs(1),
			RunE: adminRun(&a, func(ctx context.Context, c *admin.Client, out io.Writer, args []string) error {
				if !strings.Contains(args[0], "@") {
					return fmt.Errorf("%q is not VOLUME@SNAPSHOT: %w", args[0], core.ErrInvalid)
				}
				if err := c.DeleteSnapshot(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(out, "deleted snapshot %s\n", args[0])
				return nil
			}),
		},
	)
	return cmd
}

// snapshotArgs takes "VOLUME SNAPSHOT" or "VOLUME@SNAPSHOT".
func snapshotArgs(args []string) (vol, snap string, err error) {
	if len(args) == 2 {
		return args[0], args[1], nil
	}
	vol, snap, ok := strings.Cut(args[0], "@")
	if !ok || vol == "" || snap == "" {
		return "", "", fmt.Errorf("give VOLUME SNAPSHOT or VOLUME@SNAPSHOT, not %q", args[0])
	}
	return vol, snap, nil
}

func cloneCmd() *cobra.Command {
	var a adminFlags
	cmd := &cobra.Command{
		Use:     "clone VOLUME@SNAPSHOT NEWVOLUME",
		Short:   "Create a read-write volume starting as a snapshot's contents",
		Example: "  shale clone db@before-upgrade db-test",
		Args:    cobra.ExactArgs(2),
		RunE: adminRun(&a, func(ctx context.Context, c *admin.Client, out io.Writer, args []string) error {
			if !strings.Contains(args[0], "@") {
				return fmt.Errorf("%q is not VOLUME@SNAPSHOT: %w", args[0], core.ErrInvalid)
			}
			info, err := c.Clone(ctx, args[0], args[1])
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "created volume %s (%s) from %s\n", info.Name, iec(info.Size), args[0])
			return nil
		}),
	}
	a.register(cmd.Flags())
	return cmd
}

func statsCmd() *cobra.Command {
	var (
		a      adminFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Show space used, data reduction and free space, for the array and per volume",
		Long: `Show the array's space figures and each volume's and snapshot's.

logical:   non-zero data written and still mapped (what the clients would
           need without data reduction)
physical:  what that data occupies on the drives after dedup and
           compression, without parity
reduction: logical / physical
free:      data capacity (without parity) still free

With --json the keys are logical_bytes, physical_bytes, data_reduction,
free_bytes and capacity_bytes for the array, and "volumes" maps each volume
and snapshot name to its own logical_bytes, physical_bytes,
data_reduction and free_bytes (the array's free space); "counters" holds
the engine's metrics.`,
		Args: cobra.NoArgs,
		RunE: adminRun(&a, func(ctx context.Context, c *admin.Client, out io.Writer, args []string) error {
			st, err := c.Stats(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(out, st)
			}
			return printStats(out, st)
		}),
	}
	a.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printStats(out io.Writer, st core.Stats) error {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "capacity\t%s\n", iec(st.CapacityBytes))
	fmt.Fprintf(tw, "free\t%s\n", iec(st.FreeBytes))
	fmt.Fprintf(tw, "logical\t%s\n", iec(st.LogicalBytes))
	fmt.Fprintf(tw, "physical\t%s\n", iec(st.PhysicalBytes))
	fmt.Fprintf(tw, "reduction\t%s\n", ratio(st.DataReduction))
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Volumes) == 0 {
		return nil
	}
	fmt.Fprintln(out)
	names := make([]string, 0, len(st.Volumes))
	for n := range st.Volumes {
		names = append(names, n)
	}
	slices.Sort(names)
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VOLUME\tLOGICAL\tPHYSICAL\tREDUCTION")
	for _, n := range names {
		v := st.Volumes[n]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n, iec(v.LogicalBytes), iec(v.PhysicalBytes), ratio(v.DataReduction))
	}
	return tw.Flush()
}
