package nbd

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// TLSMode says how the server treats NBD_OPT_STARTTLS.
type TLSMode int

const (
	// TLSOff refuses STARTTLS with NBD_REP_ERR_POLICY (the spec's NOTLS).
	TLSOff TLSMode = iota
	// TLSOn offers STARTTLS but also serves plaintext clients.
	TLSOn
	// TLSRequire answers every option but STARTTLS and ABORT with
	// NBD_REP_ERR_TLS_REQD until TLS is up, and drops a connection that
	// sends EXPORT_NAME before it (the spec's FORCEDTLS).
	TLSRequire
)

// String returns off, on or require.
func (m TLSMode) String() string {
	switch m {
	case TLSOff:
		return "off"
	case TLSOn:
		return "on"
	case TLSRequire:
		return "require"
	}
	return fmt.Sprintf("TLSMode(%d)", int(m))
}

// Defaults for the bounds in Options.
const (
	DefaultMaxConnections     = 1024
	DefaultMaxInFlight        = 128
	DefaultMaxInFlightBytes   = 128 << 20
	DefaultMaxPayload         = 32 << 20
	DefaultMaxOptionBytes     = 64 << 10
	DefaultMaxOptions         = 64
	DefaultHandshakeTimeout   = 30 * time.Second
	DefaultMaxExtents         = 1 << 16
	DefaultShutdownGrace      = 200 * time.Millisecond
	maxExtentsLimit           = 1 << 20 // the spec's SHOULD bound on descriptors per reply
	maxNameLen                = maxStringLen
	defaultPreferredBlockSize = 4096
)

// Options configure a Server. Zero values take the documented defaults.
type Options struct {
	// Exports are the exports served. Required.
	Exports Exports
	// TLSConfig is the server's TLS configuration, required unless TLSMode
	// is TLSOff. For client-certificate checks set ClientAuth to
	// tls.RequireAndVerifyClientCert and ClientCAs. MinVersion is raised to
	// TLS 1.2 if lower.
	//
	// When ClientAuth asks for client certificates and MaxVersion is 0,
	// MaxVersion becomes TLS 1.2. Under TLS 1.3 GnuTLS 3.7 (Debian 12's
	// libnbd, qemu and nbd-client) sends no RSA client certificate to a
	// crypto/tls server: it picks a certificate only for a key type named
	// in the CertificateRequest's signature schemes, and crypto/tls lists
	// RSA keys only through the RSA-PSS schemes, which GnuTLS files under
	// RSA-PSS keys. The client then fails the handshake with "certificate
	// required". Under TLS 1.2 the request names certificate types and
	// both RSA and ECDSA client certificates work. Set MaxVersion to
	// tls.VersionTLS13 to allow TLS 1.3 anyway (ECDSA and Ed25519 client
	// certificates work there).
	TLSConfig *tls.Config
	// TLSMode: off, on or require.
	TLSMode TLSMode
	// Logger receives one line per connection open and close, and
	// warnings. Default slog.Default().
	Logger *slog.Logger

	// MaxConnections bounds concurrently open connections (negotiating or
	// transmitting). A connection over the limit gets the greeting and an
	// NBD_REP_ERR_POLICY answer to its first option, then is closed.
	// Default DefaultMaxConnections.
	MaxConnections int
	// MaxInFlight bounds requests being processed or waiting for their
	// reply on one connection; the server stops reading the connection
	// while it is reached (backpressure). Default DefaultMaxInFlight.
	MaxInFlight int
	// MaxInFlightBytes bounds the payload bytes (WRITE data held, READ
	// data being prepared) of one connection's requests in flight. A
	// single request larger than it still runs, alone. Default
	// DefaultMaxInFlightBytes.
	MaxInFlightBytes int64
	// MaxPayload is the largest READ or WRITE length accepted, advertised
	// as the maximum block size. Longer requests get EINVAL; a WRITE's
	// payload is skipped if at most 2*MaxPayload long, else the
	// connection is dropped. Default and upper limit DefaultMaxPayload
	// (32 MiB).
	MaxPayload int
	// MaxOptionBytes bounds the data of one handshake option. Longer
	// options are skipped (up to 16*MaxOptionBytes, else the connection is
	// dropped) and answered NBD_REP_ERR_TOO_BIG. Export names and context
	// names are always limited to 4096 bytes. Default
	// DefaultMaxOptionBytes.
	MaxOptionBytes int
	// MaxOptions bounds the options one connection may send before it
	// enters transmission; one more drops the connection. Default
	// DefaultMaxOptions.
	MaxOptions int
	// HandshakeTimeout bounds the whole negotiation phase, TLS handshake
	// included. Default DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxExtents bounds the descriptors in one BLOCK_STATUS reply (the
	// client asks again for the rest). Default DefaultMaxExtents, at most
	// 2^20.
	MaxExtents int
	// ShutdownGrace is how long Shutdown lets a negotiating connection
	// send its next option (to answer it NBD_REP_ERR_SHUTDOWN) before
	// closing it. Default DefaultShutdownGrace.
	ShutdownGrace time.Duration
	// DenseReads disables sparse structured READ replies: by default a
	// READ whose range the export reports as zero (Extents) is answered
	// with OFFSET_HOLE chunks instead of zero bytes.
	DenseReads bool
	// CopyReads makes the server copy READ data into a reply buffer with
	// ReadAt even for exports that implement PinReader (zero-copy). For
	// measuring what zero-copy saves, and as a way out should an export's
	// pinning misbehave.
	CopyReads bool
	// PolledSockets keeps connections in the runtime's netpoller during
	// transmission. By default a TCP or Unix connection adapts: while its
	// client sends one request at a time (the reader finds nothing
	// buffered, 16 reads in a row) its socket is in blocking mode, so the
	// reader waits in read(2) on its own thread and is woken by the kernel
	// directly, as in a thread-per-connection C server, instead of through
	// epoll and the scheduler (most of the extra latency per request at
	// queue depth 1); once requests arrive pipelined it goes back to the
	// netpoller, whose later wake-up reads more of them per system call.
	// The cost is one OS thread per connection waiting in blocking mode;
	// MaxConnections bounds them.
	PolledSockets bool
}

