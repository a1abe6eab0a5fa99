package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/shalestore/shale/core"
)

// Array is what the server needs of the engine: the subset of *core.Array
// it calls, with the same signatures, so tests can run on a fake.
type Array interface {
	CreateVolume(ctx context.Context, name string, size int64) (core.VolumeInfo, error)
	ResizeVolume(ctx context.Context, name string, size int64) (core.VolumeInfo, error)
	DeleteVolume(ctx context.Context, name string) error
	Volumes() []core.VolumeInfo
	CreateSnapshot(ctx context.Context, volume, snap string) (core.VolumeInfo, error)
	DeleteSnapshot(ctx context.Context, name string) error
	Snapshots(volume string) []core.VolumeInfo
	Clone(ctx context.Context, snapshot, volume string) (core.VolumeInfo, error)
	Stats() core.Stats
}

var _ Array = (*core.Array)(nil)

// Limits of the server.
const (
	// MaxRequestBytes bounds a request body; the largest real one is a
	// few hundred bytes.
	MaxRequestBytes = 64 << 10
	// MaxInflightRequests bounds the requests in progress at once; more
	// wait for a slot until their deadline. Admin operations are rare and
	// serialise in the engine anyway.
	MaxInflightRequests = 16
	// maxHeaderBytes bounds a request's header.
	maxHeaderBytes = 16 << 10
	// readTimeout bounds reading a whole request (header and body).
	readTimeout = 10 * time.Second
	// idleTimeout closes keep-alive connections left unused.
	idleTimeout = 60 * time.Second
	// DefaultRequestTimeout is Options.RequestTimeout's default.
	DefaultRequestTimeout = 60 * time.Second
)

// Options configure a Server.
type Options struct {
	// Array is the engine the server administers. Required.
	Array Array
	// Logger gets one line per operation that changes something (Info, or
	// Warn when it failed) and one per read at Debug. Default
	// slog.Default().
	Logger *slog.Logger
	// RequestTimeout bounds one operation, from the request read to the
	// reply written (default DefaultRequestTimeout).
	RequestTimeout time.Duration
	// Reserved, if set, is asked before a volume is created (directly or
	// as a clone) whether its name is taken by an export that is not an
	// engine volume (a RAM volume of the configuration); such names get
	// ErrExists.
	Reserved func(name string) bool
}

// Server serves the administration API. Create it with NewServer, run it
// with Serve, stop it with Shutdown.
type Server struct {
	arr      Array
	log      *slog.Logger
	timeout  time.Duration
	reserved func(string) bool
	slots    chan struct{}
	http     *http.Server
	handler  http.Handler
}

// NewServer returns a server for opts.
func NewServer(opts Options) (*Server, error) {
	if opts.Array == nil {
		return nil, errors.New("admin: Options.Array is required")
	}
	s := &Server{
		arr:      opts.Array,
		log:      opts.Logger,
		timeout:  opts.RequestTimeout,
		reserved: opts.Reserved,
		slots:    make(chan struct{}, MaxInflightRequests),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.timeout <= 0 {
		s.timeout = DefaultRequestTimeout
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/volumes", s.listVolumes)
	mux.HandleFunc("POST /v1/volumes", s.createVolume)
	mux.HandleFunc("PATCH /v1/volumes/{name}", s.resizeVolume)
	mux.HandleFunc("DELETE /v1/volumes/{name}", s.deleteVolume)
	mux.HandleFunc("GET /v1/snapshots", s.listSnapshots)
	mux.HandleFunc("POST /v1/snapshots", s.createSnapshot)
	mux.HandleFunc("DELETE /v1/snapshots/{name}", s.deleteSnapshot)
	mux.HandleFunc("POST /v1/clones", s.clone)
	mux.HandleFunc("GET /v1/stats", s.stats)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, &requestError{CodeNoRoute, http.StatusNotFound,
			fmt.Sprintf("no route %s %s (this server speaks /v1)", r.Method, r.URL.Path)})
	})
	s.handler = s.limit(mux)
	s.http = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      readTimeout + s.timeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Handler returns the API as an http.Handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves the API on ln until Shutdown; it returns nil after
