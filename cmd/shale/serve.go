package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shalestore/shale/admin"
	"github.com/shalestore/shale/config"
	"github.com/shalestore/shale/core/ram"
	"github.com/shalestore/shale/nbd"
	"github.com/spf13/cobra"
)

func serveCmd() *cobra.Command {
	var (
		file            string
		shutdownTimeout time.Duration
	)
	v := config.New()
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the configured volumes over NBD until SIGINT or SIGTERM",
		Long: `Serve the configured volumes over NBD.

Configuration comes from --config FILE (YAML), SHALE_* environment variables
and the flags below. Without a file shale runs its storage engine on nine
sparse 8 GiB drive files and a 256 MiB NVRAM file in ./shale-data (7+2
Reed-Solomon), creating them and the array on first start, and serves the
16 GiB volume vol0 on 127.0.0.1:10809. Every volume and snapshot of the
array is served (snapshots read-only, as VOLUME@SNAPSHOT), including those
created later with shale volume/snapshot/clone through the admin socket
DATA_DIR/admin.sock. A configuration of RAM volumes only (ram: true) runs
no engine and no admin socket.

shale creates an array only when every drive and the NVRAM read as blank
(zeros at both ends); devices holding anything else are opened as an
existing array, and an error says so if they do not hold one.

On SIGINT or SIGTERM it stops accepting, lets NBD requests in flight
finish, stops the admin API, closes the array and exits 0.

Started with systemd-style socket activation (LISTEN_PID, LISTEN_FDS), as
libnbd's tools do for "nbdinfo [ shale serve ]", it serves the sockets it
was given instead of listen and socket.

SHALE_CPUPROFILE=FILE writes a Go CPU profile of the whole run to FILE.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.Load(v, file)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return serve(ctx, cfg, shutdownTimeout)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "config", "c", "", "configuration file (YAML)")
	f.String("listen", "", "TCP address to serve NBD on (host:port; default 127.0.0.1:10809)")
	f.String("socket", "", "Unix socket path to serve NBD on")
	f.String("log-level", "", "log level: debug, info, warn, error")
	f.String("log-format", "", "log format: text or json")
	f.String("data-dir", "", "data directory: admin socket, default drives (default ./shale-data)")
	f.DurationVar(&shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long to let requests in flight finish on SIGTERM")
	for key, flag := range map[string]string{"listen": "listen", "socket": "socket", "log.level": "log-level", "log.format": "log-format", "data_dir": "data-dir"} {
		if err := v.BindPFlag(key, f.Lookup(flag)); err != nil {
			panic(err)
		}
	}
	return cmd
}

// newLogger builds the slog logger the configuration asks for.
func newLogger(c config.Log) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(strings.ToUpper(c.Level))); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// tlsConfig loads the server certificate and, when client_ca is set,
// demands client certificates signed by it.
func tlsConfig(c config.TLS) (*tls.Config, nbd.TLSMode, error) {
	var mode nbd.TLSMode
	switch c.Mode {
	case config.TLSOff, "":
		return nil, nbd.TLSOff, nil
	case config.TLSOn:
		mode = nbd.TLSOn
	case config.TLSRequire:
		mode = nbd.TLSRequire
	default:
		return nil, 0, fmt.Errorf("tls.mode: %q is not one of off, on, require", c.Mode)
	}
	cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
	if err != nil {
		return nil, 0, fmt.Errorf("tls.cert/tls.key: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.ClientCA != "" {
		pem, err := os.ReadFile(c.ClientCA)
		if err != nil {
			return nil, 0, fmt.Errorf("tls.client_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, 0, fmt.Errorf("tls.client_ca: %s holds no PEM certificate", c.ClientCA)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, mode, nil
}

// buildExports creates the configured RAM volumes; engine volumes are
// the array's, looked up live (liveExports).
func buildExports(cfg *config.Config) (*nbd.ExportSet, error) {
	set := nbd.NewExportSet()
	var errs []error
	for i, vol := range cfg.Volumes {
		if !vol.RAM {
			continue
		}
		rv, err := ram.New(int64(vol.Size), ram.Options{})
		if err != nil {
			errs = append(errs, fmt.Errorf("volumes[%d] (%s): %w", i, vol.Name, err))
			continue
		}
		if err := set.Add(vol.Name, vol.Description, ramExport{v: rv, readOnly: vol.ReadOnly, minBlock: uint32(vol.MinBlockSize)}); err != nil {
			errs = append(errs, fmt.Errorf("volumes[%d]: %w", i, err))
		}
	}
	if len(cfg.Volumes) == 0 && !cfg.Engine() {
		errs = append(errs, errors.New("volumes: none configured and no storage engine (drives) to create any in; there is nothing to serve"))
	}
	return set, errors.Join(errs...)
}

// newLiveExports serves ram and, when arr is not nil, the array's volumes
// and snapshots with the configured volumes' NBD settings.
func newLiveExports(cfg *config.Config, ram *nbd.ExportSet, arr engineLookup) *liveExports {
	x := &liveExports{ram: ram, arr: arr, opts: map[string]exportOptions{}}
	for _, v := range cfg.Volumes {
		x.order = append(x.order, v.Name)
		if !v.RAM {
			x.opts[v.Name] = exportOptions{description: v.Description, readOnly: v.ReadOnly, minBlock: uint32(v.MinBlockSize)}
		}
	}
	if len(cfg.Volumes) > 0 {
		x.def = cfg.Volumes[0].Name
	}
	return x
}

// activatedListeners returns the listening sockets passed by systemd-style
// socket activation (LISTEN_PID is us, LISTEN_FDS sockets from fd 3), or
// nil when there are none.
func activatedListeners() ([]net.Listener, error) {
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
		return nil, nil
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n < 1 {
		return nil, fmt.Errorf("socket activation: LISTEN_FDS=%q", os.Getenv("LISTEN_FDS"))
	}
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	var lns []net.Listener
	for fd := 3; fd < 3+n; fd++ {
		f := os.NewFile(uintptr(fd), fmt.Sprintf("activated-fd-%d", fd))
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("socket activation: fd %d: %w", fd, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// listenUnix listens on path, replacing a stale socket file left by a
// server that is gone but refusing to steal one that still answers.
func listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("socket %s: another server is listening there", path)
		}
		os.Remove(path)
	}
	return net.Listen("unix", path)
}

func serve(ctx context.Context, cfg *config.Config, shutdownTimeout time.Duration) (retErr error) {
	if path := os.Getenv("SHALE_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if path := os.Getenv("SHALE_TRACE"); path != "" {
		// An execution trace, for latency work: go tool trace FILE, or
		// go tool trace -pprof=sched|sync|syscall FILE.
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		if err := trace.Start(f); err != nil {
			return err
		}
		defer trace.Stop()
	}
	log := newLogger(cfg.Log)
	slog.SetDefault(log)
	ramSet, err := buildExports(cfg)
	if err != nil {
		return err
	}
	tcfg, mode, err := tlsConfig(cfg.TLS)
	if err != nil {
		return err
	}
	var eng *engine
	exports := newLiveExports(cfg, ramSet, nil)
	if cfg.Engine() {
		if eng, err = openEngine(ctx, cfg, log); err != nil {
			return err
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
			defer cancel()
			if err := eng.close(cctx); err != nil {
				log.Error("shale: closing the array", "err", err)
				if retErr == nil {
					retErr = err
				}
				return
			}
			log.Info("shale array closed")
		}()
		exports.arr = coreLookup{eng.arr}
		for _, info := range ramSet.List() {
			if _, err := eng.arr.Volume(info.Name); err == nil {
				log.Warn("a RAM volume of the configuration hides the array's volume of the same name", "volume", info.Name)
			}
		}
	}
	srv, err := nbd.NewServer(nbd.Options{Exports: exports, TLSConfig: tcfg, TLSMode: mode, Logger: log})
	if err != nil {
		return err
	}
	lns, err := activatedListeners()
	if err != nil {
		return err
	}
	activated := lns != nil
	closeAll := func() {
		for _, ln := range lns {
			ln.Close()
		}
	}
	if lns != nil {
		// Socket activation (systemd, or libnbd's "nbdinfo [ shale serve ]"):
		// serve only the sockets we were given.
	} else if cfg.Listen != "" {
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		lns = append(lns, ln)
	}
	if cfg.Socket != "" && !activated {
		ln, err := listenUnix(cfg.Socket)
		if err != nil {
			closeAll()
			return fmt.Errorf("socket: %w", err)
		}
		lns = append(lns, ln)
		defer os.Remove(cfg.Socket)
	}
	var asrv *admin.Server
	admErr := make(chan error, 1)
	if eng != nil {
		aln, err := admin.Listen(cfg.AdminSocket())
		if err != nil {
			closeAll()
			return err
		}
		asrv, err = admin.NewServer(admin.Options{Array: eng.arr, Logger: log, Reserved: func(name string) bool {
			_, _, ok := ramSet.Lookup(name)
			return ok && name != ""
		}})
		if err != nil {
			aln.Close()
			closeAll()
			return err
		}
		go func() { admErr <- asrv.Serve(aln) }()
		log.Info("shale admin listening", "socket", cfg.AdminSocket())
	} else {
		log.Info("shale admin API off: only RAM volumes are configured, there is no array to administer")
	}
	errc := make(chan error, len(lns))
	for _, ln := range lns {
		log.Info("shale listening", "network", ln.Addr().Network(), "addr", ln.Addr().String(),
			"exports", len(exports.List()), "tls", mode.String(), "version", version)
		go func() { errc <- srv.Serve(ln) }()
	}
	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shale shutting down", "timeout", shutdownTimeout)
	case serveErr = <-errc:
		log.Error("shale listener failed; shutting down", "err", serveErr)
	case serveErr = <-admErr:
		log.Error("shale admin listener failed; shutting down", "err", serveErr)
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shale shutdown: connections closed before their requests finished", "err", err)
	}
	if asrv != nil {
		if err := asrv.Shutdown(sctx); err != nil {
			log.Warn("shale shutdown: admin requests cut short", "err", err)
		}
	}
	st := srv.Stats()
	log.Info("shale stopped", "connections", st.ConnectionsTotal)
	if serveErr != nil && !errors.Is(serveErr, nbd.ErrServerClosed) {
		return serveErr
	}
	return nil
}