// withDefaults returns o with zero fields defaulted, or an error for
// inconsistent values.
func (o Options) withDefaults() (Options, error) {
	if o.Exports == nil {
		return o, errors.New("nbd: Options.Exports is nil")
	}
	switch o.TLSMode {
	case TLSOff:
	case TLSOn, TLSRequire:
		if o.TLSConfig == nil {
			return o, fmt.Errorf("nbd: TLS mode %s needs Options.TLSConfig", o.TLSMode)
		}
		cfg := o.TLSConfig.Clone()
		if cfg.MinVersion < tls.VersionTLS12 {
			cfg.MinVersion = tls.VersionTLS12
		}
		if cfg.ClientAuth != tls.NoClientCert && cfg.MaxVersion == 0 {
			cfg.MaxVersion = tls.VersionTLS12 // see TLSConfig
		}
		o.TLSConfig = cfg
	default:
		return o, fmt.Errorf("nbd: unknown TLS mode %d", int(o.TLSMode))
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.MaxConnections, DefaultMaxConnections)
	def(&o.MaxInFlight, DefaultMaxInFlight)
	def(&o.MaxPayload, DefaultMaxPayload)
	def(&o.MaxOptionBytes, DefaultMaxOptionBytes)
	def(&o.MaxOptions, DefaultMaxOptions)
	def(&o.MaxExtents, DefaultMaxExtents)
	if o.MaxInFlightBytes <= 0 {
		o.MaxInFlightBytes = DefaultMaxInFlightBytes
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = DefaultShutdownGrace
	}
	if o.MaxPayload > DefaultMaxPayload {
		return o, fmt.Errorf("nbd: MaxPayload %d exceeds %d", o.MaxPayload, DefaultMaxPayload)
	}
	if o.MaxPayload < 4096 {
		return o, fmt.Errorf("nbd: MaxPayload %d below 4096", o.MaxPayload)
	}
	if o.MaxOptionBytes < maxNameLen+64 {
		return o, fmt.Errorf("nbd: MaxOptionBytes %d below %d", o.MaxOptionBytes, maxNameLen+64)
	}
	if o.MaxExtents > maxExtentsLimit {
		return o, fmt.Errorf("nbd: MaxExtents %d exceeds %d", o.MaxExtents, maxExtentsLimit)
	}
	return o, nil
}
