package nbd

import "context"

// Export is a block device the server serves. The nbd package knows nothing
// of storage: RAM volumes, engine volumes and snapshots all reach clients
// through this interface.
//
// The server validates every request against Size and Features before it
// calls a method (range, alignment to BlockSize.Min, read-only, advertised
// commands), so implementations receive only in-range, permitted calls.
// Methods are called concurrently, from many connections at once.
//
// Errors map to NBD error codes with errors.Is against syscall.Errno values:
// EPERM, EIO, ENOSPC, EINVAL, ENOTSUP (only for FAST_ZERO), EOVERFLOW,
// ESHUTDOWN; any other error is sent as EIO.
type Export interface {
	// Size is the export's size in bytes.
	Size() int64
	// Features says which optional operations the export supports; the
	// server advertises exactly these and rejects the rest with EINVAL.
	Features() Features
	// ReadAt fills p with the data at off. p is owned by the server and
	// valid only for the call.
	ReadAt(ctx context.Context, p []byte, off int64) error
	// WriteAt stores p at off. With fua the data must be durable before it
	// returns. p is valid only for the call.
	WriteAt(ctx context.Context, p []byte, off int64, fua bool) error
	// Flush makes every write that completed before the call durable, on
	// every connection (CAN_MULTI_CONN semantics when advertised).
	Flush(ctx context.Context) error
	// Trim says [off, off+length) is no longer needed.
	Trim(ctx context.Context, off, length int64, fua bool) error
	// WriteZeroes makes [off, off+length) read as zeros. See ZeroFlags.
	WriteZeroes(ctx context.Context, off, length int64, flags ZeroFlags) error
	// Extents appends to dst the allocation status of a prefix of
	// [off, off+length), starting at off, and returns the extended slice.
	// It returns at least one extent; together they may cover less than
	// length (the client asks again for the rest) and the last may reach
	// beyond it. Adjacent extents should differ in flags.
	Extents(ctx context.Context, off, length int64, dst []Extent) ([]Extent, error)
	// Cache is a hint to prefetch [off, off+length). It has no semantic
	// effect.
	Cache(ctx context.Context, off, length int64) error
}

// Features lists what an export supports beyond READ and WRITE.
type Features struct {
	ReadOnly    bool // writes, trims and zeroes are refused with EPERM
	Flush       bool // FLUSH and FUA are meaningful
	Trim        bool
	WriteZeroes bool
	FastZero    bool // WRITE_ZEROES with FAST_ZERO can succeed
	Cache       bool
	Extents     bool // base:allocation block status
	// MultiConn promises that Flush and FUA cover writes acknowledged on
	// every connection to this export.
	MultiConn bool
	// NonBlocking promises that no method waits for I/O, for a lock held
	// across I/O, or for other requests: each returns in microseconds (a
	// RAM volume). The server then runs a connection's requests on its
	// reader goroutine instead of handing each to a worker, saving two
	// goroutine switches per request; replies of requests that arrived
	// together still share one writev. Leave it false for anything that
	// can block: one slow call would stall the whole connection.
	NonBlocking bool
	// BlockSize holds the export's block size constraints. Zero values mean
	// min 1, preferred 4096, max 32 MiB.
	BlockSize BlockSize
}

// BlockSize holds NBD_INFO_BLOCK_SIZE constraints, all in bytes.
type BlockSize struct {
	Min, Preferred, Max uint32
}

// ZeroFlags qualify WriteZeroes.
type ZeroFlags struct {
	// NoHole: the range must stay allocated, so later writes to it cannot
	// fail for lack of space.
	NoHole bool
	// FastZero: fail at once with ENOTSUP, changing nothing, unless zeroing
	// is faster than writing zeros.
	FastZero bool
	// FUA: durable before return.
	FUA bool
}

// ExtentFlags are the base:allocation status bits.
type ExtentFlags uint32

const (
	// ExtentHole: the range is not allocated.
	ExtentHole ExtentFlags = 1 << 0
	// ExtentZero: the range reads as zeros.
	ExtentZero ExtentFlags = 1 << 1
)

// Extent is one run of equal allocation status.
type Extent struct {
	Length int64
	Flags  ExtentFlags
}

// ExportInfo names an export for LIST and INFO.
type ExportInfo struct {
	Name        string
	Description string
}

// Exports is the set of exports a server offers. It may change while the
// server runs (volumes and snapshots are created and deleted).
type Exports interface {
	// Lookup returns the export called name. The empty name means the
	// default export. The returned name is the canonical one.
	Lookup(name string) (exp Export, info ExportInfo, ok bool)
	// List returns every export, for NBD_OPT_LIST.
	List() []ExportInfo
}