// Shutdown and the listener's error otherwise. It closes ln.
func (s *Server) Serve(ln net.Listener) error {
	err := s.http.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, waits for requests in progress until ctx ends,
// then closes every connection.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.http.Close()
	}
	return err
}

// Listen listens on a Unix socket at path with mode 0600. A stale socket
// file (nobody answers) is replaced; one a live server answers on is an
// error, as is any other file at path.
func Listen(path string) (net.Listener, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("admin socket %s: path longer than %d bytes, the limit of a Unix socket address; use a shorter data_dir", path, maxSocketPath)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("admin socket %s: a file that is not a socket is in the way", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin socket %s: another shale server is listening there", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("admin socket %s: removing a stale socket: %w", path, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	// The socket is created with the process umask; tighten it before
	// serving. Until then nothing is accepted, and the data directory is
	// private (0700) when shale creates it.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	return ln, nil
}

// maxSocketPath is the longest path a Unix socket address holds on Linux
// (sun_path is 108 bytes with the terminating NUL).
const maxSocketPath = 107

// limit bounds the requests in progress and gives each a deadline.
func (s *Server) limit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
		defer cancel()
		select {
		case s.slots <- struct{}{}:
		case <-ctx.Done():
			s.fail(w, fmt.Errorf("admin server busy: %w", core.ErrInUse))
			return
		}
		defer func() { <-s.slots }()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// Requests.

// CreateVolumeRequest is the body of POST /v1/volumes.
type CreateVolumeRequest struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// ResizeVolumeRequest is the body of PATCH /v1/volumes/{name}.
type ResizeVolumeRequest struct {
	Size int64 `json:"size"`
}

// CreateSnapshotRequest is the body of POST /v1/snapshots.
type CreateSnapshotRequest struct {
	Volume string `json:"volume"`
	Name   string `json:"name"`
}

// CloneRequest is the body of POST /v1/clones.
type CloneRequest struct {
	Snapshot string `json:"snapshot"`
	Volume   string `json:"volume"`
}

// VolumeList is the body of GET /v1/volumes.
type VolumeList struct {
	Volumes []core.VolumeInfo `json:"volumes"`
}

// SnapshotList is the body of GET /v1/snapshots.
type SnapshotList struct {
	Snapshots []core.VolumeInfo `json:"snapshots"`
}

// decode reads r's body into dst: one JSON object, no unknown fields, at
// most MaxRequestBytes.
func decode(w http.ResponseWriter, r *http.Request, dst any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &requestError{CodeTooLarge, http.StatusRequestEntityTooLarge,
				fmt.Sprintf("request body larger than %d bytes", MaxRequestBytes)}
		}
		return &requestError{CodeInvalid, http.StatusBadRequest, fmt.Sprintf("reading request body: %v", err)}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return &requestError{CodeInvalid, http.StatusBadRequest, fmt.Sprintf("request body: %v", err)}
	}
	if dec.More() {
		return &requestError{CodeInvalid, http.StatusBadRequest, "request body: data after the JSON object"}
	}
	return nil
}

// required returns an invalid-request error naming the first empty field.
func required(fields ...string) error {
	for i := 0; i+1 < len(fields); i += 2 {
		if fields[i+1] == "" {
			return &requestError{CodeInvalid, http.StatusBadRequest, fmt.Sprintf("%s: missing", fields[i])}
		}
	}
	return nil
}

func (s *Server) reply(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		s.fail(w, fmt.Errorf("encoding reply: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

func (s *Server) fail(w http.ResponseWriter, err error) {
	code, status := classify(err)
	body, _ := json.Marshal(errorBody{Error: err.Error(), Code: code})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

// logOp logs one operation that changes the array.
func (s *Server) logOp(op string, start time.Time, err error, attrs ...any) {
	attrs = append(attrs, "ms", time.Since(start).Milliseconds())
	if err != nil {
		code, _ := classify(err)
		s.log.Warn("admin "+op+" failed", append(attrs, "code", code, "err", err)...)
		return
	}
	s.log.Info("admin "+op, attrs...)
}

func (s *Server) isReserved(name string) error {
	if s.reserved != nil && s.reserved(name) {
		return fmt.Errorf("volume %q: the configuration serves a RAM volume of that name: %w", name, core.ErrExists)
	}
	return nil
}

func (s *Server) listVolumes(w http.ResponseWriter, r *http.Request) {
	vols := s.arr.Volumes()
	if vols == nil {
		vols = []core.VolumeInfo{}
	}
	s.log.Debug("admin list volumes", "n", len(vols))
	s.reply(w, http.StatusOK, VolumeList{Volumes: vols})
}

func (s *Server) createVolume(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var req CreateVolumeRequest
	err := decode(w, r, &req)
	if err == nil {
		err = required("name", req.Name)
	}
	if err == nil {
		err = s.isReserved(req.Name)
	}
	var info core.VolumeInfo
	if err == nil {
		info, err = s.arr.CreateVolume(r.Context(), req.Name, req.Size)
	}
	s.logOp("create volume", start, err, "volume", req.Name, "size", req.Size)
	if err != nil {
		s.fail(w, err)
		return
	}
	s.reply(w, http.StatusCreated, info)
}

func (s *Server) resizeVolume(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	name := r.PathValue("name")
	var req ResizeVolumeRequest
	err := decode(w, r, &req)
	var info core.VolumeInfo
	if err == nil {
		info, err = s.arr.ResizeVolume(r.Context(), name, req.Size)
	}
	s.logOp("resize volume", start, err, "volume", name, "size", req.Size)
	if err != nil {
		s.fail(w, err)
		return
	}
	s.reply(w, http.StatusOK, info)
}

func (s *Server) deleteVolume(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	name := r.PathValue("name")
	err := s.arr.DeleteVolume(r.Context(), name)
	s.logOp("delete volume", start, err, "volume", name)
	if err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listSnapshots(w http.ResponseWriter, r *http.Request) {
	vol := r.URL.Query().Get("volume")
	snaps := s.arr.Snapshots(vol)
	if snaps == nil {
		snaps = []core.VolumeInfo{}
	}
	s.log.Debug("admin list snapshots", "volume", vol, "n", len(snaps))
	s.reply(w, http.StatusOK, SnapshotList{Snapshots: snaps})
}

func (s *Server) createSnapshot(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var req CreateSnapshotRequest
	err := decode(w, r, &req)
	if err == nil {
		err = required("volume", req.Volume, "name", req.Name)
	}
	var info core.VolumeInfo
	if err == nil {
		info, err = s.arr.CreateSnapshot(r.Context(), req.Volume, req.Name)
	}
	s.logOp("create snapshot", start, err, "volume", req.Volume, "snapshot", req.Name)
	if err != nil {
		s.fail(w, err)
		return
	}
	s.reply(w, http.StatusCreated, info)
}

func (s *Server) deleteSnapshot(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	name := r.PathValue("name")
	err := s.arr.DeleteSnapshot(r.Context(), name)
	s.logOp("delete snapshot", start, err, "snapshot", name)
	if err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) clone(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var req CloneRequest
	err := decode(w, r, &req)
	if err == nil {
		err = required("snapshot", req.Snapshot, "volume", req.Volume)
	}
	if err == nil {
		err = s.isReserved(req.Volume)
	}
	var info core.VolumeInfo
	if err == nil {
		info, err = s.arr.Clone(r.Context(), req.Snapshot, req.Volume)
	}
	s.logOp("clone", start, err, "snapshot", req.Snapshot, "volume", req.Volume)
	if err != nil {
		s.fail(w, err)
		return
	}
	s.reply(w, http.StatusCreated, info)
}

func (s *Server) stats(w http.ResponseWriter, r *http.Request) {
	st := s.arr.Stats()
	// JSON has no NaN or infinity; a ratio the engine could not compute
	// is reported as 0, as for an empty array.
	// The map is copied: the engine's may be its own.
	st.DataReduction = finite(st.DataReduction)
	vols := make(map[string]core.SpaceStats, len(st.Volumes))
	for name, v := range st.Volumes {
		v.DataReduction = finite(v.DataReduction)
		vols[name] = v
	}
	st.Volumes = vols
	s.log.Debug("admin stats")
	s.reply(w, http.StatusOK, st)
}

func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}
